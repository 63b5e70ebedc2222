"""The live incident view: one Markdown artifact per incident in Prefect, kept current while it runs.

Key `incident-<incident id in lowercase>` (e.g. `incident-inc-2026-0001`; Prefect's artifact keys
are lowercase letters, digits and dashes): the Artifacts page lists one per incident, and its
latest version is the incident as it stands: status and level, the commander, who was paged on
which channel and who acknowledged, gates waiting for a decision, what runs now and what comes
next, the recent timeline, what an operator can do, and the link to the report once there is one.

Beside it, the tags of the incident's flow run say whether a person is needed, so the Prefect
dashboard's tag filter finds those runs: `awaiting-approval` while a gate waits for a decision,
`needs-attention` while a gate waits or the incident is open with no run driving it
(records.models.Incident.attention_reason). They are removed when that is no longer so.

Who updates it: while a runbook runs, one `LiveViewUpdater` thread per run (flows.engine). It is
woken by the run's own timeline appends (records.incidents.on_change, after each commit, in
process), waits a moment so a burst of events becomes one update, publishes at most once a
second, and publishes only when the view or the tags changed: the steps never call Prefect for
it. It also looks at the incident's newest event sequence once a second, which catches what other
processes record (an acknowledgement by link, an operator's action from the CLI). When no run
drives the incident, whoever changes it publishes it once (flows.operator_actions, the flow-run
hooks). Publishing never raises: Prefect unreachable is logged, and the next change tries again.

A run's first view waits until its first page was tried (flows.engine releases it), at most a few
seconds: in a burst of new incidents the pages go first, and a run that pages and ends at once
publishes one view, its final one. With the view, at most every ANCHOR_INTERVAL_SECONDS, the
incident's audit head is anchored in Prefect (records.audit_anchor) as the run moves it.
"""
from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from firebreak.settings import get_settings
from records import acknowledgements, incidents
from records.audit_anchor import anchor
from records.models import EventPhase, Incident, IncidentStatus, RunState, TimelineEvent, utcnow
from reports.publish import artifact_key as report_artifact_key
from reports.render import escape_markdown as md
from reports.render import report_path

LOGGER = logging.getLogger("firebreak.live_view")

AWAITING_APPROVAL = "awaiting-approval"
NEEDS_ATTENTION = "needs-attention"
#: The tags the live view sets and removes on the incident's flow run; other tags are left alone.
MANAGED_TAGS = (AWAITING_APPROVAL, NEEDS_ATTENTION)
#: Approval events (tasks.approval) after which the gate still waits for a person.
_WAITING = {"awaiting-approval", "approval-escalated"}
#: While a run drives the incident, its audit head is anchored in Prefect with the live view, at most
#: this often (records.audit_anchor; the run's end anchors its final head with the report).
ANCHOR_INTERVAL_SECONDS = 10.0
RECENT_EVENTS = 12
PAGES_SHOWN = 40


def artifact_key(incident_id: str) -> str:
    """`incident-inc-2026-0001`: the incident id in lowercase, anything but [a-z0-9-] as a dash."""
    return "incident-" + re.sub(r"[^a-z0-9-]", "-", incident_id.lower())


@dataclass(frozen=True)
class LiveView:
    incident_id: str
    flow_run_id: str | None
    markdown: str
    #: The managed tags the incident's flow run should carry now.
    tags: frozenset[str]
    #: A digest of what the view says (without the "updated at" line), to skip publishing no change.
    digest: str
    waiting_gates: tuple[str, ...] = ()


# --- what the view says ------------------------------------------------------------------------------


def _ui_base() -> str | None:
    try:
        from prefect.settings import PREFECT_UI_URL

        base = PREFECT_UI_URL.value()
    except Exception:  # noqa: BLE001  (no Prefect settings: links are a courtesy)
        base = None
    return base.rstrip("/") if base else None


def _clock(at: datetime | None, zone: ZoneInfo) -> str:
    if at is None:
        return "—"
    return f"{at:%H:%M:%S}Z ({at.astimezone(zone):%H:%M} {zone.key.split('/')[-1].replace('_', ' ')})"


def _directory() -> Any:
    try:
        from notifications.contacts import load_directory

        return load_directory(get_settings().contacts_file)
    except Exception:  # noqa: BLE001  (names are a courtesy; ids are shown without them)
        return None


def _runbook(incident: Incident) -> Any:
    from tasks.catalog import load_runbook  # the action catalogue imports Prefect; only needed here

    try:
        return load_runbook(incident.runbook_id).runbook
    except Exception:  # noqa: BLE001  (removed or broken since: the view shows what the timeline says)
        return None


def _steps(runbook: Any, events: list[TimelineEvent], flow_run_id: str | None) -> list[tuple[str, str, str]]:
    """(step id, title, state) in runbook order for this flow run: not started | running | succeeded |
    failed | skipped | waiting (a gate waiting for a decision)."""
    state: dict[str, str] = {}
    for event in events:
        if not event.step_id or "__" in event.step_id:
            continue  # escalations, alarms, level-change pages: not runbook steps
        if flow_run_id is not None and event.flow_run_id not in (flow_run_id, None):
            continue
        if event.phase == EventPhase.intent.value:
            state[event.step_id] = "running"
        elif event.phase == EventPhase.outcome.value:
            state[event.step_id] = "succeeded" if event.status == "succeeded" else "failed"
        elif event.status == "reused":
            state[event.step_id] = "succeeded"
        elif event.status == "skipped":
            state[event.step_id] = "skipped"
        elif event.action == "approval" and event.status in _WAITING:
            state[event.step_id] = "waiting"
        elif event.action == "approval" and event.status in ("approved", "rejected"):
            state[event.step_id] = "decided"
    if runbook is None:
        return [(step_id, step_id.replace("_", " "), s) for step_id, s in state.items()]
    return [(s.id, s.display_title, state.get(s.id, "not started")) for s in runbook.steps]


def _events(incident_id: str, flow_run_id: str | None) -> tuple[list[TimelineEvent], list[TimelineEvent]]:
    """The events of the incident's current run (its steps' states) and the newest few: not the whole
    timeline, which an alert storm can make tens of thousands of events long."""
    from sqlalchemy import select

    from records.db import read_scope

    with read_scope() as session:
        newest = list(session.scalars(select(TimelineEvent).where(TimelineEvent.incident_id == incident_id)
                                      .order_by(TimelineEvent.seq.desc()).limit(RECENT_EVENTS)))
        if flow_run_id is None:
            return [], newest[::-1]
        of_run = list(session.scalars(select(TimelineEvent).where(TimelineEvent.incident_id == incident_id,
                                                                  TimelineEvent.flow_run_id == flow_run_id)
                                      .order_by(TimelineEvent.seq)))
    return of_run, newest[::-1]


def build(incident_id: str, now: datetime | None = None) -> LiveView:
    """The incident's live view, from the records."""
    incident = incidents.get_incident(incident_id)
    run_events, recent = _events(incident.id, incident.flow_run_id)
    pages = incidents.notifications(incident_id)
    acks = acknowledgements.list_acknowledgements(incident_id)
    runbook = _runbook(incident)
    directory = _directory()
    zone = ZoneInfo(get_settings().local_timezone)
    ui = _ui_base()

    def name(contact_id: str | None) -> str:
        if not contact_id:
            return "—"
        contact = directory.by_id.get(contact_id) if directory is not None else None
        return f"{contact.name} ({contact_id})" if contact else contact_id

    run_live = incident.run_state in (RunState.running.value, RunState.pending.value)
    steps = _steps(runbook, run_events, incident.flow_run_id)
    waiting = tuple(title for _id, title, state in steps if state == "waiting") if run_live else ()
    tags = set()
    if waiting:
        tags |= {AWAITING_APPROVAL, NEEDS_ATTENTION}
    if incident.needs_attention:
        tags.add(NEEDS_ATTENTION)

    run_url = f"{ui}/runs/flow-run/{incident.flow_run_id}" if ui and incident.flow_run_id else None
    lines: list[str] = []
    title = f"{incident.id} · {md(incident.title)}" + (" · DRILL" if incident.drill else "")
    lines += [f"# {title}", ""]
    if incident.needs_attention:
        lines += [f"> **NEEDS ATTENTION:** {md(incident.attention_reason)}. A person must take over: resolve it, "
                  "close it with a reason, or run the runbook again (see *What you can do*).", ""]
    for gate in waiting:
        where = f"[the paused run]({run_url})" if run_url else "the paused run"
        lines += [f"> **Waiting for a decision:** {md(gate)}. Open {where} and use **Resume** to approve or "
                  "reject it.", ""]

    try:
        from notifications.command import commander_of

        commander = commander_of(incident).shown
    except Exception as exc:  # noqa: BLE001  (a broken contacts file: say so, show the rest)
        commander = f"unknown ({type(exc).__name__})"
    status_at = {IncidentStatus.triggered.value: incident.triggered_at,
                 IncidentStatus.acknowledged.value: incident.acknowledged_at,
                 IncidentStatus.mitigated.value: incident.mitigated_at,
                 IncidentStatus.resolved.value: incident.resolved_at,
                 IncidentStatus.closed.value: incident.closed_at}.get(incident.status)
    run_text = incident.run_state + (f" · [flow run]({run_url})" if run_url else "")
    lines += [f"| Status | **{incident.status}** since {_clock(status_at, zone)} |", "|---|---|",
              f"| Level | **{incident.level}** |",
              f"| Commander | {md(commander)} |",
              f"| Runbook | {md(incident.runbook_id)} v{md(incident.runbook_version)} · run {run_text} |",
              f"| Opened | {_clock(incident.triggered_at, zone)} from {md(incident.source)} |", ""]

    lines += ["## Now and next", ""]
    running = [title for _id, title, state in steps if state == "running"]
    upcoming = [title for _id, title, state in steps if state == "not started"]
    if run_live:
        lines.append(f"- **Now:** {md(', '.join(running)) if running else 'between steps'}")
        if waiting:
            lines.append(f"- **Waiting for a decision:** {md(', '.join(waiting))}")
        lines.append(f"- **Next:** {md(', '.join(upcoming[:3])) + (' …' if len(upcoming) > 3 else '') if upcoming else 'the run ends'}")
    elif incident.status == IncidentStatus.closed.value:
        lines.append("- Closed. Nothing more to do but the post-incident review (`review-incident`).")
    elif incident.status == IncidentStatus.resolved.value:
        lines.append("- Resolved: close it with a reason once the responders have stood down.")
    else:
        lines.append(f"- No run drives it (run {incident.run_state}): a person must resolve or close it, or "
                     "run the runbook again.")
    lines.append("")

    lines += ["## Paged", ""]
    if pages:
        by_page: dict[str, Any] = {}
        for row in pages:
            key = row.page_key or row.idempotency_key
            kept = by_page.get(key)
            if kept is None or row.status == "delivered" or kept.status != "delivered":
                by_page[key] = row
        shown = list(by_page.values())[-PAGES_SHOWN:]
        # Three columns: the Prefect UI cuts a wider table off at the right of its artifact view (the
        # status column was hidden at 1400 px). The channel of each page is in the report and the timeline.
        lines += ["| who (role) | page | status |", "|---|---|---|"]
        for row in shown:
            tier = f"tier {row.tier}" + (f" · round {row.cycle + 1}" if row.cycle else "")
            step = (row.step_id or "").split("__")[0]
            acked = (f"; acknowledged by {md(row.acknowledged_by or 'them')} {_clock(row.acknowledged_at, zone)}"
                     if row.acknowledged_at else "")
            role = f" ({md(row.role)})" if row.role else ""
            lines.append(f"| {md(name(row.contact))}{role} | {md(step)} · {tier} | {md(row.status)}{acked} |")
        if len(by_page) > PAGES_SHOWN:
            lines.append(f"\n({len(by_page) - PAGES_SHOWN} earlier pages not shown; `firebreak timeline "
                         f"{incident.id}` lists all)")
    else:
        lines.append("Nobody paged yet.")
    lines.append("")
    if acks:
        first = next((a for a in acks if a.effective), acks[0])
        lines.append(f"**Acknowledged** by {md(first.by)} via {md(first.via)} at {_clock(first.at, zone)}"
                     + (f" — {md(first.comment)}" if first.comment else "")
                     + (f" ({len(acks) - 1} more acknowledgement(s) recorded)" if len(acks) > 1 else ""))
    else:
        lines.append("**Not acknowledged yet.**")
    lines.append("")

    lines += ["## Recent timeline", "", "| # | time | who | what |", "|---|---|---|---|"]
    for event in recent:
        what = event.summary + (f" ✗ {event.error}" if event.error else "")
        what = what if len(what) <= 240 else what[:239] + "…"
        lines.append(f"| {event.seq} | {_clock(event.at, zone)} | {md(event.actor)} | {md(what)} |")
    lines.append("")

    lines += ["## Report", ""]
    if report_path(incident.id, "en", "html").exists():
        key = report_artifact_key(incident.id)
        link = f"[{key}]({ui}/artifacts/key/{key})" if ui else f"`{key}`"
        served = f"{get_settings().public_url.rstrip('/')}/reports/{incident.id}"
        lines.append(f"Report: {link} (Prefect artifact) · served: {served} · file: "
                     f"`{report_path(incident.id, 'en', 'html')}`")
    else:
        lines.append("Written when the run ends (artifact `" + report_artifact_key(incident.id) + "`); "
                     f"render it now with `firebreak report {incident.id}`.")
    lines.append("")

    lines += ["## What you can do", "",
              "Deployments `incident-acknowledge`, `incident-resolve`, `incident-close`, `incident-note`, "
              "`incident-level`, `incident-handover`, `incident-rerun`, `incident-resume` and `incident-cancel-run` "
              f"(Deployments page → Run → Custom run), or `firebreak incident <action> {incident.id} --by <contact> …`.",
              ""]
    body = "\n".join(lines)
    digest = hashlib.sha256((body + "|" + ",".join(sorted(tags))).encode()).hexdigest()
    stamp = f"_Updated {_clock(now or utcnow(), zone)} from the records (live view of {incident.id})._\n"
    return LiveView(incident.id, incident.flow_run_id, body + "\n" + stamp, frozenset(tags), digest, waiting)


# --- publishing ----------------------------------------------------------------------------------


class _Publisher:
    """Creates the artifact and sets the flow run's tags, remembering what it last did."""

    def __init__(self) -> None:
        self.digest: str | None = None
        self.tags: dict[str, list[str]] = {}  # flow run id → its tags as last read or written

    def publish(self, view: LiveView, *, force: bool = False) -> bool:
        if not force and view.digest == self.digest:
            return False
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate

        with get_client(sync_client=True) as client:
            client.create_artifact(ArtifactCreate(
                key=artifact_key(view.incident_id), type="markdown", data=view.markdown,
                flow_run_id=UUID(view.flow_run_id) if view.flow_run_id else None,
                description=f"Live view of {view.incident_id}: status, level, commander, pages, gates, next step",
            ))
            if view.flow_run_id:
                current = self.tags.get(view.flow_run_id)
                if current is None:
                    current = list(client.read_flow_run(UUID(view.flow_run_id)).tags or [])
                wanted = [t for t in current if t not in MANAGED_TAGS] + sorted(view.tags)
                if sorted(wanted) != sorted(current):
                    client.update_flow_run(UUID(view.flow_run_id), tags=wanted)
                self.tags[view.flow_run_id] = wanted
        self.digest = view.digest
        return True


def publish_live_view(incident_id: str) -> bool:
    """Build and publish the incident's live view once (after a change no run will publish). Never
    raises; False if it could not be published."""
    try:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():  # no server to publish to (a CLI action with no Prefect up)
            LOGGER.info("live view of %s not published: no Prefect server (PREFECT_API_URL) is set", incident_id)
            return False
        return _Publisher().publish(build(incident_id), force=True)
    except Exception as exc:  # noqa: BLE001  (Prefect unreachable: the records hold the truth)
        LOGGER.warning("live view of %s not published: %s: %s", incident_id, type(exc).__name__, exc)
        return False


class LiveViewUpdater:
    """Keeps one incident's live view current while a run drives it (see the module docstring).

    follow(incident id) starts it (once the run knows its incident); stop() publishes the final
    view, synchronously, and ends the thread."""

    def __init__(self, *, settle: float = 0.25, min_interval: float = 1.0, poll: float = 1.0,
                 first_view_wait: float = 0.0) -> None:
        self.settle, self.min_interval, self.poll = settle, min_interval, poll
        #: How long the first view may wait for release() (see there); 0: at once.
        self.first_view_wait = first_view_wait
        self._released = threading.Event()
        self._publishing = threading.Lock()  # see _update
        self.incident_id: str | None = None
        self.publishes = 0
        self._publisher = _Publisher()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Any = None
        self._seen_seq = -1
        self._last_publish = 0.0
        self._last_anchor = 0.0
        self._anchored_seq = -1

    def follow(self, incident_id: str) -> None:
        if self.incident_id is not None:
            return
        self.incident_id = incident_id
        self._seed_tags()
        self._unsubscribe = incidents.on_change(self._changed)
        # In a copy of this thread's context: Prefect's settings (the API URL a run executor set for
        # its thread) and client live in context variables.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), daemon=True,
                                        name=f"live-view-{incident_id}")
        self._thread.start()
        self._wake.set()  # the first view as soon as it may (release)

    def release(self) -> None:
        """The run's first page is out: the first view may go now. Until then (or first_view_wait)
        the view waits, so in a burst of new incidents no page waits behind a live-view write to
        Prefect; a run that pages and ends within the wait publishes only its final view."""
        self._released.set()
        self._wake.set()

    def _seed_tags(self) -> None:
        """The run's tags as Prefect gave them to this flow run, so the first publish need not read
        them back (one API call less per run)."""
        try:
            from prefect.context import FlowRunContext

            context = FlowRunContext.get()
        except Exception:  # noqa: BLE001  (no Prefect context: the publisher reads the tags)
            return
        flow_run = context.flow_run if context else None
        if flow_run is not None and flow_run.id is not None:
            self._publisher.tags[str(flow_run.id)] = list(flow_run.tags or [])

    def _changed(self, incident_ids: frozenset[str]) -> None:
        if self.incident_id in incident_ids:
            self._wake.set()

    def _loop(self) -> None:
        assert self.incident_id is not None
        if self.first_view_wait > 0:
            self._released.wait(self.first_view_wait)  # stop() releases too
        while not self._stopping.is_set():
            woken = self._wake.wait(self.poll)
            if self._stopping.is_set():
                return
            if not woken:
                try:  # what another process recorded (a link acknowledgement, an operator's action)
                    if incidents.last_seq(self.incident_id) == self._seen_seq:
                        continue
                except Exception:  # noqa: BLE001  (the store is busy or down: look again later)
                    continue
            # Let the burst settle, and never more than one publish per min_interval.
            pause = max(self.settle, self.min_interval - (time.monotonic() - self._last_publish))
            if self._stopping.wait(pause):
                return
            self._wake.clear()
            self._update()

    def _update(self, *, final: bool = False) -> None:
        assert self.incident_id is not None
        # One publish at a time, and none from the thread once stop() began: stop() waits for the thread
        # only so long, and a slow publish (Prefect busy, its client backing off) that finished after the
        # final one would leave an older view as the newest version.
        with self._publishing:
            if not final and self._stopping.is_set():
                return
            self._publish(final=final)

    def _publish(self, *, final: bool) -> None:
        assert self.incident_id is not None
        try:
            self._seen_seq = incidents.last_seq(self.incident_id)
            if self._publisher.publish(build(self.incident_id), force=final):
                self.publishes += 1
            self._last_publish = time.monotonic()
            if (not final and self._seen_seq != self._anchored_seq
                    and time.monotonic() - self._last_anchor >= ANCHOR_INTERVAL_SECONDS):
                # The head moves with every event: anchored as it moves, so someone with database access
                # cannot cut what a long incident recorded since it began without the anchor showing it.
                self._last_anchor, self._anchored_seq = time.monotonic(), self._seen_seq
                anchor(self.incident_id)  # never raises
        except Exception as exc:  # noqa: BLE001  (never fail a run over its live view)
            LOGGER.warning("live view of %s not updated: %s: %s", self.incident_id, type(exc).__name__, exc)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._released.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._thread.join(timeout=10)
        self._thread = None
        self._update(final=True)
