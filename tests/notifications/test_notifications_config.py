"""Notifications configuration, messages and acknowledgement links, without a Prefect run:
contacts (secrets by reference only), duty roster, level routing, zh/en templates,
signed links, `firebreak oncall` and `firebreak ack`."""
from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone

import pytest

from firebreak.cli import main as cli
from firebreak.settings import get_settings
from notifications.acknowledgement.links import (
    AckTokenExpired,
    AckTokenForged,
    make_ack_link,
    make_ack_token,
    verify_ack_token,
)
from notifications.acknowledgement.service import AcknowledgementInvalid, acknowledge_incident
from notifications.config import load_config
from notifications.contacts import ContactsInvalid
from notifications.messages import render
from notifications.roster import RosterInvalid
from records import incidents
from records.acknowledgements import list_acknowledgements
from tests.notifications_support import contact

TECH = ["technical_support"]


def _open_incident(**extra):
    return incidents.open_incident(runbook_id="test", runbook_version="1", title="Chat is down", level="II",
                                   source="cli", parameters={}, **extra)


# --------------------------------------------------------------------------- contacts


@pytest.mark.parametrize("url, what", [
    ("json://admin:hunter2@127.0.0.1:9/inbox", "password in the URL"),
    ("json://127.0.0.1:9/inbox?token=abc123", "query parameter 'token'"),
    ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "a token Apprise treats as secret"),
    ("wecombot://botkey123456", "a token Apprise treats as secret"),
])
def test_inline_secret_is_rejected_naming_contact_and_channel(notify_config, url, what) -> None:
    notify_config.write([contact("li-wei", TECH, ["json://127.0.0.1:9/first", url])])
    with pytest.raises(ContactsInvalid) as error:
        load_config()
    message = str(error.value)
    assert "contact li-wei" in message and "channel 2" in message and what in message
    assert "hunter2" not in message and "abc123" not in message and "TIiajkdnlazkcOXrIdevi7FQ" not in message


def test_secrets_by_environment_reference_are_accepted(notify_config) -> None:
    notify_config.write([contact("li-wei", TECH, [
        "json://admin:${LI_WEI_PASSWORD}@127.0.0.1:9/inbox",
        "slack://${SLACK_A}/${SLACK_B}/${SLACK_C}",
        "mailto://ops:${SMTP_PASSWORD}@example.com?smtp=127.0.0.1&port=2525&to=li@example.com&mode=insecure",
    ])])
    assert load_config().directory.get("li-wei").channels[0].startswith("json://admin:${")


def test_unknown_department_and_role_are_errors(notify_config) -> None:
    notify_config.write([contact("li-wei", ["wizard"], ["json://127.0.0.1:9/x"])])
    with pytest.raises(ContactsInvalid, match="unknown role"):
        load_config()
    notify_config.write([contact("li-wei", TECH, ["json://127.0.0.1:9/x"], department="Magic")])
    with pytest.raises(ContactsInvalid, match="unknown department 'Magic'"):
        load_config()


# --------------------------------------------------------------------------- roster

PEOPLE = [contact("li-wei", TECH, ["json://127.0.0.1:9/li"]), contact("chen-jing", TECH, ["json://127.0.0.1:9/chen"]),
          contact("zheng-yu", ["customer_service"], ["json://127.0.0.1:9/z"], department="Customer Service"),
          contact("lin-na", ["customer_service"], ["json://127.0.0.1:9/l"], department="Customer Service")]
ROSTER = {
    "timezone": "Asia/Shanghai",
    "shifts": [
        {"name": "day", "roles": TECH, "contacts": ["li-wei"], "weekly": {"from": "08:00", "to": "20:00"}},
        {"name": "night", "roles": TECH, "contacts": ["chen-jing"], "weekly": {"from": "20:00", "to": "08:00"}},
        {"name": "festival team A", "roles": ["customer_service"], "contacts": ["lin-na"],
         "dates": {"from": "2027-02-06", "to": "2027-02-08"}},
        {"name": "desk", "roles": ["customer_service"], "contacts": ["zheng-yu"], "always": True},
    ],
    "overrides": [{"role": "technical_support", "replace": "li-wei", "with": "chen-jing",
                   "from": "2027-02-07T08:00:00+08:00", "to": "2027-02-07T20:00:00+08:00", "reason": "swap"}],
}


def test_roster_time_windows_dates_and_overrides(notify_config) -> None:
    notify_config.write(PEOPLE, roster=ROSTER)
    roster = load_config().roster
    shanghai = timezone(timedelta(hours=8))
    assert roster.on_duty("technical_support", datetime(2026, 11, 23, 9, 0, tzinfo=shanghai)).contacts == ["li-wei"]
    assert roster.on_duty("technical_support", datetime(2026, 11, 23, 23, 0, tzinfo=shanghai)).contacts == ["chen-jing"]
    # 03:00 UTC is 11:00 in Shanghai: the day shift.
    assert roster.on_duty("technical_support", datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)).contacts == ["li-wei"]
    assert roster.on_duty("customer_service", datetime(2027, 2, 7, 12, 0)).contacts == ["lin-na", "zheng-yu"]
    assert roster.on_duty("customer_service", datetime(2027, 2, 9, 12, 0)).contacts == ["zheng-yu"]
    swapped = roster.on_duty("technical_support", datetime(2027, 2, 7, 10, 0))
    assert swapped.contacts == ["chen-jing"] and swapped.overrides == ["li-wei → chen-jing (swap)"]


def test_roster_gap_is_a_load_error_naming_role_and_hours(notify_config) -> None:
    gappy = {"shifts": [{"name": "day only", "roles": TECH, "contacts": ["li-wei"],
                         "weekly": {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "20:00"}}]}
    notify_config.write(PEOPLE, roster=gappy)
    with pytest.raises(RosterInvalid) as error:
        load_config()
    assert "'technical_support' has nobody on duty" in str(error.value)
    assert "mon 00:00–mon 08:00" in str(error.value) and "fri 20:00–mon 00:00" in str(error.value)


def test_roster_rejects_unknown_contact_and_role_nobody_holds(notify_config) -> None:
    notify_config.write(PEOPLE, roster={"shifts": [{"name": "x", "roles": TECH, "contacts": ["ghost"], "always": True}]})
    with pytest.raises(RosterInvalid, match="no contact 'ghost'"):
        load_config()
    # scenario_lead is engaged at level II but nobody holds it.
    notify_config.write(PEOPLE, levels={"III": TECH, "II": TECH + ["scenario_lead"], "I": TECH})
    with pytest.raises(RosterInvalid, match="role 'scenario_lead' is used but nobody holds it"):
        load_config()


def test_level_routing_follows_the_seed_table() -> None:
    routing = load_config().routing  # the shipped configuration
    assert routing.roles_for("system-outage", "III") == ["technical_support"]
    assert routing.roles_for("system-outage", "II") == ["technical_support", "on_site_commander", "scenario_lead"]
    level_one = routing.roles_for("system-outage", "I")
    assert level_one[-1] == "commander_in_chief" and {"customer_service", "marketing"} <= set(level_one)
    assert routing.roles_for("staffing-shortage", "III") == ["logistics"]
    assert routing.roles_for("some-new-runbook", "III") == ["duty_manager"]


def test_shipped_configuration_staffs_every_role_in_use() -> None:
    config = load_config()
    assert config.roster.on_duty("technical_support").contacts == ["li-wei", "chen-jing"]
    assert set(config.policies) == {"technical-support", "emergency-response", "reserve-call-in"}


# --------------------------------------------------------------------------- messages

CONTEXT = {
    "incident": {"id": "INC-2026-0007", "level": "II", "title": "t", "summary": "{{ 7 * 7 }} <img src=x>", "drill": True},
    "runbook": {"id": "system-outage", "title": "System outage"}, "title": "Chat {{ config }} down",
    "message": "{% for x in range(3) %}boom{% endfor %}", "step": "Page technical support", "tier": 1,
    "ack_link": "http://127.0.0.1:8700/ack/abc.def", "run_link": "http://127.0.0.1:4200/runs/flow-run/1",
    "escalated_after": 5, "recipient": {"id": "li-wei", "name": "Li Wei"},
}


@pytest.mark.parametrize("locale", ["zh", "en"])
@pytest.mark.parametrize("event", ["triggered", "escalated", "status_update", "approval_needed", "resolved",
                                   "customer_notice"])
def test_every_event_has_both_locales_and_carries_the_facts(locale, event) -> None:
    message = render(event, locale, CONTEXT)
    assert message.title.startswith("[DRILL]") and "INC-2026-0007" in message.title
    for fact in ("INC-2026-0007", "II", "Page technical support", "http://127.0.0.1:8700/ack/abc.def",
                 "http://127.0.0.1:4200/runs/flow-run/1"):
        assert fact in message.body
    # Alert text is data: printed as written, never evaluated.
    assert "{{ 7 * 7 }}" in message.body and "49" not in message.body
    assert "{% for x in range(3) %}boom{% endfor %}" in message.body and "Chat {{ config }} down" in message.title
    assert ("演练" if locale == "zh" else "DRILL") in message.body


def test_locale_picks_the_language() -> None:
    assert "请确认接警" in render("triggered", "zh", CONTEXT).body
    assert "Please acknowledge" in render("triggered", "en", CONTEXT).body
    assert "5 分钟内无人确认" in render("escalated", "zh", CONTEXT).body


# --------------------------------------------------------------------------- acknowledgement links


def test_ack_link_round_trip_forgery_and_expiry() -> None:
    expires = datetime.now(timezone.utc) + timedelta(hours=1)
    link = make_ack_link("INC-2026-0001", "li-wei", expires)
    assert link.startswith(get_settings().public_url + "/ack/")
    token = link.rsplit("/", 1)[1]
    assert verify_ack_token(token) == ("INC-2026-0001", "li-wei")
    payload, signature = token.split(".")
    other = make_ack_token("INC-2026-0002", "li-wei", expires)
    with pytest.raises(AckTokenForged, match="signature does not match"):
        verify_ack_token(other.split(".")[0] + "." + signature)  # another incident, this signature
    with pytest.raises(AckTokenForged, match="malformed"):
        verify_ack_token("not-a-token")
    with pytest.raises(AckTokenExpired, match="expired"):
        verify_ack_token(token, now=expires + timedelta(seconds=1))


def test_ack_secret_from_environment_or_a_private_file(notify_config) -> None:
    path = get_settings().resolved_home / "ack-secret"
    make_ack_token("INC-2026-0001", "li-wei", datetime.now(timezone.utc) + timedelta(minutes=1))
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    token = make_ack_token("INC-2026-0001", "li-wei", datetime.now(timezone.utc) + timedelta(minutes=1))
    notify_config.set_env("FIREBREAK_ACK_SECRET", "a-different-secret-from-the-environment")
    with pytest.raises(AckTokenForged):
        verify_ack_token(token)  # signed with the file's secret, checked with the environment's


# --------------------------------------------------------------------------- acknowledge_incident and the CLI


def test_acknowledge_is_recorded_and_idempotent() -> None:
    incident = _open_incident()
    first = acknowledge_incident(incident.id, by="Li Wei", via="cli", comment="on it")
    assert first.first and first.incident_status == "acknowledged"
    again = acknowledge_incident(incident.id, by="Chen Jing", via="monitor")
    assert not again.first and again.first_by == "Li Wei" and again.incident_status == "acknowledged"
    acks = list_acknowledgements(incident.id)
    assert [(a.by, a.via, a.effective, a.comment) for a in acks] == [
        ("Li Wei", "cli", True, "on it"), ("Chen Jing", "monitor", False, None)]
    statuses = [e.status for e in incidents.events(incident.id)]
    assert statuses.count("acknowledged") == 1 and "ack-repeated" in statuses
    assert incidents.get_incident(incident.id).acknowledged_at == first.at
    with pytest.raises(AcknowledgementInvalid, match="unknown acknowledgement path 'email'"):
        acknowledge_incident(incident.id, by="x", via="email")
    with pytest.raises(incidents.IncidentNotFound):
        acknowledge_incident("INC-1999-0001", by="x", via="cli")


def test_cli_ack_and_oncall(capsys) -> None:
    incident = _open_incident()
    assert cli(["ack", incident.id, "--by", "Sun Hao", "--comment", "taking it"]) == 0
    assert "acknowledged by Sun Hao" in capsys.readouterr().out
    assert cli(["ack", incident.id, "--by", "Qian Li"]) == 0
    assert "already acknowledged by Sun Hao via cli" in capsys.readouterr().out
    assert cli(["ack", "INC-1999-0001", "--by", "x"]) == 1
    assert "no incident 'INC-1999-0001'" in capsys.readouterr().err

    assert cli(["oncall", "technical_support", "--at", "2027-02-06T22:00"]) == 0
    out = capsys.readouterr().out
    assert "Chen Jing (chen-jing)" in out and "li-wei" not in out.split("\n", 1)[1].split("[")[0]
    assert "override li-wei → chen-jing" in out
    assert cli(["oncall"]) == 0
    assert "commander_in_chief" in capsys.readouterr().out
    assert cli(["oncall", "wizard"]) == 2
    assert "unknown role 'wizard'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["oncall", "--at", "tomorrow-ish"])
    assert "--at expects an ISO time" in capsys.readouterr().err
    assert os.environ.get("FIREBREAK_ACK_SECRET") is None  # nothing above leaked a secret into the environment


# --------------------------------------------------------------------------- runbook validation of notify steps


def test_validate_checks_notify_event_policy_audience_and_timeout(tmp_path) -> None:
    from tasks.catalog import validate_file
    from tests.runbook_helpers import write_runbook

    base = {"title": "t", "message": "m"}
    path = write_runbook(tmp_path, "notify-checks", [
        {"id": "bad_event", "action": "notify", "with": {"to": TECH, "event": "boom", **base}},
        {"id": "bad_policy", "action": "notify", "with": {"to": TECH, "escalation": "nope", **base}},
        {"id": "too_short", "action": "notify", "with": {"to": TECH, "escalation": "technical-support", **base}},
        {"id": "nobody", "action": "notify", "with": base},
        {"id": "fine", "action": "notify", "timeout": 3600, "retries": 1,
         "with": {"by_level": True, "event": "triggered", "escalation": "technical-support", **base}},
    ])
    _, problems = validate_file(path)
    text = [str(p) for p in problems]
    assert len(text) == 4, text
    assert any("steps[0].with.event: unknown message event 'boom'" in t for t in text)
    assert any("steps[1].with.escalation: unknown escalation policy 'nope'" in t for t in text)
    assert any("steps[2].timeout: timeout 60s × 1 attempt(s) is shorter than escalation policy" in t for t in text)
    assert any("steps[3].with: notify needs `to` (roles), `by_level: true` or `contacts`" in t for t in text)
