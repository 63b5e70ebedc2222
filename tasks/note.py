"""`record`: a note in the incident timeline (runbooks name the action `record`; the module says what it
writes, apart from records/, the database, and reports.incident_record)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from records import incidents
from records.models import EventPhase
from tasks.base import Attempt, action


class RecordInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1)
    #: The note in Chinese (runbooks.validate: required once a runbook has Chinese twins); the Chinese
    #: report prints it where the English one prints `message`.
    message_zh: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


@action("record", RecordInput, describe=lambda inp: "add a note to the timeline")
def record(inp: RecordInput, attempt: Attempt) -> dict[str, Any]:
    ctx = attempt.context
    data = {**inp.data, "message_zh": inp.message_zh} if inp.message_zh else inp.data
    event = incidents.append_event(ctx.incident_id, phase=EventPhase.note, status="info", actor=ctx.actor,
                                   summary=inp.message, step_id=ctx.step_id, action="record",
                                   attempt=attempt.number, data=data, flow_run_id=ctx.flow_run_id)
    return {"event_seq": event.seq}
