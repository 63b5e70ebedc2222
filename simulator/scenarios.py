"""Scenario parameters: the numbers each fault starts from.

Kept apart from the state machine so the figures a runbook is tested against can be
read (and quoted in a demo) in one place.

Voice traffic in every scenario is 600 calls/h x 240 s AHT = 40 Erlangs. Erlang C
(answer target 30 s) then gives, for that traffic:

    agents  38 -> service level 0.00  (fewer agents than Erlangs: the queue never drains)
    agents  41 -> 0.27
    agents  45 -> 0.82   (the fewest agents that meet the 80/30 target)
    agents  48 -> 0.94

so "short-staffed" (38 on the phones, 10 in reserve) has a real gap that calling in
the reserve closes (38 + 10 = 48), and overtime (+7 -> 45) or volunteers
(5 x 12 non-urgent contacts/h -> 540 calls/h, then 41 agents suffice) are
alternative or complementary levers.
"""

from __future__ import annotations

from dataclasses import dataclass

# The faults start_simulator(fault=...) accepts; POST /faults accepts all but LISTENER_FAULTS.
SCENARIOS: tuple[str, ...] = ("none", "down", "congested", "short-staffed", "flapping", "unreachable")

# Faults in how the simulator listens, not in its numbers, so they are chosen when it starts:
# "unreachable" — the service's port refuses TCP connections (the commonest outage: the process
# is gone), while the notification inbox and /state listen on a port of their own
# (RunningSimulator.inbox_url).
LISTENER_FAULTS: frozenset[str] = frozenset({"unreachable"})

# The platform's request-rate capacity (req/s); "overloaded" means above it.
LOAD_THRESHOLD = 500.0

# Service-level goal the contact centre is held to: 80 % answered within 30 s.
ANSWER_TARGET_SECONDS = 30.0
SERVICE_LEVEL_GOAL = 0.8


@dataclass(frozen=True)
class Scenario:
    """Starting figures for one fault."""

    name: str
    primary_up: bool
    # Primary toggles up/down on every GET /health (first call: down).
    primary_flapping: bool
    request_rate: float  # req/s before any mitigation
    arrival_rate_per_hour: float  # voice contacts offered to the main queue
    aht_seconds: float
    agents_online: int
    reserve_agents_available: int


def scenario(name: str) -> Scenario:
    """Return the starting figures for `name` (one of SCENARIOS)."""
    healthy_load = 0.4 * LOAD_THRESHOLD  # 200 req/s: comfortable headroom
    base = dict(
        name=name,
        primary_up=True,
        primary_flapping=False,
        request_rate=healthy_load,
        arrival_rate_per_hour=600.0,
        aht_seconds=240.0,
        agents_online=48,  # service level 0.94: healthy
        reserve_agents_available=10,
    )
    if name == "none":
        pass
    elif name in ("down", "unreachable"):  # unreachable: down behind a port that refuses connections
        base["primary_up"] = False
    elif name == "flapping":
        base["primary_flapping"] = True
    elif name == "congested":
        base["request_rate"] = 3.0 * LOAD_THRESHOLD  # 1500 req/s: the festival surge
    elif name == "short-staffed":
        base["agents_online"] = 38  # below the 40 Erlangs offered: queue grows without bound
    else:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    return Scenario(**base)  # type: ignore[arg-type]
