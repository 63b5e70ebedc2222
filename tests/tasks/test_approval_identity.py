"""Who decides at an approval gate is a known contact, not free text: the gate's Resume form offers
the contacts as a list (the gate's approvers first), an answer is resolved to a contact (its form
label, its id, its name), and a name that is no contact is recorded, still counting, but marked
unverified on the timeline, in the report's decision table and step words (en and zh), and in the
live view."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from records.incidents import events
from tests.environment import environment
from tests.gated_runs import Background, gated, resume
from tests.polling import wait_for
from tests.runbook_helpers import step_events, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")

ROLES = ["technical_support", "scenario_lead", "marketing"]


def saved_schema(flow_run_id: str) -> dict[str, Any]:
    """The form's JSON schema as the Prefect server stores it for the paused run (what the UI renders)."""
    from prefect.client.orchestration import get_client
    from prefect.input import keyset_from_paused_state
    from prefect.input.actions import read_flow_run_input

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    keyset = keyset_from_paused_state(state)
    return wait_for(lambda: read_flow_run_input(keyset["schema"], flow_run_id=flow_run_id), timeout=15,
                    what="the gate to save its form")


# ------------------------------------------------------------------ the form offers the contacts


def test_the_saved_form_offers_the_contacts_approvers_first(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "gate-form", [
        {"id": "approve_notice", "action": "approval", "on_failure": "continue",
         "with": {"action": "publish a notice", "reason": "lines are busy", "timeout": 60,
                  "approvers": ["marketing"]}},
    ], roles=ROLES)
    run = Background(path)
    _incident_id, flow_run_id = run.paused_incident()
    schema = saved_schema(flow_run_id)
    approver = schema["properties"]["approver"]
    contacts, anyone = approver["anyOf"]
    # A string enum: the Prefect UI shows it as a select (tests/firebreak/test_browser.py picks from it).
    assert contacts["type"] == "string" and contacts["title"] == "a contact"
    assert contacts["enum"][0] == "周敏 Zhou Min (zhou-min)"  # the gate's approver (marketing) first
    assert "赵刚 Zhao Gang (zhao-gang)" in contacts["enum"] and "钱丽 Qian Li (qian-li)" in contacts["enum"]
    assert len(contacts["enum"]) == len(set(contacts["enum"])) == 11  # everyone in the directory, once
    # Any other name is possible (Prefect's server checks a resume against this schema), marked as unverified.
    assert anyone == {"type": "string", "title": "not a contact (recorded as unverified)"}
    assert "marketing first" in approver["description"]
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    assert "approver" in schema["required"]
    resume(flow_run_id, run_input={"decision": "approve", "approver": contacts["enum"][0]})
    assert run.finish().is_completed()


def test_choices_put_the_approvers_first_then_everyone_else() -> None:
    from notifications.contacts import Contact, Directory
    from tasks.approval import approver_choices

    def person(contact_id: str, name: str, *roles: str) -> Contact:
        return Contact(id=contact_id, name=name, department="Technical Support", roles=list(roles),
                       channels=["json://localhost/inbox"])

    directory = Directory([person("a", "Ann", "technical_support"), person("b", "Bo", "scenario_lead"),
                           person("c", "Cy", "marketing", "scenario_lead"), person("d", "Di", "marketing")])
    assert approver_choices(directory, ["marketing", "scenario_lead"]) == [
        "Cy (c)", "Di (d)", "Bo (b)", "Ann (a)"]
    assert approver_choices(directory, []) == ["Ann (a)", "Bo (b)", "Cy (c)", "Di (d)"]


# ------------------------------------------------------------------ the answer names a contact, or not


@pytest.mark.parametrize("given", ["钱丽 Qian Li (qian-li)", "qian-li"])
def test_a_contact_label_or_id_is_recorded_as_the_contact(tmp_path: Path, given: str) -> None:
    run = Background(gated(tmp_path, f"gate-contact-{given.split()[-1].strip('()')}", timeout=60))
    incident_id, flow_run_id = run.paused_incident()
    resume(flow_run_id, run_input={"decision": "approve", "approver": given, "comment": "go"})
    assert run.finish().is_completed()
    decision = next(e for e in events(incident_id) if e.status == "approved")
    assert decision.actor == "钱丽 Qian Li"
    assert decision.summary == "Approve the fail-over: approved by 钱丽 Qian Li: go"
    assert {k: decision.data[k] for k in ("approver", "approver_id", "approver_verified")} == \
        {"approver": "钱丽 Qian Li", "approver_id": "qian-li", "approver_verified": True}
    assert "approver_unverified" not in decision.data
    assert step_events(incident_id, "fail_over")[-1][:2] == ("outcome", "succeeded")


def test_a_stranger_is_recorded_unverified_and_shown_so(tmp_path: Path) -> None:
    """Free text through the API that is no contact: not refused, not lost; the approval counts, marked."""
    from reports.incident_record import load_record
    from reports.live_view import build
    from reports.render import build_view

    run = Background(gated(tmp_path, "gate-stranger", timeout=60))
    incident_id, flow_run_id = run.paused_incident()
    resume(flow_run_id, run_input={"decision": "approve", "approver": "Zhou Ming", "comment": "go"})
    assert run.finish().is_completed()
    assert step_events(incident_id, "fail_over")[-1][:2] == ("outcome", "succeeded")  # the approval counted

    decision = next(e for e in events(incident_id) if e.status == "approved")
    assert decision.actor == "Zhou Ming (unverified: not a contact)"
    assert decision.summary == "Approve the fail-over: approved by Zhou Ming (unverified: not a contact): go"
    assert decision.data["approver"] == "Zhou Ming" and decision.data["approver_id"] is None
    assert decision.data["approver_verified"] is False and decision.data["approver_unverified"] == "not-a-contact"
    output = next(e for e in events(incident_id) if e.step_id == "approve_failover" and e.phase == "outcome")
    assert output.data["output"]["approver_unverified"] == "not-a-contact"

    record = load_record(incident_id)
    en, zh = build_view(record, "en"), build_view(record, "zh")
    assert [d["who"] for d in en["decisions"] if d["kind"] == "approved"] == \
        ["Zhou Ming (unverified: not a contact)"]
    assert [d["who"] for d in zh["decisions"] if d["kind"] == "approved"] == ["Zhou Ming（未核实：非通讯录联系人）"]
    gate_en = next(s for s in en["steps"] if s["id"] == "approve_failover")
    gate_zh = next(s for s in zh["steps"] if s["id"] == "approve_failover")
    assert gate_en["words"].startswith("approved by Zhou Ming (unverified: not a contact): go")
    assert gate_zh["words"].startswith("Zhou Ming（未核实：非通讯录联系人） 批准")
    assert any("approved by Zhou Ming (unverified: not a contact)" in row["summary"] for row in en["timeline"])
    assert any("Zhou Ming（未核实：非通讯录联系人） 批准" in row["summary"] for row in zh["timeline"])

    view = build(incident_id).markdown
    assert "approved by Zhou Ming (unverified: not a contact)" in view


def test_marks_in_both_languages() -> None:
    from reports.i18n import approver, unverified

    assert unverified({"approver": "钱丽 Qian Li", "approver_verified": True}) is None
    assert unverified({"approver": "Zhao Gang"}) is None  # recorded before approvers were checked: as recorded
    assert unverified({"approver_verified": False}) == "not-a-contact"
    reason = unverified({"approver_verified": False, "approver_unverified": "directory-unreadable"})
    assert approver("X", reason, "en") == "X (unverified: the contacts directory could not be read)"
    assert approver("X", reason, "zh") == "X（未核实：通讯录无法读取）"
    assert approver("钱丽 Qian Li", None, "zh") == "钱丽 Qian Li"


def test_an_unreadable_directory_marks_the_answer_and_leaves_the_form_free_text(tmp_path: Path) -> None:
    from firebreak.settings import reload_settings
    from tasks import approval

    contacts = tmp_path / "contacts.yaml"
    contacts.write_text("contacts: [\n  {id: qian-li, name: \"Qian Li\"\n")  # a half-saved edit: broken YAML
    try:
        with environment(FIREBREAK_CONTACTS_FILE=str(contacts)):
            reload_settings()
            assert approval._identify("qian-li") == approval.Approver("qian-li", unverified="directory-unreadable")
            assert approval._identify("qian-li").shown == "qian-li (unverified: the contacts directory could not be read)"
            form = approval._form(["scenario_lead"], "prompt")
            assert "anyOf" not in form.model_json_schema()["properties"]["approver"]
    finally:
        # Outside the block, once the variable is gone: reloaded inside it, the broken directory stayed the
        # settings of every later test in this process (a gate test paged from it, seen in a partial run).
        reload_settings()
