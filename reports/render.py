"""Render reports from the record: Markdown and standalone HTML, in English or Chinese.

Everything taken from the record (alert text, step output, operator input) is
data to the templates, never template source, so `{{ … }}` in an alert stays
text. HTML is autoescaped. Markdown output is escaped by the environment's
`finalize`, so every `{{ value }}` is neutralised unless the template marks a
value as already-safe Markdown.
"""
from __future__ import annotations

import atexit
import html
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from firebreak.errors import ConfigInvalid, NotFound
from firebreak.settings import get_settings
from notifications.summary import attempts_of_notification
from reports import charts, i18n, metrics, summaries
from reports.incident_record import IncidentRecord, load_record

LOGGER = logging.getLogger("firebreak.reports")

TEMPLATES = Path(__file__).resolve().parent / "templates"
FORMATS = ("md", "html")

#: Characters that start inline markup. Values never begin a line (they follow a
#: label, a list marker or a table pipe), so block markers (#, -, >, 1.) stay inert.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


class SafeMarkdown(str):
    """Markdown the template builds itself (links, emphasis): printed as is."""


def escape_markdown(value: Any) -> str:
    """Text that cannot become markup: HTML entities for <, >, &, and a backslash
    before every Markdown control character; newlines become spaces (table cells)."""
    if value is None:
        return ""
    if isinstance(value, SafeMarkdown):
        return str(value)
    text = html.escape(str(value), quote=False)
    text = " ".join(text.splitlines())
    return _MD_SPECIAL.sub(r"\\\1", text)


def _environment(autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=autoescape,
        finalize=None if autoescape else escape_markdown, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )


_HTML = _environment(autoescape=True)
_MARKDOWN = _environment(autoescape=False)


@dataclass(frozen=True)
class Rendered:
    lang: str
    markdown: str
    html: str


def _runbook_of(record: IncidentRecord) -> tuple[Any, str | None]:
    # Imported here: the action catalogue imports Prefect, which rendering a report does not otherwise need.
    from tasks.catalog import load_runbook

    try:
        return load_runbook(record.incident.runbook_id).runbook, None
    except (ConfigInvalid, NotFound) as exc:  # a runbook removed or broken since: report the record without it
        return None, f"{type(exc).__name__}: {exc}"


def _contacts() -> Any:
    try:
        from notifications.contacts import load_directory

        return load_directory(get_settings().contacts_file)
    except ConfigInvalid:  # ContactsInvalid: missing or broken file
        return None  # names are a courtesy; the report shows contact ids without them


def _flow_run_url(flow_run_id: str | None) -> str | None:
    if not flow_run_id:
        return None
    try:
        from prefect.settings import PREFECT_UI_URL

        base = PREFECT_UI_URL.value()
    except Exception:  # noqa: BLE001  a link is a courtesy: a report is never lost over Prefect's settings
        base = None
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def _known(directory: Any, contact_id: str) -> bool:
    try:
        directory.get(contact_id)
        return True
    except ConfigInvalid:  # ContactsInvalid: no such contact
        return False


def _step_titles(record: IncidentRecord, runbook: Any, lang: str) -> dict[str, str]:
    """Step id → its title in `lang` (escalation and alarm pseudo-steps included)."""
    titles = {s.id: s.title_in(lang) for s in runbook.steps} if runbook else {}
    for event in record.events:
        step_id = event.step_id or ""
        if step_id and step_id not in titles:
            base = step_id.split("__", 1)[0]
            if step_id.startswith("run_failed__"):
                titles[step_id] = "运行失败告警" if lang == "zh" else "Run-failure alarm"
            elif base in titles:
                titles[step_id] = f"{titles[base]}（升级）" if lang == "zh" else f"Escalation of {titles[base]}"
            else:
                titles[step_id] = step_id
    return titles


def _shown_title(incident: Any, runbook: Any, lang: str) -> str:
    # A run started without a summary is titled with the runbook's title: shown in the reader's language.
    return runbook.title_in(lang) if runbook and incident.title == runbook.title else incident.title


def shown_title(record: IncidentRecord, lang: str) -> str:
    """The incident's title as a report in `lang` shows it (the index served to auditors)."""
    runbook, _ = _runbook_of(record)
    return _shown_title(record.incident, runbook, lang)


def _names(record: IncidentRecord, directory: Any) -> dict[str, str]:
    """Contact id → name, for the contacts paged (an acknowledgement by name is matched by it)."""
    return {c: directory.get(c).name for c in {n.contact for n in record.notifications}
            if directory is not None and _known(directory, c)}


def _clock(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S") if at else ""


def _seq_range(seqs: tuple[int, ...]) -> str:
    if not seqs:
        return ""
    return f"#{seqs[0]}" if len(seqs) == 1 else f"#{seqs[0]}–#{seqs[-1]}"


def _fact_source(fact: metrics.Fact, lang: str, titles: dict[str, str]) -> str:
    """Where a milestone comes from: its event, who, how — or why it is not measured."""
    if fact.at is None:
        return fact.missing.get(lang, "")
    parts = [f"#{fact.seq}" if fact.seq else ""]
    if fact.by:
        parts.append(fact.by)
    if fact.how.startswith("step "):
        step = fact.how.removeprefix("step ")
        parts.append(f"步骤「{titles.get(step, step)}」" if lang == "zh" else f"step “{titles.get(step, step)}”")
    elif fact.how and fact.how not in ("status",):
        parts.append(i18n.word(fact.how, lang))
    return " · ".join(p for p in parts if p)


def _closing(record: IncidentRecord, marks: metrics.Milestones, lang: str, titles: dict[str, str]) -> dict[str, Any]:
    """What resolved and closed the incident (a monitor, a runbook step, a person), and what came after."""
    zh = lang == "zh"

    def told(fact: metrics.Fact) -> str:
        if fact.at is None:
            return fact.missing.get(lang, "")
        who = fact.by
        if who.startswith("monitor:"):
            text = f"监控 {who.removeprefix('monitor:')} 报告告警已恢复" if zh else \
                f"the monitor {who.removeprefix('monitor:')} reported the alert resolved"
        elif who.startswith("runbook:"):
            # The reason a step gave is English free text: the Chinese report names the step instead.
            step_id = next((e.step_id for e in record.events if e.seq == fact.seq), None) or ""
            step = f"「{titles.get(step_id, step_id)}」" if step_id else ""
            text = f"预案 {who.removeprefix('runbook:')} 的步骤{step}" if zh else f"runbook {who.removeprefix('runbook:')}"
        else:
            text = f"{who}（人工）" if zh else f"{who} (by hand)"
        if fact.reason and not zh:
            text += f": {fact.reason}"
        return f"{text} (#{fact.seq})" if not zh else f"{text}（#{fact.seq}）"

    late = metrics.after_closure(record)
    return {"resolved": told(marks.resolved), "closed": told(marks.closed),
            "after": [f"#{e.seq} {_clock(e.at)} " + summaries.event_words(e, lang, titles) for e in late]}


#: Lifecycle phases the timeline is grouped by: the status in force when each event was recorded.
_PHASES = ("triggered", "acknowledged", "mitigated", "resolved", "closed")


def _timeline_groups(record: IncidentRecord, rows: list[dict[str, Any]], t: dict[str, str],
                     lang: str) -> list[dict[str, Any]]:
    """The timeline, grouped by lifecycle phase, each attempt's intent folded into its outcome's row
    (one line per attempt: when it started, how long it took, how it ended)."""
    intents = {(e.step_id, e.attempt): e for e in record.events if e.phase == "intent"}
    ended = {(e.step_id, e.attempt) for e in record.events if e.phase == "outcome"}
    groups: list[dict[str, Any]] = []
    phase = "triggered"
    for event, row in zip(record.events, rows, strict=True):
        if event.phase == "intent" and (event.step_id, event.attempt) in ended:
            continue  # shown on its outcome's row
        to = (event.data or {}).get("to") if metrics._status_change(event) else None
        label = (t["phase_after_closure"] if phase == "closed" and to is None and event.status != "closed"
                 and groups and groups[-1]["key"] in ("closed", "after") else None)
        key = "after" if label else phase
        if not groups or groups[-1]["key"] != key:
            groups.append({"key": key, "label": label or (i18n.word(phase, lang) if lang == "zh" else phase.capitalize()),
                           "rows": []})
        item = dict(row)
        intent = intents.get((event.step_id, event.attempt)) if event.phase == "outcome" else None
        if intent is not None:
            item["seq"] = f"{intent.seq}→{event.seq}"
            item["took"] = i18n.format_duration(event.at - intent.at, lang)
        groups[-1]["rows"].append(item)
        if to in _PHASES:
            phase = to
    for group in groups:
        seqs = [int(str(r["seq"]).split("→")[-1]) for r in group["rows"]]
        count = len(group["rows"])
        group["title"] = t["phase_group"].format(phase=group["label"], first=min(seqs), last=max(seqs), count=count,
                                                 events="" if lang == "zh" else "event" if count == 1 else "events")
    return groups


def _series_words(series: metrics.Series, t: dict[str, str], lang: str) -> str:
    """What a watched metric did, in words, for the Markdown artifact (Prefect shows no SVG): each figure the
    condition compares, first → last against its bound, and in how many checks the condition held."""
    samples = series.samples
    parts = []
    for bound in series.bounds:
        values = [s.get("values", {}).get(bound["field"]) for s in samples]
        shown = [v for v in values if v is not None]
        if not shown:
            continue
        ref = bound.get("value")
        if ref is None and bound.get("other_field"):
            ref = next((s["values"][bound["other_field"]] for s in samples
                        if s.get("values", {}).get(bound["other_field"]) is not None), None)
        op = charts.OPERATORS.get(bound["op"], bound["op"])
        parts.append(f"{bound['field']} {charts._num(shown[0])} → {charts._num(shown[-1])}"
                     + ("" if ref is None else f"（{t['chart_threshold']} {op} {charts._num(float(ref))}）" if lang == "zh"
                        else f" ({t['chart_threshold']} {op} {charts._num(float(ref))})"))
    statuses = [s["status"] for s in samples if isinstance(s.get("status"), int)]
    if not parts and statuses:
        parts.append(f"{t['http_status']} {statuses[0]} → {statuses[-1]}")
    held = sum(1 for s in samples if s.get("holds"))
    parts.append(t["chart_held_of"].format(held=held, count=len(samples)))
    return ("；" if lang == "zh" else "; ").join(parts)


def _charts(record: IncidentRecord, marks: metrics.Milestones, steps: list[metrics.StepRow],
            notifications: list[metrics.NotificationRow], acks: list[metrics.Acknowledgement],
            titles: dict[str, str], t: dict[str, str], lang: str) -> dict[str, Any]:
    """Inline SVG (reports.charts): the steps' Gantt and one chart per watched metric."""
    from markupsafe import Markup

    origin = marks.detected.at or record.incident.triggered_at
    last = max([e.at for e in record.events] + [origin])
    end = max(filter(None, [marks.closed.at, marks.run_ended.at, last]))
    rows = [{"title": titles.get(s.id, s.title), "status": s.decision.get("status", s.status) if s.decision else s.status,
             "status_word": i18n.word(s.status, lang), "started": s.started, "ended": s.ended} for s in steps]
    stones = [(key, t[f"m_{key}"], fact.at) for key, fact in marks.items()
              if key in ("acknowledged", "mitigated", "resolved", "closed") and fact.at]
    gantt = charts.gantt(origin=origin, end=end, steps=rows, milestones=stones,
                         pages=[(page_at, n.contact, n.status) for n in notifications if (page_at := n.sent or n.created)],
                         acks=[(a.at, a.by) for a in acks],
                         labels={"title": t["chart_gantt"], "pages": t["chart_pages"], "acks": t["chart_acks"],
                                 "seconds": t["chart_seconds"]}, lang=lang)
    watched = []
    for series in metrics.watched_series(record):
        title = t["chart_watch"].format(step=titles.get(series.step_id, series.step_id), condition=series.condition)
        watched.append({"title": title, "seq": series.seq, "words": _series_words(series, t, lang),
                        "svg": Markup(charts.watch_chart(
            origin=origin, end=end, series=series,
            labels={"title": title, "threshold": t["chart_threshold"], "holds": t["chart_holds"],
                    "seconds": t["chart_seconds"], "http_status": t["http_status"]}, lang=lang))})
    return {"gantt": Markup(gantt), "watched": watched}


def build_view(record: IncidentRecord, lang: str, now: datetime | None = None) -> dict[str, Any]:
    """Everything the templates print, formatted for one language."""
    from records.models import utcnow

    t = i18n.labels(lang)
    zone = ZoneInfo(get_settings().local_timezone)
    incident = record.incident
    runbook, runbook_problem = _runbook_of(record)
    directory = _contacts()
    marks = metrics.milestones(record, runbook)
    titles = _step_titles(record, runbook, lang)

    def utc(at: datetime | None) -> str:
        return i18n.format_utc(at)

    def local(at: datetime | None) -> str:
        return i18n.format_local(at, zone)

    def name_of(contact_id: str) -> str:
        if directory is None:
            return contact_id
        try:
            return f"{directory.get(contact_id).name} ({contact_id})"
        except ConfigInvalid:  # ContactsInvalid: no such contact
            return contact_id

    def duration(delta: Any) -> str:
        return i18n.format_duration(delta, lang)

    # The roles involved are the roles paged in this incident (in the runbook's order), not every role the
    # runbook could call on: a level II outage does not involve the commander-in-chief.
    notified_roles = {role.strip() for n in record.notifications for role in (n.role or "").split(",") if role.strip()}
    roles = [r for r in (runbook.roles if runbook else []) if r in notified_roles] + \
        sorted(notified_roles - set(runbook.roles if runbook else []))
    names = _names(record, directory)
    commanders = []
    # Who held command in this incident: the command roles paged (a level II outage does not engage the
    # commander-in-chief, though the runbook names the role for level I).
    for role in ("commander_in_chief", "scenario_lead", "on_site_commander"):
        paged = sorted({n.contact for n in record.notifications
                        if role in [r.strip() for r in (n.role or "").split(",")]})
        people = [names.get(c, c) for c in paged]
        if people:
            commanders.append(f"{', '.join(people)} ({i18n.roles(role, lang)})")
    end = marks.closed.at or marks.run_ended.at
    impact = {k: v for k, v in (incident.parameters or {}).items() if "affected" in k}

    steps = metrics.step_rows(record, runbook)
    checks = metrics.commitment_checks(record, runbook, marks, names)
    verification = record.verification
    review = record.review
    timeline = [{
        "seq": e.seq, "time": e.at.strftime("%H:%M:%S.%f")[:-3] + "Z", "date": e.at.strftime("%Y-%m-%d"), "actor": e.actor, "step": e.step_id or "",
        "phase": i18n.word(e.phase, lang), "status": i18n.word(e.status, lang), "raw_status": e.status,
        "summary": summaries.event_words(e, lang, titles), "error": "", "attempt": e.attempt, "took": "",
    } for e in record.events]
    notifications = metrics.notification_rows(record, names)
    acknowledgements = metrics.acknowledgements(record)
    closing = _closing(record, marks, lang, titles)
    shown_title = _shown_title(incident, runbook, lang)

    return {
        "t": t, "lang": lang, "id": incident.id,
        "generated": f"{utc(now or utcnow())} · {local(now or utcnow())}",
        "incident": {
            "id": incident.id, "title": shown_title, "runbook": incident.runbook_id,
            "runbook_title": runbook.title_in(lang) if runbook else incident.runbook_id,
            "version": incident.runbook_version, "level": incident.level,
            "status": i18n.word(incident.status, lang), "raw_status": incident.status,
            "run_state": i18n.word(incident.run_state, lang), "raw_run_state": incident.run_state,
            "run_error": incident.run_error or "", "drill": incident.drill,
            "kind": t["drill"] if incident.drill else t["real"], "source": i18n.word(incident.source, lang),
            "summary": (incident.summary if incident.summary and incident.summary != incident.title else shown_title),
            "description": (runbook.description_in(lang) if runbook else ""),
            "flow_run_id": incident.flow_run_id or "", "flow_run_url": _flow_run_url(incident.flow_run_id) or "",
        },
        "runbook_problem": runbook_problem or "",
        # Open with no run driving it (records.models.Incident.attention_reason): the banner at the top.
        "attention": t["attention_banner"].format(status=i18n.word(incident.status, lang),
                                                  run_state=i18n.word(incident.run_state, lang))
                     if incident.needs_attention else "",
        "commander": "; ".join(commanders) or t["none"],
        "roles": i18n.roles(", ".join(roles), lang) or t["none"],
        "impact": "; ".join(f"{k} = {v}" for k, v in impact.items()) or t["none"],
        "impact_duration": duration(end - marks.started.at if end and marks.started.at else None),
        "facts": [f"#{e.seq} " + summaries.event_words(e, lang, titles) for e in record.events
                  if e.action == "record" and e.status == "info"],
        "parameters": [(k, v) for k, v in sorted((incident.parameters or {}).items())],
        "alerts": [{
            "received": utc(getattr(a, "received_at", None)), "source": getattr(a, "source", ""),
            "fingerprint": getattr(a, "fingerprint", ""), "status": getattr(a, "status", ""),
            "summary": getattr(a, "summary", ""),
        } for a in record.alerts],
        "no_alert": t["no_alert"].format(source=i18n.word(incident.source, lang)),
        "milestones": [{"label": t[f"m_{key}"], "utc": utc(fact.at), "local": local(fact.at),
                        "missing": fact.at is None, "seq": fact.seq, "source": _fact_source(fact, lang, titles)}
                       for key, fact in marks.items()],
        "durations": [{"label": t[f"d_{key}"], "value": duration(delta), "from": t[f"from_{origin}"],
                       "seq": fact.seq if delta is not None else None,
                       "why": "" if delta is not None else fact.missing.get(lang, "")}
                      for key, origin, delta, fact in marks.duration_facts()],
        "timeline": timeline,
        "timeline_groups": _timeline_groups(record, timeline, t, lang),
        "steps": [{
            "id": s.id, "title": s.title_zh if lang == "zh" else s.title, "action": s.action or "",
            "status": i18n.word(s.decision.get("status") if s.decision else s.status, lang),
            "raw_status": s.status, "attempts": s.attempts, "duration": duration(s.duration),
            "policy": i18n.word(s.policy, lang) if s.policy else "", "words": summaries.step_words(s, lang),
            "raw": metrics.summarise_output(s.output, 4000) if s.output is not None else "",
            "escalation": s.escalation, "seqs": _seq_range(s.seqs),
        } for s in steps],
        "notifications": [{
            "who": name_of(n.contact), "contact": n.contact, "role": i18n.roles(n.role, lang), "channel": n.channel,
            "status": i18n.word(n.status, lang), "raw_status": n.status, "attempts": n.attempts,
            "created": utc(n.created), "sent": utc(n.sent), "sent_time": _clock(n.sent),
            "acknowledged": (t["ack_by_person"].format(who=n.acknowledged_by, seq=n.acknowledged_seq or "?")
                             + f" {_clock(n.acknowledged)}") if n.acknowledged_by else t["no_ack_here"],
            "escalation": n.escalation or "", "error": n.error or "", "step": n.step_id,
            "step_title": titles.get(n.step_id.split("__", 1)[0], n.step_id),
            # Every try of this channel (records.deliveries.DeliveryAttempt), e.g. "attempts: 3 (2 failed: …)".
            "tries": attempts_of_notification(record.delivery_attempts, raw.id, lang),
        } for n, raw in zip(notifications, record.notifications, strict=True)],
        "decisions": [{"when": utc(d.at), "who": i18n.approver(d.who, d.unverified, lang), "decision": t.get(f"kind_{d.kind}", d.kind)
                       + (f" ({i18n.word(d.detail, lang)})" if d.detail else ""), "kind": d.kind,
                       "comment": d.comment, "seq": d.seq,
                       "step": titles.get(d.step_id or "", "") if d.step_id else ""}
                      for d in metrics.decision_rows(record)],
        "commitments": [{
            "id": c.commitment.id, "title": c.commitment.title(lang), "seed": c.commitment.seed_in(lang),
            "target": c.target[lang], "measured": c.measured[lang], "note": c.note.get(lang, ""),
            "result": t[c.result], "raw_result": c.result, "seq": c.seq,
            "declared": t["declared"] if c.declared else t["undeclared"],
        } for c in checks],
        "breaches": sum(c.result == "fail" for c in checks),
        "score": t["drill_score"].format(total=len(checks), passed=sum(c.result == "pass" for c in checks),
                                         failed=sum(c.result == "fail" for c in checks),
                                         unmeasured=sum(c.result == "not_measured" for c in checks),
                                         pending=sum(c.result == "pending" for c in checks)),
        "closing": closing,
        "charts": _charts(record, marks, steps, notifications, acknowledgements, titles, t, lang),
        "review": None if review is None else {
            "root_cause": review.root_cause, "lessons": list(review.lessons),
            "action_items": [{"text": a.get("text", ""), "owner": a.get("owner", ""), "due": a.get("due", "")}
                             for a in review.action_items],
            "entered_by": review.entered_by, "entered_at": utc(review.entered_at), "revision": review.revision,
        },
        # Built from our own wording and a generated id: Markdown in them (code spans) is meant.
        "review_pending": SafeMarkdown(t["review_pending"].format(id=incident.id)),
        "review_problems": record.review_problems,
        "integrity": {
            "intact": verification.intact and not record.review_problems,
            "head_hash": verification.head_hash, "head_seq": verification.head_seq,
            "events": verification.events,
            "broken": "" if verification.broken is None else t["chain_broken"].format(
                problem=verification.broken.kind if lang == "en" else i18n.word(verification.broken.problem, lang),
                seq=verification.broken.seq, detail=verification.broken.detail),
            "command": f"firebreak audit verify {incident.id} --expect-head {verification.head_hash}",
            # Our own wording, a generated id, a number and a hex variable name: Markdown in it is meant.
            "note": SafeMarkdown(t["verify_note"].format(id=incident.id, seal=record.seal_number or "—",
                                                         anchor=record.anchor_variable or "—")),
        },
    }


def render(record: IncidentRecord, lang: str = "en", now: datetime | None = None) -> Rendered:
    view = build_view(record, lang, now)
    return Rendered(lang, _MARKDOWN.get_template("report.md.j2").render(**view, safe=SafeMarkdown),
                    _HTML.get_template("report.html.j2").render(**view))


def reports_dir() -> Path:
    return get_settings().resolved_home / "reports"


def report_path(incident_id: str, lang: str, fmt: str) -> Path:
    return reports_dir() / incident_id / f"report.{lang}.{fmt}"


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old report or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(incident_id: str, langs: tuple[str, ...] = i18n.LANGUAGES,
                  formats: tuple[str, ...] = FORMATS) -> dict[tuple[str, str], Path]:
    """Render and write the incident's reports, then refresh the index. Returns {(lang, fmt): path}."""
    record = load_record(incident_id)
    written: dict[tuple[str, str], Path] = {}
    for lang in langs:
        rendered = render(record, lang)
        for fmt in formats:
            path = report_path(incident_id, lang, fmt)
            _write_atomically(path, rendered.markdown if fmt == "md" else rendered.html)
            written[(lang, fmt)] = path
    _write_summary(index_row(record))
    refresh_index()
    return written


@dataclass(frozen=True)
class IndexRow:
    id: str
    runbook: str
    level: str
    status: str
    run_state: str
    drill: bool
    opened: str
    tta: str
    ttr: str
    breaches: list[str]
    intact: bool
    links: dict[str, str]


def index_row(record: IncidentRecord, lang: str = "en") -> IndexRow:
    incident = record.incident
    runbook, _ = _runbook_of(record)
    marks = metrics.milestones(record, runbook)
    durations = {key: delta for key, _, delta in marks.durations()}
    checks = metrics.commitment_checks(record, runbook, marks, _names(record, _contacts()))
    links = {f"{lang_}.{fmt}": f"{incident.id}/report.{lang_}.{fmt}" for lang_ in i18n.LANGUAGES for fmt in FORMATS
             if report_path(incident.id, lang_, fmt).exists()}
    return IndexRow(incident.id, incident.runbook_id, incident.level, incident.status, incident.run_state,
                    incident.drill, i18n.format_utc(incident.created_at),
                    i18n.format_duration(durations["tta"], lang), i18n.format_duration(durations["ttr"], lang),
                    [c.commitment.id for c in checks if c.result == "fail"], record.verification.intact, links)


def _summary_path(incident_id: str) -> Path:
    return reports_dir() / incident_id / "summary.json"


def _write_summary(row: IndexRow) -> None:
    # The index is assembled from these, so a run's end re-reads one incident, not all of them.
    _write_atomically(_summary_path(row.id), json.dumps(asdict(row), ensure_ascii=False, sort_keys=True))


def index_rows(limit: int = 500, lang: str = "en") -> list[IndexRow]:
    """Every incident's index row from the records (and the index summaries refreshed with them)."""
    from records.incidents import list_incidents

    rows = []
    for incident in list_incidents(limit):
        row = index_row(load_record(incident.id), lang)
        _write_summary(row)
        rows.append(row)
    return rows


def served_index(rows: list[dict[str, Any]], lang: str = "en") -> str:
    """The read-only index the intake serves at /reports/ (intake.reports_http): each incident with its
    audit status. rows: {"row": IndexRow, "title": str, "audit": {"ok": bool, "text": str}}."""
    from records.models import utcnow
    from runbooks.commitments import CATALOGUE

    shown = [{**r, "status": i18n.word(r["row"].status, lang), "run_state": i18n.word(r["row"].run_state, lang),
              # Breaches by the commitment's title in the reader's language, not its id.
              "breaches": [CATALOGUE[c].title(lang) if c in CATALOGUE else c for c in r["row"].breaches]}
             for r in rows]
    return _HTML.get_template("served_index.html.j2").render(
        t=i18n.labels(lang), lang=lang, rows=shown, generated=i18n.format_utc(utcnow()))


#: At most one rewrite of index.html per this many seconds in a process: the rest of a burst's report
#: ends are folded into the next one (refresh_index).
INDEX_REFRESH_SECONDS = 2.0


class _IndexRefresher:
    """index.html is rebuilt from every incident's summary (write_index), which costs with the number of
    incidents: measured 0.075 CPU-seconds at 1,000, about a third of what a whole run costs then (issue 13).
    A report written when the index was not rewritten within INDEX_REFRESH_SECONDS rewrites it at once,
    as before; one written sooner (a burst of runs ending) marks it stale, and one background rewrite,
    when the interval is over, covers them all. A process that exits with the index stale rewrites it
    on the way out; one killed meanwhile leaves it stale until the next report, or `firebreak reports`."""

    def __init__(self, interval: float = INDEX_REFRESH_SECONDS, write: Callable[[], object] | None = None) -> None:
        self.interval = interval
        self._rewrite = write  # None: write_index
        self._lock = threading.Lock()
        self._writing = False
        self._stale = False
        self._last = float("-inf")  # monotonic time the last rewrite began
        self._thread: threading.Thread | None = None
        self._exit_hook = False

    def request(self) -> None:
        with self._lock:
            if self._writing or time.monotonic() - self._last < self.interval:
                self._stale = True
                self._start_thread()
                return
            self._claim()
        self._write()

    def flush(self, patience: float = 10.0) -> None:
        """Rewrite now if a requested rewrite is still pending (at exit; tests). A rewrite under way in the
        background is waited for first (up to `patience` seconds): it may have begun before the last report."""
        deadline = time.monotonic() + patience
        while True:
            with self._lock:
                if not self._stale:
                    return
                if not self._writing:
                    self._claim()
                    break
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        self._write()

    def _claim(self) -> None:  # under self._lock: this caller rewrites, covering every report so far
        self._writing, self._stale, self._last = True, False, time.monotonic()

    def _start_thread(self) -> None:  # under self._lock
        if not self._exit_hook:
            atexit.register(self.flush)
            self._exit_hook = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._rewrite_when_due, name="report-index", daemon=True)
            self._thread.start()

    def _rewrite_when_due(self) -> None:
        while True:
            with self._lock:
                wait = self._last + self.interval - time.monotonic()
                rewrite = wait <= 0 and not self._writing
                if rewrite:
                    if not self._stale:
                        self._thread = None
                        return
                    self._claim()
            if rewrite:
                self._write()
            else:
                time.sleep(max(wait, 0.05))

    def _write(self) -> None:  # self._writing was set by the caller
        try:
            (self._rewrite or write_index)()
        except Exception:  # noqa: BLE001  a report's index is a convenience: its run goes on, the next report retries
            LOGGER.exception("the reports index was not rewritten")
        finally:
            with self._lock:
                self._writing = False


_index_refresher = _IndexRefresher()


def refresh_index() -> None:
    """Bring index.html up to date with the summaries: now, or within INDEX_REFRESH_SECONDS (see _IndexRefresher)."""
    _index_refresher.request()


def write_index() -> Path:
    """index.html from the summaries written with each incident's reports, newest first."""
    from records.models import utcnow

    rows = []
    for summary in reports_dir().glob("*/summary.json"):
        try:
            rows.append(IndexRow(**json.loads(summary.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            continue  # a summary from another version or half-copied: `firebreak reports` rewrites them all
    rows.sort(key=lambda row: (row.opened, row.id), reverse=True)
    path = reports_dir() / "index.html"
    _write_atomically(path, _HTML.get_template("index.html.j2").render(
        t=i18n.labels("en"), rows=rows, generated=i18n.format_utc(utcnow())))
    return path
