"""Find runbooks by id and turn their declared parameters into pydantic models
(the models become the Prefect UI forms)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from firebreak.settings import get_settings
from runbooks.loader import LoadedRunbook
from runbooks.schema import Level, Parameter, ParameterType, Runbook
from runbooks.validate import load_valid

_PYTHON_TYPE = {ParameterType.string: str, ParameterType.integer: int, ParameterType.number: float,
                ParameterType.boolean: bool}


def runbook_path(runbook: str) -> Path:
    """A runbook id (`system-outage`) or a path to a YAML file."""
    candidate = Path(runbook)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    return get_settings().runbooks_dir / f"{runbook}.yaml"


@lru_cache(maxsize=64)
def _load_cached(path: str, mtime: float) -> LoadedRunbook:
    return load_valid(Path(path))


def load(runbook: str) -> LoadedRunbook:
    path = runbook_path(runbook)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        raise FileNotFoundError(f"no runbook {runbook!r} (looked for {path})") from None
    return _load_cached(str(path), mtime)


def _field(parameter: Parameter) -> tuple[Any, Any]:
    annotation: Any = _PYTHON_TYPE[parameter.type]
    if parameter.enum:
        annotation = Literal[tuple(parameter.enum)]  # type: ignore[misc]
    constraints: dict[str, Any] = {}
    if parameter.minimum is not None:
        constraints["ge"] = parameter.minimum
    if parameter.maximum is not None:
        constraints["le"] = parameter.maximum
    default = ... if parameter.required else parameter.default
    return annotation, Field(default, description=parameter.description, **constraints)


def parameter_model(runbook: Runbook) -> type[BaseModel]:
    """The runbook's parameters as a pydantic model (built once per loaded runbook: the intake
    checks every routed alert's parameters with it, and building a model costs milliseconds)."""
    cached = _parameter_models.get(id(runbook))
    if cached is not None and cached[0] is runbook:
        return cached[1]
    model = _build_parameter_model(runbook)
    if len(_parameter_models) >= 256:
        _parameter_models.clear()
    _parameter_models[id(runbook)] = (runbook, model)
    return model


#: id(runbook) → (that runbook, its model); the runbook is kept so its id cannot be reused meanwhile.
_parameter_models: dict[int, tuple[Runbook, type[BaseModel]]] = {}


def _build_parameter_model(runbook: Runbook) -> type[BaseModel]:
    name = "".join(part.capitalize() for part in runbook.id.split("-")) + "Parameters"
    fields = {key: _field(parameter) for key, parameter in runbook.parameters.items()}
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=runbook.description, **fields)


def resolve_level(runbook: Runbook, params: dict[str, Any], explicit: Level | str | None) -> Level:
    from runbooks.templating import evaluate

    if explicit:
        return Level(explicit)
    for rule in runbook.level.rules:
        if evaluate(rule.when, {"params": params}):
            return rule.level
    return runbook.level.default
