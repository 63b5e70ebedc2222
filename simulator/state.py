"""The simulated contact centre: one object, one lock, and the rules that move its numbers.

Every public method takes the lock, so concurrent runbook steps (the HTTP server runs a
thread per connection) see each change whole. The lock is re-entrant because `execute`
holds it around a route handler that itself calls the public methods; that is what
makes "check the Idempotency-Key, act, remember the answer" one atomic step.

Time only enters through `clock` (monotonic seconds), injected so tests can drive the
congestion recovery without sleeping.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from simulator.errors import ApiError
from simulator.scenarios import (
    ANSWER_TARGET_SECONDS,
    LISTENER_FAULTS,
    LOAD_THRESHOLD,
    SERVICE_LEVEL_GOAL,
    Scenario,
    scenario,
)

NODES: tuple[str, ...] = ("primary", "standby")
ROUTING_MODES: tuple[str, ...] = ("normal", "ivr_diversion")

# Congestion: once IVR diversion is on, the request rate falls linearly from the surge
# to this level over `recovery_seconds`, and stays there (the surge has been absorbed).
ABSORBED_REQUEST_RATE = 0.5 * LOAD_THRESHOLD  # 250 req/s, under the 60 % line
# "Recovered" line: a runbook waits for the rate to fall to this before it restores
# normal routing, so reaching it (not the end of the fall) is what counts as absorbed.
RECOVERED_REQUEST_RATE = 0.6 * LOAD_THRESHOLD  # 300 req/s

# Volunteers (back-office staff) take only non-urgent contacts, a quarter of what is
# offered, and they are slower than trained agents: 300 s per contact = 12 per hour.
NON_URGENT_SHARE = 0.25
VOLUNTEER_CONTACTS_PER_HOUR = 12.0

# Queue length is a deliberate simplification (Erlang C gives no finite queue once
# agents <= Erlangs): zero while the 80/30 goal is met, otherwise the contacts that miss
# the goal over a 15-minute interval, i.e. ceil((0.8 - SL) * arrivals/h * 0.25 h).
QUEUE_WINDOW_HOURS = 0.25

# Chat: the bot answers by default; humans take BASELINE_HUMAN_CHAT_SHARE. Human chats
# may only use agents the voice queue does not need (agents beyond the fewest that meet
# the 80/30 goal), each handling CHATS_PER_SPARE_AGENT_PER_HOUR (3 at once, ~9 min each).
CHAT_ARRIVAL_PER_HOUR = 120.0
CHATS_PER_SPARE_AGENT_PER_HOUR = 20.0
BASELINE_HUMAN_CHAT_SHARE = 0.2


def _service_level(arrival_rate_per_hour: float, aht_seconds: float, agents: int) -> float:
    # Imported on first use, not at module load: the shared Erlang C module brings in
    # pydantic, which would more than double `python -m simulator` start-up.
    from firebreak.erlang_c import service_level

    value = float(service_level(arrival_rate_per_hour, aht_seconds, agents, ANSWER_TARGET_SECONDS))
    return min(1.0, max(0.0, value))


# Service figures a report scores against the seed commitments (SEEDS.md, "Service commitments"):
# first-contact resolution, satisfaction and complaint rate (shares, 0..1), and first-answer times
# (seconds) on the hotline (Erlang C's average speed of answer), chat, social media and the IVR
# greeting. A deliberately simple model: healthy figures meet every target; a service-level
# shortfall, a surge over the load threshold or a service that is down pull them away from it.
BASE_FIRST_CONTACT_RESOLUTION = 0.88
BASE_SATISFACTION = 0.93
BASE_COMPLAINT_RATE = 0.02
BASE_CHAT_REPLY_SECONDS = 15.0
BASE_SOCIAL_REPLY_SECONDS = 600.0
BASE_IVR_GREETING_SECONDS = 6.0
#: Answer time reported when the queue never drains (agents <= Erlangs): one hour, not infinity.
ANSWER_SECONDS_CAP = 3600.0


def _average_answer_seconds(arrival_rate_per_hour: float, aht_seconds: float, agents: int) -> float:
    from firebreak.erlang_c import average_speed_of_answer  # on first use, as in _service_level

    try:
        value = float(average_speed_of_answer(arrival_rate_per_hour, aht_seconds, agents))
    except ValueError:
        return ANSWER_SECONDS_CAP
    return min(ANSWER_SECONDS_CAP, value)


def service_figures(*, service_level: float, overload: float, down: bool, diverting: bool, volunteers: int,
                    arrival_rate_per_hour: float, aht_seconds: float, agents: int) -> dict[str, float]:
    """The contact centre's service figures now (see the constants above).

    overload: request rate / load threshold; down: the active node does not serve."""
    shortfall = max(0.0, SERVICE_LEVEL_GOAL - service_level) / SERVICE_LEVEL_GOAL  # 0 (goal met) … 1
    surge = max(0.0, overload - 1.0)  # 0 under the threshold, 2 at three times it
    fcr = BASE_FIRST_CONTACT_RESOLUTION - 0.25 * shortfall - 0.05 * surge - (0.3 if down else 0.0) \
        - (0.01 if volunteers else 0.0)
    satisfaction = BASE_SATISFACTION - 0.4 * shortfall - 0.06 * surge - (0.3 if down else 0.0)
    complaints = BASE_COMPLAINT_RATE + 0.1 * shortfall + 0.02 * surge + (0.05 if down else 0.0)
    slow = max(1.0, overload)
    chat = BASE_CHAT_REPLY_SECONDS * (1 + 20 * shortfall) * slow ** 2 * (5.0 if down else 1.0)
    ivr = BASE_IVR_GREETING_SECONDS * (1.3 if diverting else slow)
    return {
        "first_contact_resolution": round(min(1.0, max(0.0, fcr)), 4),
        "satisfaction": round(min(1.0, max(0.0, satisfaction)), 4),
        "complaint_rate": round(min(1.0, max(0.0, complaints)), 4),
        "average_answer_seconds": round(_average_answer_seconds(arrival_rate_per_hour, aht_seconds, agents), 1),
        "chat_first_reply_seconds": round(min(ANSWER_SECONDS_CAP, chat), 1),
        "social_first_reply_seconds": round(min(4 * ANSWER_SECONDS_CAP, BASE_SOCIAL_REPLY_SECONDS * slow ** 1.5), 1),
        "ivr_greeting_seconds": round(ivr, 1),
    }


def volunteer_diversion(volunteers: int, offered_per_hour: float) -> float:
    """Contacts/h volunteers take off the main queue: capped by the non-urgent share."""
    return min(volunteers * VOLUNTEER_CONTACTS_PER_HOUR, NON_URGENT_SHARE * offered_per_hour)


def queue_length(service_level: float, arrival_rate_per_hour: float) -> int:
    """Contacts waiting: 0 when the goal is met, else grows with the shortfall (see above)."""
    if service_level >= SERVICE_LEVEL_GOAL:
        return 0
    return math.ceil((SERVICE_LEVEL_GOAL - service_level) * arrival_rate_per_hour * QUEUE_WINDOW_HOURS)


def agents_required(arrival_rate_per_hour: float, aht_seconds: float) -> int:
    """Fewest agents meeting the 80/30 goal (the shared Erlang C search, firebreak.erlang_c)."""
    from firebreak.erlang_c import required_agents, traffic_erlangs  # on first use, as in _service_level

    erlangs = arrival_rate_per_hour * aht_seconds / 3600.0
    if erlangs <= 0:
        return 0
    # Bounded search: a misbehaving service_level must not hang a request thread.
    limit = math.ceil(2 * erlangs) + 50
    traffic_erlangs(arrival_rate_per_hour, aht_seconds)  # bad input raises here, not as "goal not met" below
    try:
        return required_agents(arrival_rate_per_hour, aht_seconds, ANSWER_TARGET_SECONDS, SERVICE_LEVEL_GOAL,
                               max_agents=limit).agents
    except ValueError:  # no count up to the bound meets the goal: the bound, as before
        return limit


def max_human_chat_share(spare_agents: int) -> float:
    """Highest human chat share the spare agents can carry."""
    return min(1.0, max(0, spare_agents) * CHATS_PER_SPARE_AGENT_PER_HOUR / CHAT_ARRIVAL_PER_HOUR)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Outcome:
    """What `execute` hands back to the HTTP layer."""

    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


class ContactCentre:
    """State of the simulated service. Thread-safe; all reads return copies."""

    def __init__(
        self,
        fault: str = "none",
        recovery_seconds: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if recovery_seconds < 0:
            raise ValueError("recovery_seconds must be >= 0")
        self._lock = threading.RLock()
        self._clock = clock
        self._started = clock()
        self.recovery_seconds = float(recovery_seconds)
        # These survive POST /faults: they are the audit trail and the outside world,
        # not the service's own state.
        self._requests: list[dict[str, Any]] = []
        self._idempotent: dict[tuple[str, str], Outcome] = {}
        self._inbox: list[dict[str, Any]] = []
        self._next_notice_id = 1  # never reused, even across resets
        self._counters = {"health_checks": 0, "mutating_requests": 0, "idempotent_replays": 0, "fault_resets": 0}
        self._apply_scenario(scenario(fault))

    # ----------------------------------------------------------------- scenario
    def _apply_scenario(self, sc: Scenario) -> None:
        self._scenario = sc.name
        self._nodes = {
            "primary": {"up": sc.primary_up, "isolated": False},
            "standby": {"up": True, "isolated": False},
        }
        self._primary_flapping = sc.primary_flapping
        self._active = "primary"
        self._failover_count = 0
        self._routing = "normal"
        surging = sc.request_rate > LOAD_THRESHOLD
        self._surge_rate: float | None = sc.request_rate if surging else None
        self._calm_rate = ABSORBED_REQUEST_RATE if surging else sc.request_rate
        self._diverted_since: float | None = None
        self._surge_absorbed = False
        self._offered_per_hour = sc.arrival_rate_per_hour
        self._aht = sc.aht_seconds
        self._rostered_agents = sc.agents_online
        self._reserve_available = sc.reserve_agents_available
        self._reserve_called = 0
        self._overtime = False
        self._overtime_agents = 0
        self._volunteers = 0
        self._volunteer_queues: list[str] = []
        self._key_customer_channel = False
        self._human_chat_share = BASELINE_HUMAN_CHAT_SHARE
        self._notices: list[dict[str, Any]] = []

    def reset(self, fault: str) -> dict[str, Any]:
        """POST /faults: back to the starting figures of `fault`."""
        sc = scenario(fault)
        with self._lock:
            if fault in LISTENER_FAULTS or self._scenario in LISTENER_FAULTS:
                changing = fault if fault in LISTENER_FAULTS else self._scenario
                raise ApiError(409, f"the {changing!r} fault is in how the simulator listens, so it is chosen when "
                                    f"the simulator starts (start_simulator(fault={changing!r}), --fault {changing})")
            self._apply_scenario(sc)
            self._counters["fault_resets"] += 1
            return {"fault": sc.name, "health": self._health_body()[1]}

    # --------------------------------------------------------- idempotent POSTs
    def execute(
        self,
        method: str,
        path: str,
        body_for_log: Any,
        idempotency_key: str | None,
        action: Callable[[], Outcome],
    ) -> Outcome:
        """Run one mutating request: replay by key, else act; log it either way.

        A key is scoped to its path; a repeat's body is not compared (the first answer
        wins, like a retried request whose body was rebuilt). Only successful (2xx)
        answers are remembered under a key: a refused request
        changed nothing, so retrying it with the same key is judged afresh (as Stripe
        does for requests that fail validation).
        """
        with self._lock:
            memo_key = (idempotency_key, path) if idempotency_key is not None else None
            stored = self._idempotent.get(memo_key) if memo_key else None
            if stored is not None:
                outcome = Outcome(stored.status, copy.deepcopy(stored.payload), dict(stored.headers), replayed=True)
                self._counters["idempotent_replays"] += 1
            else:
                try:
                    outcome = action()
                except ApiError as exc:
                    outcome = Outcome(exc.status, {"error": exc.message}, dict(exc.headers))
                if memo_key and 200 <= outcome.status < 300:
                    # Deep copy: later mutations of the live objects must not leak into replays.
                    self._idempotent[memo_key] = Outcome(
                        outcome.status, copy.deepcopy(outcome.payload), dict(outcome.headers)
                    )
            self._counters["mutating_requests"] += 1
            self._requests.append(
                {
                    "seq": len(self._requests) + 1,
                    "method": method,
                    "path": path,
                    "body": body_for_log,
                    "idempotency_key": idempotency_key,
                    "time": _utc_now(),
                    "elapsed_seconds": round(self._clock() - self._started, 6),
                    "status": outcome.status,
                    "replayed": outcome.replayed,
                }
            )
            return outcome

    # ------------------------------------------------------------------ health
    def _health_body(self) -> tuple[int, dict[str, Any]]:
        node = self._nodes[self._active]
        ok = node["up"] and not node["isolated"]
        body = {
            "status": "ok" if ok else "down",
            "active_node": self._active,
            "nodes": copy.deepcopy(self._nodes),
            "scenario": self._scenario,
            "overloaded": self._request_rate() > LOAD_THRESHOLD,
        }
        return (200 if ok else 503), body

    def health(self) -> tuple[int, dict[str, Any]]:
        """GET /health. A flapping primary changes state on every call (first call: down)."""
        with self._lock:
            self._counters["health_checks"] += 1
            if self._primary_flapping:
                self._nodes["primary"]["up"] = not self._nodes["primary"]["up"]
            return self._health_body()

    # ------------------------------------------------------------------- nodes
    def isolate(self, name: str) -> dict[str, Any]:
        with self._lock:
            self._nodes[name]["isolated"] = True  # idempotent by nature
            return {"node": name, "isolated": True}

    def failover(self, to: str) -> dict[str, Any]:
        """Make `to` active. Re-running it is a real second failover (counted), which is
        exactly why retries must carry an Idempotency-Key."""
        with self._lock:
            node = self._nodes[to]
            if not node["up"]:
                raise ApiError(409, f"cannot fail over to {to!r}: the node is down")
            if node["isolated"]:
                raise ApiError(409, f"cannot fail over to {to!r}: the node is isolated")
            self._active = to
            self._failover_count += 1
            return {"active_node": to, "failover_count": self._failover_count}

    # ----------------------------------------------------------------- routing
    def _request_rate(self) -> float:
        if self._surge_rate is None or self._surge_absorbed:
            return self._calm_rate
        if self._routing == "ivr_diversion" and self._diverted_since is not None:
            elapsed = self._clock() - self._diverted_since
            done = 1.0 if self.recovery_seconds == 0 else min(1.0, elapsed / self.recovery_seconds)
            return self._surge_rate + (self._calm_rate - self._surge_rate) * done
        return self._surge_rate

    def set_routing(self, mode: str) -> dict[str, Any]:
        """Switch routing. Leaving IVR diversion once the rate has fallen to the
        recovered line (60 % of threshold) keeps it down: the surge is absorbed and the
        rate settles at ABSORBED_REQUEST_RATE. Leaving it earlier lets the undiverted
        surge straight back, and diverting again restarts the fall from the top."""
        with self._lock:
            if mode != self._routing:
                if mode == "ivr_diversion":
                    self._diverted_since = self._clock()
                else:
                    if self._surge_rate is not None and self._request_rate() <= RECOVERED_REQUEST_RATE:
                        self._surge_absorbed = True
                    self._diverted_since = None
                self._routing = mode
            return {"routing_mode": self._routing, "request_rate": round(self._request_rate(), 3)}

    def set_key_customer_channel(self, enabled: bool) -> dict[str, Any]:
        with self._lock:
            self._key_customer_channel = enabled
            return {"key_customer_channel": enabled}

    # ----------------------------------------------------------------- notices
    def add_notice(self, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            notice = {"id": self._next_notice_id, **fields, "published_at": _utc_now()}
            self._next_notice_id += 1
            self._notices.append(notice)
            return copy.deepcopy(notice)

    def notices(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._notices)

    # ---------------------------------------------------------------- staffing
    def _agents_online(self) -> int:
        overtime = self._overtime_agents if self._overtime else 0
        return self._rostered_agents + self._reserve_called + overtime

    def call_in_reserve(self, agents: int) -> dict[str, Any]:
        with self._lock:
            called = min(agents, self._reserve_available)
            self._reserve_available -= called
            self._reserve_called += called
            return {
                "called_in": called,
                "agents_online": self._agents_online(),
                "reserve_agents_available": self._reserve_available,
            }

    def set_overtime(self, enabled: bool, agents: int) -> dict[str, Any]:
        """Overtime is worked in rotation: `agents` is how many of the rostered shift are
        staying on at any one time (people take turns so no one works a double shift).
        So it replaces, not adds to, the previous figure; it cannot exceed the rostered
        shift; enabled=false releases them all."""
        with self._lock:
            self._overtime = enabled
            self._overtime_agents = min(agents, self._rostered_agents) if enabled else 0
            return {
                "overtime": self._overtime,
                "overtime_agents": self._overtime_agents,
                "agents_online": self._agents_online(),
            }

    def set_volunteers(self, agents: int, queues: list[str]) -> dict[str, Any]:
        """Volunteers replace (not add to) the previous figure; see volunteer_diversion."""
        with self._lock:
            self._volunteers = agents
            self._volunteer_queues = list(queues)
            diverted = volunteer_diversion(agents, self._offered_per_hour)
            return {
                "volunteers": agents,
                "queues": list(queues),
                "diverted_per_hour": diverted,
                "arrival_rate_per_hour": self._offered_per_hour - diverted,
            }

    def set_human_chat_share(self, min_share: float) -> dict[str, Any]:
        """Raise the human chat share to `min_share`, as far as spare agents allow.

        "At least": a lower request never cuts an existing share. If spare agents cannot
        carry `min_share`, the share rises only to the cap (never falls) and `limited`
        says so; that is still a 200, because the step did what the staffing allows."""
        with self._lock:
            arrival = self._offered_per_hour - volunteer_diversion(self._volunteers, self._offered_per_hour)
            spare = self._agents_online() - agents_required(arrival, self._aht)
            cap = max_human_chat_share(spare)
            target = min(min_share, cap)
            self._human_chat_share = max(self._human_chat_share, target)
            return {
                "requested_min_share": min_share,
                "human_chat_share": self._human_chat_share,
                "max_share_agents_allow": cap,
                "limited": min_share > cap,
            }

    # ----------------------------------------------------------------- metrics
    def _metrics(self) -> dict[str, Any]:
        offered = self._offered_per_hour
        arrival = offered - volunteer_diversion(self._volunteers, offered)
        agents = self._agents_online()
        sl = _service_level(arrival, self._aht, agents)
        node = self._nodes[self._active]
        figures = service_figures(service_level=sl, overload=self._request_rate() / LOAD_THRESHOLD,
                                  down=not (node["up"] and not node["isolated"]),
                                  diverting=self._routing == "ivr_diversion", volunteers=self._volunteers,
                                  arrival_rate_per_hour=arrival, aht_seconds=self._aht, agents=agents)
        return {
            "request_rate": round(self._request_rate(), 3),
            "load_threshold": LOAD_THRESHOLD,
            "queue_length": queue_length(sl, arrival),
            "arrival_rate_per_hour": arrival,
            "offered_arrival_rate_per_hour": offered,
            "aht_seconds": self._aht,
            "agents_online": agents,
            "reserve_agents_available": self._reserve_available,
            "service_level": round(sl, 4),
            "answer_target_seconds": ANSWER_TARGET_SECONDS,
            "human_chat_share": self._human_chat_share,
            "routing_mode": self._routing,
            "key_customer_channel": self._key_customer_channel,
            "overtime": self._overtime,
            "volunteers": self._volunteers,
            # What the seed commitments are scored on (see service_figures).
            "service_figures": figures,
        }

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            return self._metrics()

    # ------------------------------------------------------------------- inbox
    def deliver(self, recipient: str, message: Any) -> dict[str, Any]:
        with self._lock:
            entry = {
                "id": len(self._inbox) + 1,
                "recipient": recipient,
                "received_at": _utc_now(),
                "message": copy.deepcopy(message),
            }
            self._inbox.append(entry)
            return {"stored": True, "id": entry["id"], "recipient": recipient}

    def inbox(self, recipient: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(m) for m in self._inbox if recipient is None or m["recipient"] == recipient]

    # ------------------------------------------------------------------- state
    def snapshot(self) -> dict[str, Any]:
        """GET /state: everything, as plain JSON-able data."""
        with self._lock:
            node = self._nodes[self._active]
            snap = {
                "scenario": self._scenario,
                "recovery_seconds": self.recovery_seconds,
                "status": "ok" if node["up"] and not node["isolated"] else "down",
                "active_node": self._active,
                "nodes": self._nodes,
                "primary_flapping": self._primary_flapping,
                "failover_count": self._failover_count,
                "congestion": {
                    "surge_rate": self._surge_rate,
                    "absorbed_rate": self._calm_rate,
                    "diverting_for_seconds": (
                        None if self._diverted_since is None else round(self._clock() - self._diverted_since, 6)
                    ),
                    "surge_absorbed": self._surge_absorbed,
                },
                "staffing": {
                    "rostered_agents": self._rostered_agents,
                    "reserve_called_in": self._reserve_called,
                    "reserve_agents_available": self._reserve_available,
                    "overtime": self._overtime,
                    "overtime_agents": self._overtime_agents,
                    "volunteers": self._volunteers,
                    "volunteer_queues": self._volunteer_queues,
                },
                "metrics": self._metrics(),
                "notices": self._notices,
                "inbox": self._inbox,
                "counters": {**self._counters, "failover_count": self._failover_count},
                "idempotency_keys": len(self._idempotent),
                "requests": self._requests,
            }
            # One deep copy of the whole tree: the caller serialises it outside the lock.
            return json.loads(json.dumps(snap))
