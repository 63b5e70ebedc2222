"""End-to-end tests of the simulated contact centre, over real HTTP on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator import RunningSimulator, start_simulator
from simulator.scenarios import LOAD_THRESHOLD
from simulator.state import ContactCentre
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
RECOVERY = 0.3  # seconds: keeps the congestion tests fast


@pytest.fixture
def make_sim() -> Iterator[Callable[..., RunningSimulator]]:
    started: list[RunningSimulator] = []

    def make(fault: str | None = None, recovery_seconds: float = RECOVERY) -> RunningSimulator:
        sim = start_simulator(port=0, fault=fault, recovery_seconds=recovery_seconds)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, limits=httpx.Limits(max_connections=64)) as c:
        yield c


def metrics(client: httpx.Client, sim: RunningSimulator) -> dict[str, Any]:
    r = client.get(f"{sim.url}/metrics")
    assert r.status_code == 200
    return r.json()


# ------------------------------------------------------------------ lifecycle
def test_start_gives_url_state_and_context_manager_stops_it(client: httpx.Client) -> None:
    with start_simulator(fault="down", recovery_seconds=RECOVERY) as sim:
        assert sim.url.startswith("http://127.0.0.1:") and sim.port > 0
        assert client.get(f"{sim.url}/health").status_code == 503
        assert sim.state.snapshot()["scenario"] == "down"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{sim.url}/health", timeout=1.0)
    sim.stop()  # a second stop is harmless


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started", ["plainly", "with SIGINT ignored"])
def test_cli_prints_url_serves_quietly_and_stops_on_ctrl_c(started: str) -> None:
    """Also when started with SIGINT ignored (a shell script's `&` job; a parent that ignored it): Python
    then installs no KeyboardInterrupt handler, and a full suite run once saw Ctrl-C ignored so."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--fault", "down", "--recovery-seconds", "0.5"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if started != "plainly" else None,  # noqa: PLW1509  (no threads between fork and exec here)
        # Should it ever hang on Ctrl-C, SIGABRT below makes faulthandler print every thread's stack into the failure.
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:"), url
        r = httpx.get(f"{url}/health", timeout=5.0)
        assert r.status_code == 503 and r.json()["status"] == "down"
        assert httpx.post(f"{url}/nodes/primary/isolate", timeout=5.0).status_code == 200
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"still running 10 s after Ctrl-C; where its threads were:\n{err}") from None
        assert proc.returncode == 0
        assert err == "", "no per-request logging unless --verbose"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ------------------------------------------------------------------ scenarios
def test_none_is_healthy_with_headroom_and_complete_metrics(make_sim, client) -> None:
    sim = make_sim()
    h = client.get(f"{sim.url}/health")
    assert h.status_code == 200
    assert h.json()["status"] == "ok" and h.json()["active_node"] == "primary"
    assert h.json()["nodes"] == {"primary": {"up": True, "isolated": False}, "standby": {"up": True, "isolated": False}}

    m = metrics(client, sim)
    expected_types = {
        "request_rate": float, "load_threshold": float, "queue_length": int, "arrival_rate_per_hour": float,
        "aht_seconds": float, "agents_online": int, "reserve_agents_available": int, "service_level": float,
        "answer_target_seconds": (int, float), "human_chat_share": float, "routing_mode": str,
        "key_customer_channel": bool, "overtime": bool, "volunteers": int,
    }
    for name, kind in expected_types.items():
        assert isinstance(m[name], kind), (name, m[name])
    assert m["request_rate"] == pytest.approx(0.4 * m["load_threshold"])
    assert m["service_level"] >= 0.8 and m["queue_length"] == 0
    assert m["answer_target_seconds"] == 30
    assert m["routing_mode"] == "normal" and m["key_customer_channel"] is False


def test_down_needs_isolation_and_failover(make_sim, client) -> None:
    sim = make_sim("down")
    h = client.get(f"{sim.url}/health")
    assert h.status_code == 503
    assert h.json()["status"] == "down" and h.json()["active_node"] == "primary"
    assert h.json()["nodes"]["primary"]["up"] is False

    r = client.post(f"{sim.url}/nodes/primary/isolate")
    assert r.status_code == 200 and r.json() == {"node": "primary", "isolated": True}
    assert client.get(f"{sim.url}/health").status_code == 503, "isolation alone does not restore service"

    r = client.post(f"{sim.url}/failover", json={"to": "standby"})
    assert r.status_code == 200 and r.json() == {"active_node": "standby", "failover_count": 1}
    h = client.get(f"{sim.url}/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["active_node"] == "standby"
    assert h.json()["nodes"]["primary"] == {"up": False, "isolated": True}


def test_failover_to_a_down_or_isolated_node_is_409(make_sim, client) -> None:
    sim = make_sim("down")
    r = client.post(f"{sim.url}/failover", json={"to": "primary"})
    assert r.status_code == 409 and "down" in r.json()["error"]
    client.post(f"{sim.url}/nodes/standby/isolate")
    r = client.post(f"{sim.url}/failover", json={"to": "standby"})
    assert r.status_code == 409 and "isolated" in r.json()["error"]
    assert sim.state.snapshot()["failover_count"] == 0


def test_isolating_the_active_node_without_failover_takes_service_down_and_is_idempotent(make_sim, client) -> None:
    sim = make_sim("none")
    first = client.post(f"{sim.url}/nodes/primary/isolate")
    second = client.post(f"{sim.url}/nodes/primary/isolate")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"node": "primary", "isolated": True}
    h = client.get(f"{sim.url}/health")
    assert h.status_code == 503 and h.json()["status"] == "down"


def test_flapping_alternates_until_failover(make_sim, client) -> None:
    sim = make_sim("flapping")
    codes = [client.get(f"{sim.url}/health").status_code for _ in range(6)]
    assert codes == [503, 200, 503, 200, 503, 200]
    # The last check saw the primary up; fail over while the standby is steady.
    assert client.post(f"{sim.url}/failover", json={"to": "standby"}).status_code == 200
    after = [client.get(f"{sim.url}/health") for _ in range(5)]
    assert [r.status_code for r in after] == [200] * 5
    assert {r.json()["active_node"] for r in after} == {"standby"}
    # The primary keeps flapping behind the scenes; it just no longer matters.
    assert {r.json()["nodes"]["primary"]["up"] for r in after} == {True, False}


def test_congested_falls_under_threshold_after_ivr_diversion_and_stays_there(make_sim, client) -> None:
    sim = make_sim("congested")
    m = metrics(client, sim)
    assert m["request_rate"] == pytest.approx(3 * m["load_threshold"])
    assert client.get(f"{sim.url}/health").json()["overloaded"] is True

    r = client.post(f"{sim.url}/routing", json={"mode": "ivr_diversion"})
    assert r.status_code == 200 and r.json()["routing_mode"] == "ivr_diversion"
    samples: list[float] = []

    def recovered() -> bool:
        samples.append(metrics(client, sim)["request_rate"])
        return samples[-1] <= 0.6 * LOAD_THRESHOLD

    wait_for(recovered, timeout=60, what="the request rate to fall under 60 % of the threshold")
    assert samples == sorted(samples, reverse=True), "the rate only falls while diverting"
    assert len(samples) > 1, "the fall is gradual, not instant"
    assert metrics(client, sim)["routing_mode"] == "ivr_diversion"

    r = client.post(f"{sim.url}/routing", json={"mode": "normal"})
    assert r.status_code == 200 and r.json()["routing_mode"] == "normal"
    time.sleep(RECOVERY)
    m = metrics(client, sim)
    assert m["routing_mode"] == "normal" and m["request_rate"] <= 0.6 * LOAD_THRESHOLD
    assert client.get(f"{sim.url}/health").json()["overloaded"] is False


def test_congestion_dynamics_with_a_controlled_clock() -> None:
    now = [100.0]
    centre = ContactCentre("congested", recovery_seconds=10.0, clock=lambda: now[0])
    assert centre.metrics()["request_rate"] == 1500.0
    centre.set_routing("ivr_diversion")
    now[0] += 5.0
    assert centre.metrics()["request_rate"] == pytest.approx(875.0)  # linear: halfway to 250
    # Back to normal before the surge is absorbed: the undiverted surge returns.
    assert centre.set_routing("normal")["request_rate"] == 1500.0
    centre.set_routing("ivr_diversion")  # restarts the fall from the top
    now[0] += 9.7
    assert centre.metrics()["request_rate"] == pytest.approx(287.5)  # under the 60 % line (300)
    centre.set_routing("ivr_diversion")  # same mode again: must not restart the timer
    assert centre.metrics()["request_rate"] == pytest.approx(287.5)
    # Fallen to the recovered line: normal routing now keeps it down at the settled 250.
    assert centre.set_routing("normal")["request_rate"] == pytest.approx(250.0)
    now[0] += 1000.0
    assert centre.metrics()["request_rate"] == pytest.approx(250.0)


def test_short_staffed_is_closed_by_calling_in_the_reserve(make_sim, client) -> None:
    sim = make_sim("short-staffed")
    m = metrics(client, sim)
    assert m["arrival_rate_per_hour"] * m["aht_seconds"] / 3600 == pytest.approx(40.0)
    assert m["agents_online"] == 38 and m["reserve_agents_available"] == 10
    assert m["service_level"] < 0.5 and m["queue_length"] > 0

    r = client.post(f"{sim.url}/staff/reserve", json={"agents": 25})
    assert r.status_code == 200
    assert r.json() == {"called_in": 10, "agents_online": 48, "reserve_agents_available": 0}
    m = metrics(client, sim)
    assert m["service_level"] >= 0.8 and m["queue_length"] == 0

    r = client.post(f"{sim.url}/staff/reserve", json={"agents": 1})
    assert r.json()["called_in"] == 0 and r.json()["agents_online"] == 48


def test_overtime_adds_agents_while_enabled_and_replaces_the_previous_figure(make_sim, client) -> None:
    sim = make_sim("short-staffed")
    r = client.post(f"{sim.url}/staff/overtime", json={"enabled": True, "agents": 3})
    assert r.json() == {"overtime": True, "overtime_agents": 3, "agents_online": 41}
    r = client.post(f"{sim.url}/staff/overtime", json={"enabled": True, "agents": 7})
    assert r.json()["agents_online"] == 45, "a rotation figure replaces, it does not add"
    m = metrics(client, sim)
    assert m["overtime"] is True and m["service_level"] >= 0.8
    r = client.post(f"{sim.url}/staff/overtime", json={"enabled": False, "agents": 7})
    assert r.json() == {"overtime": False, "overtime_agents": 0, "agents_online": 38}
    assert metrics(client, sim)["service_level"] < 0.8


def test_volunteers_lower_the_main_queue_arrivals_and_close_the_gap_with_a_partial_reserve(make_sim, client) -> None:
    sim = make_sim("short-staffed")
    client.post(f"{sim.url}/staff/reserve", json={"agents": 3})
    assert metrics(client, sim)["service_level"] < 0.8, "41 agents alone are not enough for 600/h"

    r = client.post(f"{sim.url}/staff/volunteers", json={"agents": 5, "queues": ["refunds", "faq"]})
    assert r.status_code == 200
    assert r.json()["diverted_per_hour"] == 60.0 and r.json()["arrival_rate_per_hour"] == 540.0
    m = metrics(client, sim)
    assert m["volunteers"] == 5 and m["arrival_rate_per_hour"] == 540.0
    assert m["service_level"] >= 0.8

    # Volunteers only take the non-urgent quarter, however many turn up.
    r = client.post(f"{sim.url}/staff/volunteers", json={"agents": 100, "queues": ["faq"]})
    assert r.json()["arrival_rate_per_hour"] == 450.0


def test_human_chat_share_rises_only_as_far_as_spare_agents_allow(make_sim, client) -> None:
    sim = make_sim("none")  # 48 agents, 45 needed for voice: 3 spare x 20 chats/h of 120/h = 0.5
    assert metrics(client, sim)["human_chat_share"] == 0.2
    r = client.post(f"{sim.url}/chat/human-share", json={"min_share": 0.4})
    assert r.status_code == 200 and r.json()["human_chat_share"] == 0.4 and r.json()["limited"] is False
    r = client.post(f"{sim.url}/chat/human-share", json={"min_share": 0.9})
    assert r.json()["human_chat_share"] == 0.5 and r.json()["limited"] is True
    r = client.post(f"{sim.url}/chat/human-share", json={"min_share": 0.1})
    assert r.json()["human_chat_share"] == 0.5, "'at least': a lower minimum never cuts the share"
    assert metrics(client, sim)["human_chat_share"] == 0.5

    short = make_sim("short-staffed")  # no spare agents at all
    r = client.post(f"{short.url}/chat/human-share", json={"min_share": 0.5})
    assert r.json()["human_chat_share"] == 0.2 and r.json()["max_share_agents_allow"] == 0.0


def test_routing_key_customers_and_notices(make_sim, client) -> None:
    sim = make_sim()
    assert client.post(f"{sim.url}/routing", json={"mode": "ivr_diversion"}).json()["routing_mode"] == "ivr_diversion"
    r = client.post(f"{sim.url}/channels/key-customers", json={"enabled": True})
    assert r.status_code == 200 and r.json() == {"key_customer_channel": True}
    assert metrics(client, sim)["key_customer_channel"] is True

    first = client.post(f"{sim.url}/notices", json={
        "channel": "app-banner", "audience": "all customers", "text": "热线繁忙，请使用在线客服",
        "expected_recovery": "20:00", "alternative_channel": "online chat",
    })
    assert first.status_code == 201
    assert first.json()["id"] == 1 and first.json()["text"] == "热线繁忙，请使用在线客服"
    second = client.post(f"{sim.url}/notices", json={"channel": "sms", "audience": "vip", "text": "We are on it"})
    assert second.status_code == 201 and second.json()["id"] == 2
    assert second.json()["expected_recovery"] is None and second.json()["alternative_channel"] is None
    listed = client.get(f"{sim.url}/notices").json()
    assert [n["id"] for n in listed] == [1, 2] and listed[0]["channel"] == "app-banner"


def test_post_faults_resets_the_scenario_but_keeps_the_audit_trail(make_sim, client) -> None:
    sim = make_sim("down")
    client.post(f"{sim.url}/nodes/primary/isolate")
    client.post(f"{sim.url}/failover", json={"to": "standby"})
    client.post(f"{sim.url}/inbox/oncall", json={"title": "t", "message": "m"})
    r = client.post(f"{sim.url}/faults", json={"fault": "short-staffed"})
    assert r.status_code == 200 and r.json()["fault"] == "short-staffed"
    state = client.get(f"{sim.url}/state").json()
    assert state["scenario"] == "short-staffed" and state["active_node"] == "primary"
    assert state["failover_count"] == 0 and state["metrics"]["agents_online"] == 38
    assert [q["path"] for q in state["requests"]] == ["/nodes/primary/isolate", "/failover", "/inbox/oncall", "/faults"]
    assert len(state["inbox"]) == 1


# ---------------------------------------------------------------- idempotency
def test_retried_failover_with_the_same_key_is_performed_once(make_sim, client) -> None:
    sim = make_sim("down")
    headers = {"Idempotency-Key": "INC-1:failover"}
    first = client.post(f"{sim.url}/failover", json={"to": "standby"}, headers=headers)
    retry = client.post(f"{sim.url}/failover", json={"to": "standby"}, headers=headers)
    assert first.status_code == retry.status_code == 200
    assert first.json() == retry.json() == {"active_node": "standby", "failover_count": 1}
    assert "Idempotent-Replayed" not in first.headers and retry.headers["Idempotent-Replayed"] == "true"
    assert sim.state.snapshot()["failover_count"] == 1

    # Without the key protection a second failover really happens: that is the point.
    again = client.post(f"{sim.url}/failover", json={"to": "standby"}, headers={"Idempotency-Key": "INC-1:other"})
    assert again.json()["failover_count"] == 2

    log = client.get(f"{sim.url}/state").json()["requests"]
    assert [(e["idempotency_key"], e["replayed"]) for e in log] == [
        ("INC-1:failover", False), ("INC-1:failover", True), ("INC-1:other", False)]
    assert log[0]["method"] == "POST" and log[0]["body"] == {"to": "standby"} and log[0]["time"]


def test_same_key_on_a_different_path_is_a_different_request(make_sim, client) -> None:
    sim = make_sim("down")
    h = {"Idempotency-Key": "k"}
    assert client.post(f"{sim.url}/nodes/primary/isolate", headers=h).json() == {"node": "primary", "isolated": True}
    assert client.post(f"{sim.url}/failover", json={"to": "standby"}, headers=h).json()["active_node"] == "standby"
    assert sim.state.snapshot()["failover_count"] == 1


def test_a_refused_request_is_not_bound_to_its_key(make_sim, client) -> None:
    sim = make_sim("none")
    client.post(f"{sim.url}/nodes/standby/isolate")
    h = {"Idempotency-Key": "INC-2:failover"}
    assert client.post(f"{sim.url}/failover", json={"to": "standby"}, headers=h).status_code == 409
    client.post(f"{sim.url}/faults", json={"fault": "none"})  # standby is fixed
    r = client.post(f"{sim.url}/failover", json={"to": "standby"}, headers=h)
    assert r.status_code == 200 and r.json()["failover_count"] == 1


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/failover", b"{not json", "not valid JSON"),
        ("/failover", b'{"to": NaN}', "not valid JSON"),
        ("/failover", b"", "JSON object with 'to'"),
        ("/failover", b"[]", "JSON object"),
        ("/failover", b"{}", "field 'to' is required"),
        ("/failover", b'{"to": "tertiary"}', "field 'to' must be one of primary, standby"),
        ("/failover", b'{"to": "standby", "force": true}', "unknown field 'force'"),
        ("/routing", b'{"mode": "panic"}', "field 'mode' must be one of normal, ivr_diversion"),
        ("/channels/key-customers", b'{"enabled": "yes"}', "field 'enabled' must be a boolean"),
        ("/staff/reserve", b'{"agents": 0}', "field 'agents' must be >= 1"),
        ("/staff/reserve", b'{"agents": 2.5}', "field 'agents' must be an integer"),
        ("/staff/reserve", b'{"agents": true}', "field 'agents' must be an integer"),
        ("/staff/overtime", b'{"enabled": true}', "field 'agents' is required"),
        ("/staff/overtime", b'{"enabled": true, "agents": -1}', "field 'agents' must be >= 0"),
        ("/staff/volunteers", b'{"agents": 2, "queues": []}', "at least one queue"),
        ("/staff/volunteers", b'{"agents": 2, "queues": "faq"}', "field 'queues' must be an array"),
        ("/chat/human-share", b'{"min_share": 1.5}', "between 0 and 1"),
        ("/chat/human-share", b'{"min_share": "half"}', "field 'min_share' must be a number"),
        ("/notices", b'{"channel": "sms", "audience": "all"}', "field 'text' is required"),
        ("/notices", b'{"channel": "sms", "audience": "all", "text": " "}', "field 'text' must be a non-empty string"),
        ("/notices", b'{"channel": "sms", "audience": "all", "text": "x", "expected_recovery": 5}',
         "field 'expected_recovery' must be a non-empty string or null"),
        ("/faults", b'{"fault": "meteor"}', "field 'fault' must be one of none, down"),
        ("/inbox/oncall", b"", "request body is empty"),
    ],
)
def test_bad_requests_are_400_with_the_reason(make_sim, client, path: str, body: bytes, reason: str) -> None:
    sim = make_sim("none")
    before = json.dumps(sim.state.snapshot()["metrics"])
    r = client.post(f"{sim.url}{path}", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"]
    after = sim.state.snapshot()
    assert json.dumps(after["metrics"]) == before and after["failover_count"] == 0, "a refusal changes nothing"
    assert after["requests"][-1]["status"] == 400, "refused requests are still in the audit trail"


def test_unknown_paths_are_404_and_wrong_methods_405(make_sim, client) -> None:
    sim = make_sim()
    r = client.get(f"{sim.url}/nope")
    assert r.status_code == 404 and "no such path: /nope" in r.json()["error"]
    r = client.post(f"{sim.url}/nodes/tertiary/isolate")
    assert r.status_code == 404 and "unknown node 'tertiary'" in r.json()["error"]

    r = client.get(f"{sim.url}/failover")
    assert r.status_code == 405 and r.headers["Allow"] == "POST" and "use POST" in r.json()["error"]
    r = client.post(f"{sim.url}/health", json={})
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    r = client.delete(f"{sim.url}/notices")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"
    # The same keep-alive connection keeps working after errors.
    assert client.get(f"{sim.url}/health").status_code == 200


# ---------------------------------------------------------------------- inbox
def test_inbox_stores_messages_per_recipient(make_sim, client) -> None:
    sim = make_sim()
    msg = {"version": "1.0", "title": "P1: hotline down", "message": "failover started", "type": "warning"}
    r = client.post(f"{sim.url}/inbox/oncall", json=msg)
    assert r.status_code == 200 and r.json()["recipient"] == "oncall"
    client.post(f"{sim.url}/inbox/duty-manager", json={"title": "FYI", "message": "x"})

    everything = client.get(f"{sim.url}/inbox").json()
    assert [m["recipient"] for m in everything] == ["oncall", "duty-manager"]
    assert everything[0]["message"] == msg and everything[0]["received_at"]
    mine = client.get(f"{sim.url}/inbox/oncall").json()
    assert len(mine) == 1 and mine[0]["message"]["title"] == "P1: hotline down"
    assert client.get(f"{sim.url}/inbox/nobody").json() == []


def test_apprise_json_notifications_land_in_the_inbox(make_sim, client) -> None:
    apprise = pytest.importorskip("apprise")
    sim = make_sim()
    notifier = apprise.Apprise()
    assert notifier.add(f"json://127.0.0.1:{sim.port}/inbox/oncall")
    assert notifier.notify(title="P1: hotline down", body="Failover to standby in progress")
    (entry,) = client.get(f"{sim.url}/inbox/oncall").json()
    assert entry["message"]["title"] == "P1: hotline down"
    assert entry["message"]["message"] == "Failover to standby in progress"
    assert {"version", "type"} <= set(entry["message"])


def test_unreachable_refuses_connections_while_its_inbox_still_receives(make_sim, client) -> None:
    apprise = pytest.importorskip("apprise")
    sim = make_sim("unreachable")
    assert sim.inbox_url != sim.url and sim.inbox_address == f"127.0.0.1:{sim.inbox_port}"
    for method, path in [("GET", "/health"), ("POST", "/failover"), ("POST", "/notices"), ("GET", "/inbox")]:
        with pytest.raises(httpx.ConnectError):  # a TCP refusal, not an HTTP answer
            client.request(method, f"{sim.url}{path}", json={})
    notifier = apprise.Apprise()
    assert notifier.add(f"json://{sim.inbox_address}/inbox/oncall")
    assert notifier.notify(title="P1: hotline unreachable", body="nobody can connect")
    assert [m["message"]["title"] for m in client.get(f"{sim.inbox_url}/inbox/oncall").json()] == [
        "P1: hotline unreachable"]
    assert client.get(f"{sim.inbox_url}/state").json()["scenario"] == "unreachable"
    # The inbox's address is not a back door to the service.
    health = client.get(f"{sim.inbox_url}/health")
    assert health.status_code == 404 and "refuses connections" in health.json()["error"]
    # Chosen at start: no switching in or out of it at run time.
    assert client.post(f"{sim.inbox_url}/faults", json={"fault": "none"}).status_code == 409
    other = make_sim("down")
    assert other.inbox_url == other.url
    refused = client.post(f"{other.url}/faults", json={"fault": "unreachable"})
    assert refused.status_code == 409 and "chosen when the simulator starts" in refused.json()["error"]
    assert client.get(f"{other.url}/health").json()["scenario"] == "down"


# ---------------------------------------------------------------- concurrency
def test_parallel_posts_are_all_recorded_and_a_shared_key_acts_once(make_sim, client) -> None:
    sim = make_sim("down")

    def notice(i: int) -> httpx.Response:
        return client.post(f"{sim.url}/notices", headers={"Idempotency-Key": f"notice-{i}"},
                           json={"channel": "sms", "audience": "all", "text": f"update {i}"})

    def failover(_: int) -> httpx.Response:
        return client.post(f"{sim.url}/failover", headers={"Idempotency-Key": "INC-3:failover"}, json={"to": "standby"})

    with ThreadPoolExecutor(max_workers=50) as pool:
        notices = list(pool.map(notice, range(50)))
        failovers = list(pool.map(failover, range(50)))

    assert [r.status_code for r in notices] == [201] * 50
    assert sorted(r.json()["id"] for r in notices) == list(range(1, 51))
    assert {r.json()["failover_count"] for r in failovers} == {1}
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in failovers) == 49

    state = client.get(f"{sim.url}/state").json()
    assert len(state["notices"]) == 50 and state["failover_count"] == 1
    log = state["requests"]
    assert sorted(e["idempotency_key"] for e in log if e["path"] == "/notices") == sorted(f"notice-{i}" for i in range(50))
    shared = [e for e in log if e["idempotency_key"] == "INC-3:failover"]
    assert len(shared) == 50 and sum(not e["replayed"] for e in shared) == 1
    assert [e["seq"] for e in log] == list(range(1, 101))


# ------------------------------------------------------------- service figures
def test_service_figures_meet_the_seed_targets_only_when_the_service_is_healthy() -> None:
    """The figures a drill's report scores against the seed commitments (SEEDS.md): first-contact
    resolution ≥ 85 %, satisfaction ≥ 90 %, complaints ≤ 5 %, chat ≤ 60 s, social ≤ 30 min, IVR ≤ 15 s."""
    def meets(f: dict) -> dict[str, bool]:
        return {"fcr": f["first_contact_resolution"] >= 0.85, "satisfaction": f["satisfaction"] >= 0.9,
                "complaints": f["complaint_rate"] <= 0.05, "chat": f["chat_first_reply_seconds"] <= 60,
                "social": f["social_first_reply_seconds"] <= 1800, "ivr": f["ivr_greeting_seconds"] <= 15}

    healthy = ContactCentre(fault="none").metrics()["service_figures"]
    assert all(meets(healthy).values()) and healthy["average_answer_seconds"] < 30
    short = ContactCentre(fault="short-staffed").metrics()["service_figures"]
    assert meets(short) == {"fcr": False, "satisfaction": False, "complaints": False, "chat": False,
                            "social": True, "ivr": True}
    assert short["average_answer_seconds"] == 3600.0  # the queue never drains: capped, not infinite
    congested = ContactCentre(fault="congested").metrics()["service_figures"]
    assert meets(congested)["social"] is False and meets(congested)["chat"] is False
    assert meets(congested)["ivr"] is False
    down = ContactCentre(fault="down").metrics()["service_figures"]
    assert meets(down)["fcr"] is False and meets(down)["chat"] is False
    # Calling in the reserve restores them (38 + 10 agents).
    centre = ContactCentre(fault="short-staffed")
    centre.call_in_reserve(10)
    assert all(meets(centre.metrics()["service_figures"]).values())
