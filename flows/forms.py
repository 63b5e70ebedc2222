"""Field types for the runbook flows' Prefect forms: every field filled in or chosen from a list.

A parameter typed `X | None` shows in the Prefect UI as a toggle between X and "None" (and a
"Property is type None" complaint); these types have a default instead, and still accept None
from Python callers that pass it (a drill's unset level, a test), read as the default:

- `LevelChoice`: automatic (the runbook's level rules) or I, II, III, with what each means;
- `OptionalText`: a text that may stay empty;
- `IncidentRef`: empty (open a new incident) or an incident id to run on;
- `StartedBy`: who started the run (operator, alert, drill, cli), a list.
"""
# No `from __future__ import annotations`: these are read at flow decoration time.
from enum import Enum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _default_for_none(default: Any) -> BeforeValidator:
    return BeforeValidator(lambda value: default if value is None else value)


class LevelChoice(str, Enum):
    """auto: the runbook's own rules decide (e.g. 10,000 customers or more makes an outage level I).
    I, major: everyone takes part and the commander-in-chief leads. II, general: a task group and
    the scenario lead. III, small: the department concerned handles it."""

    auto = "auto"
    I = "I"  # noqa: E741
    II = "II"
    III = "III"

    def explicit(self) -> str | None:
        """The level asked for, or None for automatic."""
        return None if self is LevelChoice.auto else self.value


class StartedBy(str, Enum):
    """Who started the run: operator (the Prefect UI), alert (the intake), drill (practice), cli."""

    operator = "operator"
    alert = "alert"
    drill = "drill"
    cli = "cli"


Level = Annotated[LevelChoice, _default_for_none(LevelChoice.auto)]
# Constraints go before the validator, so they stay in the form's JSON schema.
OptionalText = Annotated[str, _default_for_none("")]  # no length limit: an alert's summary may be long
IncidentRef = Annotated[str, Field(pattern=r"^(INC-\d{4}-\d{4,})?$"), _default_for_none("")]
Source = Annotated[StartedBy, _default_for_none(StartedBy.operator)]

#: The Args section the entry flows share (Prefect reads parameter help from the docstring).
COMMON_ARGS = """\
        level: Response level. auto lets the runbook's rules decide; I, II or III sets it.
        summary: One line saying what is happening, shown in pages and the report. Empty: the runbook's title.
        drill: A drill (practice): marked as such everywhere; approval gates follow their drill policy.
        incident_id: Empty opens a new incident. An incident id (INC-2026-0001) runs this runbook on that incident.
        source: Who started it; leave operator when you start it here."""
