"""The runbook file format, as pydantic models.

A runbook is data: it names steps, and each step's `action` names a task in
`tasks/`. Cross-field rules (actions exist, needs form a DAG, templates only use
declared names) live in runbooks.validate, which is given the action catalogue
(tasks.catalog binds it).
"""
from __future__ import annotations

import enum
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runbooks.hosts import pattern_problem

SLUG = r"^[a-z][a-z0-9-]*$"
STEP_ID = r"^[a-z][a-z0-9_]*$"
PARAM_NAME = r"^[a-z][a-z0-9_]*$"


class Level(str, enum.Enum):
    """Response level: I major (everyone takes part, the commander-in-chief leads), II general (a task
    group and the scenario lead), III small (the department concerned handles it)."""

    I = "I"  # noqa: E741  the level is named by its Roman numeral I. Major: everyone takes part
    II = "II"  # general: a dedicated task group
    III = "III"  # small: the relevant department coordinates


class ParameterType(str, enum.Enum):
    string = "string"
    integer = "integer"
    number = "number"
    boolean = "boolean"


_PYTHON_TYPES: dict[ParameterType, tuple[type, ...]] = {
    ParameterType.string: (str,),
    ParameterType.integer: (int,),
    ParameterType.number: (int, float),
    ParameterType.boolean: (bool,),
}


class Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ParameterType
    description: str = Field(min_length=1)
    default: Any = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    from_alert: bool = Field(default=False, description="an alert may set it (the intake); otherwise it comes "
                                                        "from the route, the operator or the default")
    format: Literal["url"] | None = Field(default=None, description="url: a base URL whose host must be in the "
                                                                    "runbook's allowed_hosts (runbooks.hosts)")

    @property
    def required(self) -> bool:
        return self.default is None

    def accepts(self, value: Any) -> bool:
        allowed = _PYTHON_TYPES[self.type]
        if isinstance(value, bool) and bool not in allowed:
            return False  # YAML `true` is not a number
        return isinstance(value, allowed)

    @model_validator(mode="after")
    def _default_fits(self) -> Parameter:
        if self.format == "url" and self.type is not ParameterType.string:
            raise ValueError("format url needs type string")
        if self.default is not None:
            if not self.accepts(self.default):
                raise ValueError(f"default {json.dumps(self.default)} is not of type {self.type.value}")
            if self.enum is not None and self.default not in self.enum:
                raise ValueError(f"default {self.default!r} is not one of enum {self.enum}")
            if self.minimum is not None and self.default < self.minimum:
                raise ValueError(f"default {self.default!r} is below minimum {self.minimum}")
            if self.maximum is not None and self.default > self.maximum:
                raise ValueError(f"default {self.default!r} is above maximum {self.maximum}")
        return self


class LevelRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: str = Field(min_length=1, description="Jinja2 expression over params")
    level: Level


class LevelSpec(BaseModel):
    """How the response level is set: the caller's explicit level wins, else the
    first matching rule, else the default."""

    model_config = ConfigDict(extra="forbid")

    default: Level
    rules: list[LevelRule] = Field(default_factory=list)


class FailurePolicy(str, enum.Enum):
    abort = "abort"  # stop: later steps are skipped, the run fails
    continue_ = "continue"  # record the failure, carry on with dependants
    escalate = "escalate"  # page escalate_to, then carry on


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=STEP_ID)
    title: str | None = None
    #: The Chinese twin of `title` (runbooks.validate: a runbook with any `_zh` twin has them all).
    title_zh: str | None = None
    description: str | None = Field(default=None, description="what the step does, for a person doing it by hand "
                                                                "(shown in the run-failure page's checklist)")
    description_zh: str | None = None
    mitigates: bool = Field(default=False, description="its first success mitigates the incident: the report's "
                                                       "time to mitigate counts from it when that comes before "
                                                       "the `mitigated` status")
    action: str = Field(min_length=1)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] = Field(default_factory=list)
    when: str | None = Field(default=None, description="Jinja2 expression; the step is skipped when false")
    retries: int = Field(default=0, ge=0, le=20)
    retry_delay: float = Field(default=1.0, ge=0, le=3600, description="seconds before the first retry")
    retry_backoff: float = Field(default=2.0, ge=1, le=10, description="multiplier applied to each later delay")
    timeout: float = Field(default=60.0, gt=0, le=86400, description="seconds per attempt")
    on_failure: FailurePolicy = FailurePolicy.abort
    escalate_to: list[str] = Field(default_factory=list)

    @field_validator("needs", mode="before")
    @classmethod
    def _needs_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _escalation_has_target(self) -> Step:
        if self.on_failure is FailurePolicy.escalate and not self.escalate_to:
            raise ValueError("on_failure 'escalate' needs escalate_to: a list of roles to page")
        return self

    def retry_delays(self) -> list[float]:
        return [self.retry_delay * self.retry_backoff**n for n in range(self.retries)]

    @property
    def display_title(self) -> str:
        return self.title or self.id.replace("_", " ")

    def title_in(self, lang: str) -> str:
        """The step's title in `lang` (zh falls back to the English title only where the runbook has no twins)."""
        return (self.title_zh or self.display_title) if lang == "zh" else self.display_title

    def description_in(self, lang: str) -> str:
        return ((self.description_zh or self.description) if lang == "zh" else self.description) or ""


class CommitmentRef(BaseModel):
    """A service commitment that applies to the runbook, checked in its reports
    (ids: runbooks.commitments.CATALOGUE). `evidence` names the steps whose
    records measure it, where that differs per runbook."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    evidence: list[str] = Field(default_factory=list, description="step ids whose records measure it")

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value


class RunFailurePaging(BaseModel):
    """Who is paged when a run of this runbook fails, aborts or crashes, or is found dead by
    reconcile (flows/run_failure.py): the incident's responsible roles, with the manual checklist."""

    model_config = ConfigDict(extra="forbid")

    notify: list[str] = Field(default_factory=list, description="roles to page (declared in the runbook's roles)")
    by_level: bool = Field(default=True, description="also page whoever the incident's response level engages")
    escalation: str | None = Field(default=None, description="escalation policy (notifications/escalation.yaml), "
                                                             "followed while the run is still alive to wait")

    @field_validator("notify", mode="before")
    @classmethod
    def _notify_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _has_audience(self) -> RunFailurePaging:
        if not self.notify and not self.by_level:
            raise ValueError("on_run_failure needs `notify` (roles) or `by_level: true`, or both")
        return self


class Runbook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=SLUG)
    title: str = Field(min_length=1)
    title_zh: str | None = None
    description: str = Field(min_length=1)
    description_zh: str | None = None
    version: str = Field(min_length=1)
    source: str | None = Field(default=None, description="where in the seed plans this comes from")
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    level: LevelSpec
    roles: list[str] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)
    commitments: list[CommitmentRef] = Field(default_factory=list, description="seed service commitments checked in reports")
    on_run_failure: RunFailurePaging | None = Field(default=None, description="who is paged when a run fails, "
                                                                               "aborts or crashes")
    allowed_hosts: list[str] = Field(default_factory=list, description="hosts its `format: url` parameters may "
                                                                       "point at (runbooks.hosts)")

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        problems = [problem for problem in map(pattern_problem, value) if problem]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if isinstance(value, float):
            # YAML reads 1.10 as the number 1.1; a version must be written as text.
            raise ValueError(f'write the version in quotes (e.g. "{value}"): YAML reads an unquoted 1.10 as the number 1.1')
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def run_failure_paging(self) -> RunFailurePaging:
        """`on_run_failure`, or the default for a runbook that declares none: whoever the response
        level engages, plus the scenario lead when the runbook declares that role."""
        if self.on_run_failure is not None:
            return self.on_run_failure
        return RunFailurePaging(notify=[r for r in ("scenario_lead",) if r in self.roles], by_level=True)

    def title_in(self, lang: str) -> str:
        return (self.title_zh or self.title) if lang == "zh" else self.title

    def description_in(self, lang: str) -> str:
        return ((self.description_zh or self.description) if lang == "zh" else self.description).strip()

    @property
    def has_zh(self) -> bool:
        """The runbook carries Chinese twins (then runbooks.validate requires every one of them)."""
        return bool(self.title_zh or self.description_zh
                    or any(s.title_zh or s.description_zh for s in self.steps))

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)
