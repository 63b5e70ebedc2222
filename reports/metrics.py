"""What a report measures from the record: milestones, durations, per-step results,
notifications, decisions and the seed commitment checks. Language-neutral."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from records.models import RunState
from reports.commitments import CheckResult, StepTimes, check
from reports.incident_record import IncidentRecord
from runbooks.commitments import CATALOGUE
from runbooks.schema import Runbook

FINAL_RUN_STATES = {RunState.completed.value, RunState.failed.value, RunState.crashed.value, RunState.cancelled.value}
OUTPUT_LIMIT = 240


@dataclass(frozen=True)
class Milestones:
    started: datetime
    detected: datetime
    acknowledged: datetime | None
    mitigated: datetime | None
    resolved: datetime | None
    closed: datetime | None
    run_ended: datetime | None

    def items(self) -> list[tuple[str, datetime | None]]:
        return [("started", self.started), ("detected", self.detected), ("acknowledged", self.acknowledged),
                ("mitigated", self.mitigated), ("resolved", self.resolved), ("closed", self.closed),
                ("run_ended", self.run_ended)]

    def durations(self) -> list[tuple[str, str, timedelta | None]]:
        """(key, measured from, duration): TTD from the start, the rest from detection."""
        def since(end: datetime | None, begin: datetime) -> timedelta | None:
            return end - begin if end else None

        end = self.closed or self.run_ended
        return [("ttd", "started", since(self.detected, self.started)),
                ("tta", "detected", since(self.acknowledged, self.detected)),
                ("ttm", "detected", since(self.mitigated, self.detected)),
                ("ttr", "detected", since(self.resolved, self.detected)),
                ("total", "started", since(end, self.started))]


@dataclass(frozen=True)
class StepRow:
    id: str
    title: str
    action: str | None
    status: str  # succeeded | failed | skipped | reused | started (no outcome) | not run
    attempts: int
    started: datetime | None
    ended: datetime | None
    policy: str | None
    output: str
    escalation: bool

    @property
    def duration(self) -> timedelta | None:
        return self.ended - self.started if self.started and self.ended else None


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


def milestones(record: IncidentRecord) -> Milestones:
    incident = record.incident
    received = [t for t in (_parse_time(getattr(a, "received_at", None)) for a in record.alerts) if t]
    # A monitor's own start time (Alertmanager/Grafana `startsAt`) is when the problem began.
    began = [t for t in (_parse_time((getattr(a, "payload", None) or {}).get("startsAt")) for a in record.alerts)
             if t and t.year > 1]
    detected = min([incident.triggered_at, *received])
    started = min([detected, *began])
    return Milestones(started, detected, incident.acknowledged_at, incident.mitigated_at, incident.resolved_at,
                      incident.closed_at, incident.run_ended_at)


def summarise_output(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= OUTPUT_LIMIT else text[: OUTPUT_LIMIT - 1] + "…"


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
        escalation = step_id.endswith("__escalation")
        base = declared.get(step_id.removesuffix("__escalation")) if escalation else None
        title = (step.display_title if step else
                 f"Escalation of {base.display_title}" if base else
                 "Run-failure alarm" if step_id.startswith("run_failed__") else step_id)  # flows.run_failure
        final, output, action = ("not run" if not events else "started"), "", (step.action if step else None)
        attempts, started, ended = 0, None, None
        for event in events:
            action = action or event.action
            if event.phase == "intent":
                attempts = max(attempts, event.attempt)
                started = started or event.at
            if event.phase == "outcome" or event.status in ("skipped", "reused"):
                final, ended = event.status, event.at
                started = started or event.at
                if event.status in ("succeeded", "reused"):
                    output = summarise_output((event.data or {}).get("output"))
                else:
                    output = summarise_output(event.error or event.summary)
        policy = step.on_failure.value if step else None
        rows.append(StepRow(step_id, title, action, final, attempts, started, ended, policy, output, escalation))
    return rows


def evidence_times(record: IncidentRecord) -> dict[str, StepTimes]:
    times: dict[str, dict[str, Any]] = {}
    for event in record.events:
        if not event.step_id:
            continue
        entry = times.setdefault(event.step_id, {"first_started": None, "first_succeeded": None, "final": None,
                                                 "output": None})
        if event.phase == "intent" and entry["first_started"] is None:
            entry["first_started"] = event.at
        if event.phase == "outcome" or event.status in ("skipped", "reused"):
            entry["final"] = event.status
            if event.status in ("succeeded", "reused") and entry["first_succeeded"] is None:
                entry["first_succeeded"] = event.at
                entry["output"] = (event.data or {}).get("output")
    return {k: StepTimes(v["first_started"], v["first_succeeded"], v["final"], v["output"]) for k, v in times.items()}


def commitment_checks(record: IncidentRecord, runbook: Runbook | None, marks: Milestones) -> list[CheckResult]:
    if runbook is None:
        return []
    incident = record.incident
    delivered = [n.sent_at for n in record.notifications if n.status == "delivered" and n.sent_at]
    steps = evidence_times(record)
    results = []
    for ref in runbook.commitments:
        commitment = CATALOGUE.get(ref.id)
        if commitment is None:
            continue  # the validator refuses unknown ids; a runbook edited since cannot break a report
        results.append(check(commitment, ref, level=incident.level, detected=marks.detected,
                             acknowledged=marks.acknowledged, resolved=marks.resolved,
                             first_delivery=min(delivered) if delivered else None, steps=steps,
                             parameters=incident.parameters or {},
                             run_ended=incident.run_state in FINAL_RUN_STATES))
    return results


@dataclass(frozen=True)
class NotificationRow:
    contact: str
    role: str
    channel: str
    status: str
    attempts: int
    created: datetime | None
    sent: datetime | None
    acknowledged: datetime | None
    acknowledged_by: str | None
    escalation: str | None  # e.g. "tier 2" or "escalation of fail_over"
    error: str | None
    step_id: str


def notification_rows(record: IncidentRecord) -> list[NotificationRow]:
    rows = []
    for n in record.notifications:
        tier = getattr(n, "tier", None)
        cycle = getattr(n, "cycle", None)
        escalation = None
        if n.step_id.endswith("__escalation"):
            escalation = f"escalation of {n.step_id.removesuffix('__escalation')}"
        elif tier and tier > 1:
            escalation = f"tier {tier}" + (f", cycle {cycle}" if cycle else "")
        elif getattr(n, "event", None) == "escalated":
            escalation = "escalated"
        rows.append(NotificationRow(n.contact, n.role or "", n.channel, n.status, n.attempts, n.created_at,
                                    n.sent_at, n.acknowledged_at, getattr(n, "acknowledged_by", None), escalation,
                                    n.error, n.step_id))
    return rows


@dataclass(frozen=True)
class DecisionRow:
    at: datetime
    who: str
    decision: str
    comment: str


def decision_rows(record: IncidentRecord) -> list[DecisionRow]:
    rows = []
    for ack in record.acknowledgements:
        effective = getattr(ack, "effective", False)
        rows.append(DecisionRow(ack.at, getattr(ack, "by", "?"),
                                "acknowledged" + (" (stopped escalation)" if effective else "")
                                + f" via {getattr(ack, 'via', '?')}", getattr(ack, "comment", None) or ""))
    for event in record.events:
        data = event.data or {}
        if event.status in ("approved", "rejected") or "decision" in data:
            rows.append(DecisionRow(event.at, str(data.get("by") or event.actor),
                                    str(data.get("decision") or event.status),
                                    str(data.get("comment") or event.error or event.summary)))
        elif event.phase == "note" and data.get("to") and not event.actor.startswith(("runbook:", "firebreak")):
            rows.append(DecisionRow(event.at, event.actor, f"status → {data['to']}", event.summary))
    return sorted(rows, key=lambda row: row.at)
