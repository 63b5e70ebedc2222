"""Render reports from the record: Markdown and standalone HTML, in English or Chinese.

Everything taken from the record (alert text, step output, operator input) is
data to the templates, never template source, so `{{ … }}` in an alert stays
text. HTML is autoescaped. Markdown output is escaped by the environment's
`finalize`, so every `{{ value }}` is neutralised unless the template marks a
value as already-safe Markdown.
"""
from __future__ import annotations

import html
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from firebreak.settings import get_settings
from reports import i18n, metrics
from reports.incident_record import IncidentRecord, load_record

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
    except Exception as exc:  # a runbook removed or broken since: report the record without it
        return None, f"{type(exc).__name__}: {exc}"


def _contacts() -> Any:
    try:
        from notifications.contacts import load_directory

        return load_directory(get_settings().contacts_file)
    except Exception:
        return None  # names are a courtesy; the report shows contact ids without them


def _flow_run_url(flow_run_id: str | None) -> str | None:
    if not flow_run_id:
        return None
    try:
        from prefect.settings import PREFECT_UI_URL

        base = PREFECT_UI_URL.value()
    except Exception:
        base = None
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def build_view(record: IncidentRecord, lang: str, now: datetime | None = None) -> dict[str, Any]:
    """Everything the templates print, formatted for one language."""
    from records.models import utcnow

    t = i18n.labels(lang)
    zone = ZoneInfo(get_settings().local_timezone)
    incident = record.incident
    runbook, runbook_problem = _runbook_of(record)
    directory = _contacts()
    marks = metrics.milestones(record)

    def utc(at: datetime | None) -> str:
        return i18n.format_utc(at)

    def local(at: datetime | None) -> str:
        return i18n.format_local(at, zone)

    def name_of(contact_id: str) -> str:
        if directory is None:
            return contact_id
        try:
            return f"{directory.get(contact_id).name} ({contact_id})"
        except Exception:
            return contact_id

    def duration(delta: Any) -> str:
        return i18n.format_duration(delta, lang)

    notified_roles = {role.strip() for n in record.notifications for role in (n.role or "").split(",") if role.strip()}
    roles = list(dict.fromkeys([*(runbook.roles if runbook else []), *sorted(notified_roles)]))
    commanders = []
    for role in ("commander_in_chief", "scenario_lead", "on_site_commander"):
        people = directory.for_role(role) if directory is not None else []
        if role in roles and people:
            commanders.append(f"{', '.join(p.name for p in people)} ({role})")
    end = marks.closed or marks.run_ended
    impact = {k: v for k, v in (incident.parameters or {}).items() if "affected" in k}

    steps = metrics.step_rows(record, runbook)
    checks = metrics.commitment_checks(record, runbook, marks)
    verification = record.verification
    review = record.review
    timeline = [{
        "seq": e.seq, "time": e.at.strftime("%H:%M:%S.%f")[:-3] + "Z", "date": e.at.strftime("%Y-%m-%d"), "actor": e.actor, "step": e.step_id or "",
        "phase": e.phase, "status": i18n.word(e.status, lang), "raw_status": e.status, "summary": e.summary,
        "error": e.error or "", "attempt": e.attempt,
    } for e in record.events]

    return {
        "t": t, "lang": lang, "id": incident.id,
        "generated": f"{utc(now or utcnow())} · {local(now or utcnow())}",
        "incident": {
            "id": incident.id, "title": incident.title, "runbook": incident.runbook_id,
            "runbook_title": (f"{runbook.title_zh or runbook.title}" if lang == "zh" and runbook else
                              runbook.title if runbook else incident.runbook_id),
            "version": incident.runbook_version, "level": incident.level,
            "status": i18n.word(incident.status, lang), "raw_status": incident.status,
            "run_state": i18n.word(incident.run_state, lang), "raw_run_state": incident.run_state,
            "run_error": incident.run_error or "", "drill": incident.drill,
            "kind": t["drill"] if incident.drill else t["real"], "source": incident.source,
            "summary": incident.summary or incident.title,
            "description": (runbook.description.strip() if runbook else ""),
            "flow_run_id": incident.flow_run_id or "", "flow_run_url": _flow_run_url(incident.flow_run_id) or "",
        },
        "runbook_problem": runbook_problem or "",
        # Open with no run driving it (records.models.Incident.attention_reason): the banner at the top.
        "attention": t["attention_banner"].format(status=i18n.word(incident.status, lang),
                                                  run_state=i18n.word(incident.run_state, lang))
                     if incident.needs_attention else "",
        "commander": "; ".join(commanders) or t["none"],
        "roles": ", ".join(roles) or t["none"],
        "impact": "; ".join(f"{k} = {v}" for k, v in impact.items()) or t["none"],
        "impact_duration": duration(end - marks.started if end else None),
        "facts": [e.summary for e in record.events if e.action == "record" and e.status == "info"],
        "parameters": [(k, v) for k, v in sorted((incident.parameters or {}).items())],
        "alerts": [{
            "received": utc(getattr(a, "received_at", None)), "source": getattr(a, "source", ""),
            "fingerprint": getattr(a, "fingerprint", ""), "status": getattr(a, "status", ""),
            "summary": getattr(a, "summary", ""),
        } for a in record.alerts],
        "no_alert": t["no_alert"].format(source=incident.source),
        "milestones": [{"label": t[f"m_{key}"], "utc": utc(at), "local": local(at),
                        "missing": at is None} for key, at in marks.items()],
        "durations": [{"label": t[f"d_{key}"], "value": duration(delta), "from": t[f"from_{origin}"]}
                      for key, origin, delta in marks.durations()],
        "timeline": timeline,
        "steps": [{
            "id": s.id, "title": s.title, "action": s.action or "", "status": i18n.word(s.status, lang),
            "raw_status": s.status, "attempts": s.attempts, "duration": duration(s.duration),
            "policy": i18n.word(s.policy, lang) if s.policy else "", "output": s.output,
            "escalation": s.escalation,
        } for s in steps],
        "notifications": [{
            "who": name_of(n.contact), "role": n.role, "channel": n.channel, "status": i18n.word(n.status, lang),
            "raw_status": n.status, "attempts": n.attempts, "created": utc(n.created),
            "sent": utc(n.sent), "acknowledged": utc(n.acknowledged) + (f" ({n.acknowledged_by})" if n.acknowledged_by else ""),
            "escalation": n.escalation or "", "error": n.error or "", "step": n.step_id,
        } for n in metrics.notification_rows(record)],
        "decisions": [{"when": utc(d.at), "who": d.who, "decision": d.decision, "comment": d.comment}
                      for d in metrics.decision_rows(record)],
        "commitments": [{
            "title": c.commitment.title(lang), "seed": c.commitment.seed, "target": duration(c.target),
            "measured": duration(c.measured), "result": t[c.result], "raw_result": c.result, "note": c.note,
        } for c in checks],
        "breaches": sum(c.result == "fail" for c in checks),
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
                problem=i18n.word(verification.broken.problem, lang), seq=verification.broken.seq,
                detail=verification.broken.detail),
            "command": f"firebreak audit verify {incident.id} --expect-head {verification.head_hash}",
            "note": SafeMarkdown(t["verify_note"].format(id=incident.id)),
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
    write_index()
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
    marks = metrics.milestones(record)
    durations = {key: delta for key, _, delta in marks.durations()}
    checks = metrics.commitment_checks(record, runbook, marks)
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
