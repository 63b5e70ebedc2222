"""The runbook library: find runbooks by id, load them validated, turn their declared
parameters into pydantic models (the models become the Prefect UI forms) and resolve
their response level.

Validating needs the action catalogue, which is given, not imported: tasks.catalog
binds it (tasks.catalog.load_runbook is the one to call). So nothing here imports
Prefect: the CLI finds a runbook and checks a run request's parameters before it has
chosen the Prefect server, and Prefect reads its settings when first imported."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from firebreak.errors import NotFound
from firebreak.settings import get_settings
from runbooks.hosts import url_problem
from runbooks.loader import LoadedRunbook
from runbooks.schema import Level, Parameter, ParameterType, Runbook
from runbooks.services import ServicesFile, services
from runbooks.templating import evaluate
from runbooks.validate import Actions, load_valid


class RunbookNotFound(NotFound, FileNotFoundError):
    """No runbook file for this id or path (still a FileNotFoundError, as `load` raised before)."""


_PYTHON_TYPE = {ParameterType.string: str, ParameterType.integer: int, ParameterType.number: float,
                ParameterType.boolean: bool}


def runbook_path(runbook: str) -> Path:
    """A runbook id (`system-outage`) or a path to a YAML file."""
    candidate = Path(runbook)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    return get_settings().runbooks_dir / f"{runbook}.yaml"


class _Same:
    """The action catalogue as part of a cache key: hashed and compared by identity (it is one
    long-lived mapping; the cache holds it, so its id is not reused while an entry lives)."""

    __slots__ = ("actions",)

    def __init__(self, actions: Actions) -> None:
        self.actions = actions

    def __hash__(self) -> int:
        return id(self.actions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.actions is self.actions


@lru_cache(maxsize=64)
def _load_cached(path: str, mtime: float, catalogue: _Same) -> LoadedRunbook:
    return load_valid(Path(path), catalogue.actions)


def find(runbook: str) -> tuple[Path, float]:
    """The runbook's file and its modification time; RunbookNotFound, saying where it looked, if there is none."""
    path = runbook_path(runbook)
    try:
        return path, path.stat().st_mtime
    except OSError:
        raise RunbookNotFound(f"no runbook {runbook!r} (looked for {path})") from None


def load(runbook: str, actions: Actions) -> LoadedRunbook:
    """The runbook, validated against `actions` (RunbookInvalid with every problem); validated
    again only when its file changes."""
    path, mtime = find(runbook)
    return _load_cached(str(path), mtime, _Same(actions))


#: The error type of a URL parameter whose value is refused (runbooks.hosts): the intake answers it 422.
URL_REFUSED = "url_not_allowed"


def _url_check(allowed_hosts: list[str]) -> AfterValidator:
    def check(value: str) -> str:
        problem = url_problem(value, allowed_hosts)
        if problem is not None:
            raise PydanticCustomError(URL_REFUSED, "URL {problem}", {"problem": problem})
        return value
    return AfterValidator(check)


def _title(name: str) -> str:
    """`service_url` → "Service URL": what the form shows above the field."""
    words = name.split("_")
    return " ".join([words[0].capitalize(), *words[1:]]).replace(" url", " URL").replace("Url", "URL")


def _field(parameter: Parameter, allowed_hosts: list[str], name: str = "",
           configured: str | None = None) -> tuple[Any, Any]:
    annotation: Any = _PYTHON_TYPE[parameter.type]
    if parameter.enum:
        annotation = Literal[tuple(parameter.enum)]
    if parameter.format == "url":
        # Whoever sets it (alert, route, operator, default), the host must be one the runbook allows.
        annotation = Annotated[annotation, _url_check(allowed_hosts)]
    constraints: dict[str, Any] = {}
    if parameter.minimum is not None:
        constraints["ge"] = parameter.minimum
    if parameter.maximum is not None:
        constraints["le"] = parameter.maximum
    default = configured if configured is not None else ... if parameter.required else parameter.default
    if parameter.format == "url":
        # A default from the services file is checked like a given value: its host must be allowed too.
        constraints["validate_default"] = True
    return annotation, Field(default, title=_title(name) if name else None, description=" ".join(
        parameter.description.split()), **constraints)


def parameter_model(runbook: Runbook) -> type[BaseModel]:
    """The runbook's parameters as a pydantic model (built once per loaded runbook: the intake
    checks every routed alert's parameters with it, and building a model costs milliseconds)."""
    configured, stamp = services()  # URL defaults: built again when the services file changes
    cached = _parameter_models.get(id(runbook))
    if cached is not None and cached[0] is runbook and cached[2] == stamp:
        return cached[1]
    model = _build_parameter_model(runbook, configured)
    if len(_parameter_models) >= 256:
        _parameter_models.clear()
    _parameter_models[id(runbook)] = (runbook, model, stamp)
    return model


#: id(runbook) → (that runbook, its model, the services file's mtime); the runbook is kept so its id
#: cannot be reused meanwhile.
_parameter_models: dict[int, tuple[Runbook, type[BaseModel], float]] = {}


def _build_parameter_model(runbook: Runbook, configured: ServicesFile | None = None) -> type[BaseModel]:
    name = "".join(part.capitalize() for part in runbook.id.split("-")) + "Parameters"
    configured = configured or ServicesFile()
    # Any: unpacked as **fields, each value is checked against create_model's own keywords (__base__ …) too.
    fields: dict[str, Any] = {key: _field(parameter, runbook.allowed_hosts, key,
                                          configured.url_for(runbook.id, key) if parameter.format == "url" else None)
                              for key, parameter in runbook.parameters.items()}
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=runbook.description, **fields)


def resolve_level(runbook: Runbook, params: dict[str, Any], explicit: Level | str | None) -> Level:
    if explicit:
        return Level(explicit)
    for rule in runbook.level.rules:
        if evaluate(rule.when, {"params": params}):
            return rule.level
    return runbook.level.default
