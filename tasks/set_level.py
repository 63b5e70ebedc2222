"""`set_level`: change the incident's response level from what the run measured.

A runbook whose level depends on something only known at run time (network-congestion: load at or
over `overload_ratio_level_one` times the threshold makes it level I) raises it with this step.
The steps that start after it see the new level (`level` in templates, `by_level` pages): the
engine reads the incident's level before each step. Lowering is allowed too; the same level again
is a no-op. Who a level change must page beyond the run's own `by_level` steps is paged by the
operator's level change (flows.operator_actions), not here: a step that raises the level comes
before the run's first pages.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from records import incidents
from runbooks.schema import Level
from tasks.base import Attempt, action


class SetLevelInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Level
    reason: str = Field(default="", description="why, for the timeline")


@action("set_level", SetLevelInput, describe=lambda inp: f"set the response level to {inp.level.value}",
        reuse="incident")  # idempotent: setting a level twice is setting it once
def set_level(inp: SetLevelInput, attempt: Attempt) -> dict[str, str]:
    ctx = attempt.context
    incident, previous = incidents.change_level(ctx.incident_id, inp.level.value, actor=ctx.actor, reason=inp.reason,
                                                step_id=ctx.step_id, flow_run_id=ctx.flow_run_id)
    return {"level": incident.level, "previous": previous}
