"""What a report measures from the record: milestones, durations, per-step results,
notifications, decisions and the seed commitment checks. Language-neutral.

Every figure is a `Fact`: the moment, and the timeline event it was read from (its seq),
so an auditor can find the line behind each number. Where the record cannot show a
figure, the fact carries why ("not measured — why"), never a guess:

- time to acknowledge: the first acknowledgement by a person or a monitor (a signed link, the
  CLI, the Prefect UI, a monitor's acknowledge); a runbook step setting the status is not one;
- time to mitigate: the first `mitigated` status, or the first success of a step the runbook
  declares `mitigates: true`, whichever came first;
- time to resolve and to close: their own status events (who, and why, as recorded).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from records.models import RunState
from reports.commitments import CheckResult, Evidence, check
from reports.i18n import unverified
from reports.i18n import word as i18n_word
from reports.i18n import word_en as i18n_word_en
from reports.incident_record import IncidentRecord
from runbooks.commitments import CATALOGUE, Measure
from runbooks.schema import Runbook

FINAL_RUN_STATES = {RunState.completed.value, RunState.failed.value, RunState.crashed.value, RunState.cancelled.value}
#: Actor prefixes of an acknowledgement by a person or a monitor (notifications.acknowledgement.service: `via:by`).
ACK_ACTORS = ("link:", "cli:", "ui:", "monitor:")
AUTOMATIC_ACTORS = ("runbook:", "firebreak", "drill-policy")


@dataclass(frozen=True)
class Fact:
    """One moment of the incident and where the record says so."""

    at: datetime | None
    seq: int | None = None  # the timeline event it came from
    by: str = ""  # who or what (the event's actor, or a person's name)
    how: str = ""  # e.g. "status", "step fail_over succeeded", "link"
    reason: str = ""  # as recorded (a status change's reason)
    #: when `at` is None: why it is not measured, {"en": …, "zh": …}
    missing: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Milestones:
    started: Fact
    detected: Fact
    acknowledged: Fact
    mitigated: Fact
    resolved: Fact
    closed: Fact
    run_ended: Fact

    def items(self) -> list[tuple[str, Fact]]:
        return [("started", self.started), ("detected", self.detected), ("acknowledged", self.acknowledged),
                ("mitigated", self.mitigated), ("resolved", self.resolved), ("closed", self.closed),
                ("run_ended", self.run_ended)]

    def durations(self) -> list[tuple[str, str, timedelta | None]]:
        """(key, measured from, duration): TTD from the start, the rest from detection."""
        return [(key, origin, delta) for key, origin, delta, _ in self.duration_facts()]

    def duration_facts(self) -> list[tuple[str, str, timedelta | None, Fact]]:
        def since(end: Fact, begin: Fact) -> timedelta | None:
            return end.at - begin.at if end.at and begin.at else None

        end = self.closed if self.closed.at else self.run_ended
        return [("ttd", "started", since(self.detected, self.started), self.detected),
                ("tta", "detected", since(self.acknowledged, self.detected), self.acknowledged),
                ("ttm", "detected", since(self.mitigated, self.detected), self.mitigated),
                ("ttr", "detected", since(self.resolved, self.detected), self.resolved),
                ("ttc", "detected", since(self.closed, self.detected), self.closed),
                ("total", "started", since(end, self.started), end)]


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _why(en: str, zh: str) -> dict[str, str]:
    return {"en": en, "zh": zh}


#: The incident's lifecycle statuses (records.models.IncidentStatus).
LIFECYCLE = ("triggered", "acknowledged", "mitigated", "resolved", "closed")


def _status_change(event: Any) -> bool:
    """A lifecycle transition (records.incidents.transition: status = data.to, data {from, to, implied}), not
    any note with a `from` and `to` (a level change, a command handover)."""
    data = event.data or {}
    return event.phase == "note" and isinstance(data.get("to"), str) and "from" in data \
        and event.status in LIFECYCLE and data["to"] == event.status


def _status_events(record: IncidentRecord, status: str) -> list[Any]:
    """Status transitions that reached `status` (directly, or implied by a jump past it)."""
    found = []
    for event in record.events:
        data = event.data or {}
        if _status_change(event) and (data["to"] == status or status in (data.get("implied") or [])):
            found.append(event)
    return found


def _reason(event: Any) -> str:
    # records.incidents.transition: "Status a → b[ (implies …)][: reason]"
    summary = event.summary or ""
    head, _, rest = summary.partition(": ")
    return rest if head.startswith("Status ") else ""


def _is_acknowledgement(event: Any) -> bool:
    return event.status == "acknowledged" and event.actor.startswith(ACK_ACTORS)


def milestones(record: IncidentRecord, runbook: Runbook | None = None) -> Milestones:
    incident = record.incident
    events = record.events
    first = events[0] if events else None
    received = sorted((t, a) for a in record.alerts if (t := _parse_time(getattr(a, "received_at", None))))
    detected = Fact(incident.triggered_at, first.seq if first else None, first.actor if first else incident.source,
                    "opened")
    if received and received[0][0] < incident.triggered_at:
        detected = Fact(received[0][0], detected.seq, f"monitor:{getattr(received[0][1], 'source', '')}", "alert")
    # A monitor's own start time (Alertmanager/Grafana `startsAt`) is when the problem began.
    began = [t for t in (_parse_time((getattr(a, "payload", None) or {}).get("startsAt")) for a in record.alerts)
             if t and t.year > 1]
    started = (Fact(min(began), None, "monitor", "startsAt")
               if began and detected.at is not None and min(began) < detected.at else detected)

    ack = next((e for e in events if _is_acknowledgement(e)), None)
    if ack is not None:
        data = ack.data or {}
        via, _, by = ack.actor.partition(":")
        acknowledged = Fact(ack.at, ack.seq, str(data.get("by") or by), str(data.get("via") or via))
    else:
        by_person = next((e for e in _status_events(record, "acknowledged")
                          if not e.actor.startswith(AUTOMATIC_ACTORS)), None)
        automatic = next(iter(_status_events(record, "acknowledged")), None)
        if by_person is not None:
            acknowledged = Fact(by_person.at, by_person.seq, by_person.actor, "status", _reason(by_person))
        elif automatic is not None:
            acknowledged = Fact(None, automatic.seq, automatic.actor, missing=_why(
                f"no person or monitor acknowledged; {automatic.actor} set the status at #{automatic.seq}",
                f"没有人员或监控确认；状态由 {automatic.actor} 在 #{automatic.seq} 设置"))
        else:
            acknowledged = Fact(None, missing=_why("nobody acknowledged", "无人确认"))

    status_mitigated = _status_fact(record, "mitigated", {})
    declared = {s.id for s in runbook.steps if s.mitigates} if runbook else set()
    step_mitigated = next((e for e in events if e.step_id in declared and e.phase == "outcome"
                           and e.status == "succeeded"), None)
    candidates = []
    if status_mitigated.at is not None:
        candidates.append(status_mitigated)
    if step_mitigated is not None:
        candidates.append(Fact(step_mitigated.at, step_mitigated.seq, step_mitigated.actor,
                               f"step {step_mitigated.step_id}"))
    if candidates:
        mitigated = min(candidates, key=lambda f: (f.at, f.seq))
    else:
        mitigated = Fact(None, missing=_why("nothing mitigated the incident (no `mitigated` status, no mitigating "
                                            "step succeeded)", "事件未被缓解（无「已缓解」状态，缓解步骤未成功）"))

    resolved = _status_fact(record, "resolved", _why("not resolved", "未解决"))
    monitor = next((e for e in events if e.status == "monitor-resolved"), None)
    if resolved.at and monitor is not None and monitor.seq < (resolved.seq or 0) and _resolved_by_monitor(record):
        resolved = Fact(resolved.at, resolved.seq, monitor.actor, f"monitor #{monitor.seq}", resolved.reason)
    closed = _status_fact(record, "closed", _why("not closed", "未关闭"))
    ended = next((e for e in reversed(events) if e.status.startswith("run-")
                  and e.status.removeprefix("run-") in FINAL_RUN_STATES), None)
    run_ended = (Fact(incident.run_ended_at or ended.at, ended.seq, ended.actor, ended.status.removeprefix("run-"))
                 if ended is not None else
                 Fact(incident.run_ended_at, missing=_why("the run has not ended", "运行尚未结束")))
    return Milestones(started, detected, acknowledged, mitigated, resolved, closed, run_ended)


def _status_fact(record: IncidentRecord, status: str, missing: dict[str, str]) -> Fact:
    event = next(iter(_status_events(record, status)), None)
    if event is None:
        return Fact(None, missing=missing)
    implied = status != (event.data or {}).get("to")
    return Fact(event.at, event.seq, event.actor, "implied" if implied else "status", _reason(event))


def _resolved_by_monitor(record: IncidentRecord) -> bool:
    """A wait step ended early because the monitor reported the alert resolved (tasks.wait_until)."""
    for event in record.events:
        output = (event.data or {}).get("output")
        if event.action == "wait_until" and event.status == "succeeded" and isinstance(output, dict) \
                and output.get("resolved_by_monitor"):
            return True
    return False


def after_closure(record: IncidentRecord) -> list[Any]:
    """Events recorded after the incident closed (a monitor's late resolve, a late acknowledgement …)."""
    closed = next(iter(_status_events(record, "closed")), None)
    if closed is None:
        return []
    return [e for e in record.events if e.seq > closed.seq and not e.status.startswith("run-")
            and e.status not in ("report-failed",)
            and not (closed.step_id and e.step_id == closed.step_id)]  # the closing step's own outcome


@dataclass(frozen=True)
class StepRow:
    id: str
    title: str  # English
    title_zh: str
    action: str | None
    status: str  # succeeded | failed | skipped | reused | started (no outcome) | not run | approved | rejected …
    attempts: int
    started: datetime | None
    ended: datetime | None
    policy: str | None
    output: Any  # the recorded output of its success (or what it observed before failing)
    error: str
    escalation: bool
    seqs: tuple[int, ...] = ()
    skip_reason: str = ""
    decision: dict[str, Any] = field(default_factory=dict)  # approval gates: the recorded decision

    @property
    def duration(self) -> timedelta | None:
        return self.ended - self.started if self.started and self.ended else None


def summarise_output(value: Any, limit: int = 240) -> str:
    """Raw output as compact JSON, cut to `limit` characters (for <details> and exports)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_rows(record: IncidentRecord, runbook: Runbook | None) -> list[StepRow]:
    by_step: dict[str, list[Any]] = {}
    for event in record.events:
        if event.step_id:
            by_step.setdefault(event.step_id, []).append(event)
    declared = {step.id: step for step in runbook.steps} if runbook else {}
    order = list(declared) + [s for s in by_step if s not in declared]
    rows = []
    for step_id in order:
        events = by_step.get(step_id, [])
        step = declared.get(step_id)
        base_id = step_id.split("__", 1)[0]
        escalation = "__" in step_id
        base = declared.get(base_id) if escalation else None
        if step is not None:
            title, title_zh = step.display_title, step.title_in("zh")
        elif base is not None:
            title, title_zh = f"Escalation of {base.display_title}", f"{base.title_in('zh')}（升级）"
        elif step_id.startswith("run_failed__"):  # flows.run_failure
            title, title_zh = "Run-failure alarm", "运行失败告警"
        else:
            title = title_zh = step_id
        final, output, error, action = ("not run" if not events else "started"), None, "", (step.action if step else None)
        attempts, started, ended, skip_reason = 0, None, None, ""
        decision: dict[str, Any] = {}
        for event in events:
            action = action or event.action
            data = event.data or {}
            if event.phase == "intent":
                attempts = max(attempts, event.attempt)
                started = started or event.at
            if event.action == "approval" and event.status in ("approved", "rejected", "approval-timed-out"):
                decision = {"status": event.status, "by": data.get("approver") or event.actor,
                            "unverified": unverified(data),
                            "decision": data.get("decision") or event.status, "comment": data.get("comment") or "",
                            "seq": event.seq}
            if event.phase == "outcome" or event.status in ("skipped", "reused"):
                final, ended = event.status, event.at
                started = started or event.at
                if event.status in ("succeeded", "reused"):
                    output, error = data.get("output"), ""
                elif event.status == "skipped":
                    skip_reason = event.error or _skip_reason(event.summary)
                else:
                    output, error = data.get("observed"), event.error or event.summary
        policy = step.on_failure.value if step else None
        rows.append(StepRow(step_id, title, title_zh, action, final, attempts, started, ended, policy, output, error,
                            escalation, tuple(e.seq for e in events), skip_reason, decision))
    return rows


def _skip_reason(summary: str) -> str:
    # flows.engine._record_skip: "<title>: skipped (<reason>)"
    _, _, rest = (summary or "").partition(": skipped (")
    return rest[:-1] if rest.endswith(")") else rest


def evidence(record: IncidentRecord) -> dict[str, Evidence]:
    """What the records say about each step, for the commitment checks."""
    times: dict[str, dict[str, Any]] = {}
    for event in record.events:
        if not event.step_id:
            continue
        entry = times.setdefault(event.step_id, {"first_started": None, "first_succeeded": None, "final": None,
                                                 "output": None, "started_seq": None, "succeeded_seq": None})
        if event.phase == "intent" and entry["first_started"] is None:
            entry["first_started"], entry["started_seq"] = event.at, event.seq
        if event.phase == "outcome" or event.status in ("skipped", "reused"):
            entry["final"] = event.status
            if event.status in ("succeeded", "reused") and entry["first_succeeded"] is None:
                entry["first_succeeded"], entry["succeeded_seq"] = event.at, event.seq
                entry["output"] = (event.data or {}).get("output")
    return {k: Evidence(v["first_started"], v["first_succeeded"], v["final"], v["output"], v["started_seq"],
                        v["succeeded_seq"]) for k, v in times.items()}


@dataclass(frozen=True)
class Measurement:
    """A service figure a runbook step recorded (`record` with data.measurements)."""

    metric: str
    value: float
    seq: int
    step_id: str | None
    at: datetime


def measurements(record: IncidentRecord) -> dict[str, list[Measurement]]:
    found: dict[str, list[Measurement]] = {}
    for event in record.events:
        figures = (event.data or {}).get("measurements") if event.action == "record" else None
        if not isinstance(figures, dict):
            continue
        for metric, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found.setdefault(metric, []).append(Measurement(metric, float(value), event.seq, event.step_id,
                                                                event.at))
    return found


def _first_delivery(record: IncidentRecord) -> Fact:
    """The first page delivered: its notify step's delivery note on the timeline (tasks.notify._record)."""
    event = next((e for e in record.events if e.action == "notify" and e.phase == "note" and e.status == "delivered"),
                 None)
    if event is not None:
        return Fact(event.at, event.seq, str((event.data or {}).get("contact") or ""), f"step {event.step_id}")
    delivered = sorted((n.sent_at, n.contact) for n in record.notifications if n.status == "delivered" and n.sent_at)
    if delivered:
        return Fact(delivered[0][0], None, delivered[0][1], "notification")
    return Fact(None, missing=_why("no page was delivered", "没有送达任何通知"))


def _role_reached(record: IncidentRecord, role: str) -> Fact:
    for event in record.events:
        data = event.data or {}
        if event.action == "notify" and event.phase == "note" and event.status == "delivered":
            # "notify <contact> (<roles>) via …"
            roles = (event.summary or "").partition("(")[2].partition(")")[0]
            if role in [r.strip() for r in roles.split(",")]:
                return Fact(event.at, event.seq, str(data.get("contact") or ""), f"step {event.step_id}")
    return Fact(None)


def _role_acknowledged(record: IncidentRecord, role: str, names: dict[str, str]) -> Fact | None:
    """The first acknowledgement by someone paged as `role` (None: nobody holding it was paged).
    A repeat counts: the person answered, even if someone else had acknowledged the incident first."""
    holders = {n.contact for n in record.notifications if role in [r.strip() for r in (n.role or "").split(",")]}
    if not holders:
        return None
    known = holders | {names[c] for c in holders if c in names}
    for ack in sorted(acknowledgements(record), key=lambda a: a.at):
        if ack.contact in holders or (ack.contact is None and ack.by in known):
            return Fact(ack.at, ack.seq, ack.by, ack.via)
    en, zh = i18n_word_en(role), i18n_word(role, "zh")
    return Fact(None, missing=_why(f"nobody paged as {en} acknowledged", f"被呼叫的{zh}人员均未确认"))


def commitment_checks(record: IncidentRecord, runbook: Runbook | None, marks: Milestones,
                      names: dict[str, str] | None = None) -> list[CheckResult]:
    """Every commitment of the seed plan, always: checked where the runbook declares it (or recorded its
    figure), otherwise "not measured" with the reason. names: contact id → name (an acknowledgement
    given by name, from the CLI, is matched to the contact by it)."""
    incident = record.incident
    declared = {ref.id: ref for ref in runbook.commitments} if runbook else {}
    steps = evidence(record)
    figures = measurements(record)
    titles = {s.id: {"en": s.display_title, "zh": s.title_in("zh")} for s in runbook.steps} if runbook else {}
    results = []
    for commitment in CATALOGUE.values():
        results.append(check(commitment, declared.get(commitment.id), level=incident.level, detected=marks.detected,
                             acknowledged=marks.acknowledged, resolved=marks.resolved,
                             first_delivery=_first_delivery(record),
                             reached=_role_reached(record, commitment.role) if commitment.role else Fact(None),
                             steps=steps, figures=figures.get(commitment.metric or "", []),
                             parameters=incident.parameters or {}, titles=titles,
                             run_ended=incident.run_state in FINAL_RUN_STATES,
                             runbook_id=incident.runbook_id,
                             role_acknowledged=(_role_acknowledged(record, commitment.role, names or {})
                                                if commitment.role and commitment.measure is Measure.acknowledged
                                                else None)))
    return results


@dataclass(frozen=True)
class Acknowledgement:
    by: str
    via: str
    at: datetime
    seq: int | None
    contact: str | None
    effective: bool
    comment: str
    last_at: datetime | None = None  # renewed by a repeat of the same acknowledger (records.acknowledgements)


def acknowledgements(record: IncidentRecord) -> list[Acknowledgement]:
    """Every acknowledgement, each with the timeline event that recorded it."""
    events = [e for e in record.events if e.status in ("acknowledged", "ack-repeated")
              and e.actor.startswith(ACK_ACTORS)]
    found = []
    for ack in record.acknowledgements:
        actor = f"{getattr(ack, 'via', '')}:{getattr(ack, 'by', '')}"
        match = next((e for e in events if e.actor == actor and abs((e.at - ack.at).total_seconds()) < 1), None)
        found.append(Acknowledgement(ack.by, ack.via, ack.at, match.seq if match else None,
                                     getattr(ack, "contact_id", None), bool(getattr(ack, "effective", False)),
                                     getattr(ack, "comment", None) or "", getattr(ack, "last_at", None)))
    return found


@dataclass(frozen=True)
class NotificationRow:
    contact: str
    role: str
    channel: str
    status: str
    attempts: int
    created: datetime | None
    sent: datetime | None
    #: only where this contact acknowledged (not the incident's acknowledgement copied onto every page)
    acknowledged: datetime | None
    acknowledged_by: str | None
    acknowledged_seq: int | None
    escalation: str | None  # e.g. "tier 2" or "escalation of fail_over"
    error: str | None
    step_id: str
    tier: int
    locale: str | None


def notification_rows(record: IncidentRecord, names: dict[str, str] | None = None) -> list[NotificationRow]:
    """Each page: sent, delivered, and acknowledged — by whom — only where that person acknowledged.
    names: contact id → the person's name (an acknowledgement by name, from the CLI, is matched by it)."""
    names = names or {}
    acks = acknowledgements(record)
    rows = []
    for n in record.notifications:
        tier = getattr(n, "tier", None) or 1
        cycle = getattr(n, "cycle", None)
        escalation = None
        if "__" in n.step_id:
            escalation = f"escalation of {n.step_id.split('__', 1)[0]}"
        elif tier > 1:
            escalation = f"tier {tier}" + (f", cycle {cycle}" if cycle else "")
        elif getattr(n, "event", None) == "escalated":
            escalation = "escalated"
        mine = next((a for a in acks if a.contact == n.contact
                     or (a.contact is None and a.by in (n.contact, names.get(n.contact)))), None)
        if mine is not None and n.created_at and (mine.last_at or mine.at) < n.created_at:
            mine = None  # acknowledged (last) before this page was sent: not an answer to it
        rows.append(NotificationRow(n.contact, n.role or "", n.channel, n.status, n.attempts, n.created_at,
                                    n.sent_at, mine.at if mine else None, mine.by if mine else None,
                                    mine.seq if mine else None, escalation, n.error, n.step_id, tier,
                                    getattr(n, "locale", None)))
    return rows


@dataclass(frozen=True)
class DecisionRow:
    at: datetime
    who: str
    kind: str  # approved | rejected | timed-out | escalated | acknowledged | ack-repeated | status
    detail: str  # language-neutral detail: status word, policy, via …
    comment: str
    seq: int | None
    step_id: str | None = None
    #: A gate's approver the contacts do not know: why (reports.i18n.unverified), else None
    unverified: str | None = None


def decision_rows(record: IncidentRecord) -> list[DecisionRow]:
    """Gate decisions (approved, rejected, timed out — by whom, exactly as recorded), acknowledgements,
    and status changes made by people."""
    rows = []
    for ack in acknowledgements(record):
        rows.append(DecisionRow(ack.at, ack.by, "acknowledged" if ack.effective else "ack-repeated", ack.via,
                                ack.comment, ack.seq))
    timeouts = {e.step_id: (e.data or {}) for e in record.events if e.status == "awaiting-approval"}
    for event in record.events:
        data = event.data or {}
        if event.action == "approval" and event.status in ("approved", "rejected"):
            rows.append(DecisionRow(event.at, str(data.get("approver") or event.actor), event.status,
                                    "drill policy" if event.actor == "drill-policy" else "",
                                    str(data.get("comment") or ""), event.seq, event.step_id, unverified(data)))
        elif event.action == "approval" and event.status == "approval-timed-out":
            asked = timeouts.get(event.step_id, {})
            rows.append(DecisionRow(event.at, "—", "timed-out", str(data.get("decision") or ""),
                                    f"{asked.get('timeout', '?')}s, on_timeout: {asked.get('on_timeout', '?')}",
                                    event.seq, event.step_id))
        elif event.action == "approval" and event.status == "approval-escalated":
            rows.append(DecisionRow(event.at, "—", "escalated", "", "", event.seq, event.step_id))
        elif _status_change(event) and not event.actor.startswith(AUTOMATIC_ACTORS) \
                and not _is_acknowledgement(event):
            rows.append(DecisionRow(event.at, event.actor, "status", str(data["to"]), _reason(event), event.seq))
    return sorted(rows, key=lambda row: (row.at, row.seq or 0))


@dataclass(frozen=True)
class Series:
    """What one wait_until step watched, for the report's chart."""

    step_id: str
    condition: str
    bounds: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    satisfied: bool
    seq: int


def watched_series(record: IncidentRecord) -> list[Series]:
    found = []
    for event in record.events:
        if event.action != "wait_until" or event.phase != "outcome":
            continue
        data = event.data or {}
        body = data.get("output") if event.status == "succeeded" else data.get("observed")
        if isinstance(body, dict) and body.get("samples"):
            found.append(Series(event.step_id or "", str(body.get("condition") or ""), list(body.get("bounds") or []),
                                list(body["samples"]), event.status == "succeeded", event.seq))
    return found
