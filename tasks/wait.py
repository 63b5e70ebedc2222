"""`wait`: hold for a fixed time (e.g. let a change settle before re-checking)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.base import Attempt, action


class WaitInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=86400)


@action("wait", WaitInput, describe=lambda inp: f"wait {inp.seconds:g}s", side_effect=False)
def wait(inp: WaitInput, attempt: Attempt) -> dict[str, float]:
    attempt.sleep(inp.seconds)
    return {"waited_seconds": inp.seconds}
