"""`staffing.required_agents`: the agents needed for a service level, by Erlang C."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from firebreak.erlang_c import required_agents as erlang_required_agents
from firebreak.erlang_c import service_level
from tasks.base import Attempt, action


class RequiredAgentsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arrival_rate_per_hour: float = Field(ge=0)
    aht_seconds: float = Field(gt=0, description="average handling time")
    agents_online: int = Field(ge=0)
    target_seconds: float = Field(default=30.0, gt=0, description="seed: hotline answered within 30 s")
    service_level_goal: float = Field(default=0.8, gt=0, lt=1)
    max_occupancy: float | None = Field(default=None, gt=0, le=1)


class RequiredAgentsOutput(BaseModel):
    required_agents: int
    agents_online: int
    gap: int
    service_level_now: float
    service_level_at_required: float
    traffic_erlangs: float
    average_speed_of_answer_seconds: float


@action(
    "staffing.required_agents",
    RequiredAgentsInput,
    describe=lambda inp: (f"Erlang C for {inp.arrival_rate_per_hour:g}/h, AHT {inp.aht_seconds:g}s, "
                          f"goal {inp.service_level_goal:.0%} within {inp.target_seconds:g}s"),
    side_effect=False,
)
def required_agents(inp: RequiredAgentsInput, attempt: Attempt) -> RequiredAgentsOutput:
    need = erlang_required_agents(inp.arrival_rate_per_hour, inp.aht_seconds, inp.target_seconds,
                                  inp.service_level_goal, inp.max_occupancy)
    now = (service_level(inp.arrival_rate_per_hour, inp.aht_seconds, inp.agents_online, inp.target_seconds)
           if inp.arrival_rate_per_hour > 0 else 1.0)
    return RequiredAgentsOutput(
        required_agents=need.agents,
        agents_online=inp.agents_online,
        gap=max(0, need.agents - inp.agents_online),
        service_level_now=round(now, 4),
        service_level_at_required=round(need.service_level, 4),
        traffic_erlangs=round(need.traffic_erlangs, 3),
        average_speed_of_answer_seconds=round(need.average_speed_of_answer_seconds, 2),
    )
