"""Erlang C staffing mathematics for the incident hotline.

Answers "how many people must staff the hotline so that a given share of
callers is answered within a target time?" using the classic M/M/N queue
(Poisson arrivals, exponential handle times, nobody abandons). Only the
standard library is used so that runbooks can call this without new
dependencies.

Defaults follow the seed plan: the hotline is answered within 30 seconds
for 80% of callers.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

__all__ = [
    "StaffingRequirement",
    "average_speed_of_answer",
    "erlang_c",
    "occupancy",
    "required_agents",
    "service_level",
    "traffic_erlangs",
]

_SECONDS_PER_HOUR = 3600.0

# A/N is computed in floating point, so an occupancy cap that is met exactly
# on paper (e.g. 10 Erlangs on 20 agents against 0.5) must not fail on the
# last bit.
_OCCUPANCY_TOLERANCE = 1e-12


class StaffingRequirement(BaseModel):
    """The smallest staffing that meets the goal, with its predicted performance."""

    model_config = ConfigDict(frozen=True)

    agents: int
    traffic_erlangs: float
    service_level: float
    average_speed_of_answer_seconds: float
    occupancy: float
    probability_of_wait: float


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def _check_finite(name: str, value: float) -> None:
    # NaN slips through every ordinary comparison, so it is rejected first.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_arrival_rate(arrival_rate_per_hour: float) -> None:
    _check_finite("arrival_rate_per_hour", arrival_rate_per_hour)
    # Zero is allowed: a quiet hotline legitimately needs nobody.
    if arrival_rate_per_hour < 0:
        raise ValueError(
            f"arrival_rate_per_hour must be >= 0 contacts per hour, got {arrival_rate_per_hour!r}"
        )


def _check_aht(aht_seconds: float) -> None:
    _check_finite("aht_seconds", aht_seconds)
    if aht_seconds <= 0:
        raise ValueError(f"aht_seconds (average handle time) must be > 0 seconds, got {aht_seconds!r}")


def _check_agents(agents: int) -> None:
    # bool is an int subclass; True agents is almost certainly a bug upstream.
    if isinstance(agents, bool) or not isinstance(agents, int):
        raise TypeError(f"agents must be an int, got {type(agents).__name__}")
    if agents < 0:
        raise ValueError(f"agents must be >= 0, got {agents!r}")


def _check_target(target_seconds: float) -> None:
    _check_finite("target_seconds", target_seconds)
    if target_seconds < 0:
        raise ValueError(f"target_seconds must be >= 0 seconds, got {target_seconds!r}")


# --------------------------------------------------------------------------
# Core mathematics
# --------------------------------------------------------------------------


def _erlang_b_step(traffic: float, agents: int, previous_b: float) -> float:
    """One step of the Erlang B recursion: B(N) from B(N-1)."""
    # This form only ever divides numbers of similar size, so it stays
    # accurate for thousands of Erlangs where A**N / N! would overflow.
    scaled = traffic * previous_b
    return scaled / (agents + scaled)


def _erlang_b(traffic: float, agents: int) -> float:
    """Erlang B blocking probability via the recursion B(0)=1."""
    b = 1.0
    for n in range(1, agents + 1):
        b = _erlang_b_step(traffic, n, b)
    return b


def _erlang_c_from_b(traffic: float, agents: int, b: float) -> float:
    """Convert Erlang B to Erlang C for a stable queue (agents > traffic)."""
    c = agents * b / (agents - traffic * (1.0 - b))
    # Rounding can push a near-certain wait a hair above 1.
    return min(c, 1.0)


def _service_level_from_pw(pw: float, traffic: float, agents: int, aht_seconds: float, target_seconds: float) -> float:
    # Waiting times of queued contacts are exponential with rate (N - A)/AHT.
    sl = 1.0 - pw * math.exp(-(agents - traffic) * target_seconds / aht_seconds)
    return min(max(sl, 0.0), 1.0)


def traffic_erlangs(arrival_rate_per_hour: float, aht_seconds: float) -> float:
    """Offered load in Erlangs: contacts per hour times hours of work per contact."""
    _check_arrival_rate(arrival_rate_per_hour)
    _check_aht(aht_seconds)
    return arrival_rate_per_hour * aht_seconds / _SECONDS_PER_HOUR


def erlang_c(traffic: float, agents: int) -> float:
    """Probability that an arriving contact has to wait (Pw).

    Returns 1.0 when agents <= traffic (the queue grows without bound) and
    0.0 when there is no traffic at all.
    """
    _check_finite("traffic", traffic)
    if traffic < 0:
        raise ValueError(f"traffic must be >= 0 Erlangs, got {traffic!r}")
    _check_agents(agents)
    # Checked before the overload rule: with no callers nobody waits, even
    # with zero agents.
    if traffic == 0:
        return 0.0
    if agents <= traffic:
        return 1.0
    return _erlang_c_from_b(traffic, agents, _erlang_b(traffic, agents))


def service_level(
    arrival_rate_per_hour: float, aht_seconds: float, agents: int, target_seconds: float
) -> float:
    """Fraction of contacts answered within target_seconds (0..1).

    0.0 when agents <= traffic; 1.0 when there is no traffic.
    """
    _check_target(target_seconds)
    traffic = traffic_erlangs(arrival_rate_per_hour, aht_seconds)
    _check_agents(agents)
    if traffic == 0:
        return 1.0
    if agents <= traffic:
        # An unstable queue answers a vanishing share in time in the long run.
        return 0.0
    pw = erlang_c(traffic, agents)
    return _service_level_from_pw(pw, traffic, agents, aht_seconds, target_seconds)


def average_speed_of_answer(arrival_rate_per_hour: float, aht_seconds: float, agents: int) -> float:
    """Mean wait in seconds over all contacts (ASA); math.inf when agents <= traffic."""
    traffic = traffic_erlangs(arrival_rate_per_hour, aht_seconds)
    _check_agents(agents)
    if traffic == 0:
        return 0.0
    if agents <= traffic:
        return math.inf
    return erlang_c(traffic, agents) * aht_seconds / (agents - traffic)


def occupancy(arrival_rate_per_hour: float, aht_seconds: float, agents: int) -> float:
    """Share of agent time spent handling contacts (traffic / agents), capped at 1.0."""
    traffic = traffic_erlangs(arrival_rate_per_hour, aht_seconds)
    _check_agents(agents)
    if traffic == 0:
        return 0.0
    if agents == 0:
        return 1.0
    # Agents cannot be busier than all the time; excess load becomes queue.
    return min(traffic / agents, 1.0)


def required_agents(
    arrival_rate_per_hour: float,
    aht_seconds: float,
    target_seconds: float = 30.0,
    service_level_goal: float = 0.8,
    max_occupancy: float | None = None,
    max_agents: int = 10_000,
) -> StaffingRequirement:
    """Smallest agent count meeting the service-level goal (and occupancy cap, if given).

    Raises ValueError when no count up to max_agents meets the goal.
    """
    traffic = traffic_erlangs(arrival_rate_per_hour, aht_seconds)
    _check_target(target_seconds)
    _check_finite("service_level_goal", service_level_goal)
    if not 0.0 < service_level_goal < 1.0:
        raise ValueError(
            f"service_level_goal must be strictly between 0 and 1 (e.g. 0.8 for 80%), got {service_level_goal!r}"
        )
    if max_occupancy is not None:
        _check_finite("max_occupancy", max_occupancy)
        if not 0.0 < max_occupancy <= 1.0:
            raise ValueError(f"max_occupancy must be in (0, 1], got {max_occupancy!r}")
    _check_agents(max_agents)

    if traffic == 0:
        return StaffingRequirement(
            agents=0,
            traffic_erlangs=0.0,
            service_level=1.0,
            average_speed_of_answer_seconds=0.0,
            occupancy=0.0,
            probability_of_wait=0.0,
        )

    # Below floor(A)+1 the queue is unstable, so the search starts there. B is
    # carried forward one agent at a time, keeping the whole search O(answer)
    # instead of re-running the recursion for every candidate.
    agents = math.floor(traffic) + 1
    b = _erlang_b(traffic, agents)
    while agents <= max_agents:
        pw = _erlang_c_from_b(traffic, agents, b)
        sl = _service_level_from_pw(pw, traffic, agents, aht_seconds, target_seconds)
        occ = traffic / agents
        # Both constraints improve monotonically with N, so the first N that
        # satisfies both is the minimum.
        occupancy_ok = max_occupancy is None or occ <= max_occupancy + _OCCUPANCY_TOLERANCE
        if sl >= service_level_goal and occupancy_ok:
            return StaffingRequirement(
                agents=agents,
                traffic_erlangs=traffic,
                service_level=sl,
                average_speed_of_answer_seconds=pw * aht_seconds / (agents - traffic),
                occupancy=occ,
                probability_of_wait=pw,
            )
        agents += 1
        b = _erlang_b_step(traffic, agents, b)

    occupancy_note = "" if max_occupancy is None else f" with occupancy <= {max_occupancy:.0%}"
    raise ValueError(
        f"no agent count up to max_agents={max_agents} meets the goal of "
        f"{service_level_goal:.0%} answered within {target_seconds:g} s{occupancy_note} "
        f"(offered traffic {traffic:.2f} Erlangs); raise max_agents or relax the goal"
    )
