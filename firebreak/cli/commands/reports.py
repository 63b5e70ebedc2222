"""`firebreak report | reports | audit verify | export | review`: post-incident
reports, the audit chain and the after-action review."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from records.incidents import IncidentNotFound
    from reports.i18n import LANGUAGES

    langs = LANGUAGES if args.lang == "all" else (args.lang,)
    try:
        if args.format == "pdf":
            # reports.pdf: where WeasyPrint, its system libraries or a CJK font is missing, PdfUnavailable
            # (one line: why, and how to enable it; exit 1).
            from reports.pdf import write_pdfs

            paths = list(write_pdfs(args.incident, langs).values())
        else:
            from reports.render import write_reports

            paths = list(write_reports(args.incident, langs, (args.format,)).values())
    except IncidentNotFound as exc:
        return _fail(str(exc))
    for path in paths:
        print(f"report: {path}")
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    from reports.render import index_rows, write_index

    rows = index_rows(args.limit)
    for row in rows:
        breaches = ", ".join(row.breaches) if row.breaches else "none"
        print(f"{row.id}  {row.runbook:<20} level {row.level:<3} {row.status:<12} run {row.run_state:<10} "
              f"TTA {row.tta:<14} TTR {row.ttr:<14} breaches: {breaches}"
              f"{'' if row.intact else '  AUDIT CHAIN BROKEN'}{'  (drill)' if row.drill else ''}")
    print(f"index: {write_index()}")
    return 0


def _prefect_for_anchors() -> None:
    """Use PREFECT_API_URL, or the local Prefect server if it is running (it is not started for this)."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from firebreak.cli.prefect_server import healthy
    from firebreak.settings import get_settings

    local = f"http://127.0.0.1:{get_settings().prefect_port}/api"
    if healthy(local):
        os.environ["PREFECT_API_URL"] = local


def _verification_line(result) -> str:
    from records import audit

    head = f"{result.events} events, head #{result.head_seq} {result.head_hash}"
    note = f"; {result.note}" if result.note else ""
    if result.broken is not None:
        b = result.broken
        where = f" (event #{b.seq})" if b.seq else ""
        return f"{result.incident_id}: BROKEN: {b.kind}{where}: {b.detail}"
    if result.status == audit.INTACT:
        return f"{result.incident_id}: intact, {head}{note}"
    if result.status == audit.EXTENDED:
        return f"{result.incident_id}: intact, extended since #{result.since}: {head}{note}"
    if result.status == audit.NOT_ANCHORED:
        return f"{result.incident_id}: not anchored (chain and signed heads intact, {head}){note}"
    return f"{result.incident_id}: anchor not checked (chain and signed heads intact, {head}){note}"


def cmd_audit_verify(args: argparse.Namespace) -> int:
    _prefect_for_anchors()
    from records import audit
    from records.audit_anchor import PrefectAnchors
    from records.incidents import IncidentNotFound, get_incident

    anchors = PrefectAnchors()
    if args.incident:
        try:
            get_incident(args.incident)
        except IncidentNotFound as exc:
            return _fail(str(exc))
        results = [audit.verify(args.incident, anchors=anchors, expect_head=args.expect_head)]
    elif args.expect_head:
        return _fail("--expect-head needs one incident id")
    else:
        results = audit.verify_all(anchors=anchors)
    for result in results:
        print(_verification_line(result))
    if not results:
        print("no incidents")
    if any(result.broken is not None for result in results):
        return 1
    # Nothing tampered with that the records and the key can show, but not proven outside them.
    return 3 if any(result.status in (audit.NOT_ANCHORED, audit.UNCHECKED) for result in results) else 0


def cmd_export(args: argparse.Namespace) -> int:
    from firebreak.settings import get_settings
    from records.incidents import IncidentNotFound
    from reports.incident_record import export_document

    try:
        document = export_document(args.incident)
    except IncidentNotFound as exc:
        return _fail(str(exc))
    text = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    if args.output == "-":
        sys.stdout.write(text + "\n")
        return 0
    path = Path(args.output) if args.output else get_settings().resolved_home / "exports" / f"{args.incident}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"export: {path} (head {document['audit']['head_hash']})")
    return 0


def _action_item(text: str) -> dict[str, str]:
    parts = [p.strip() for p in text.split("|")]
    if len(parts) != 3:
        raise ValueError(f"--action {text!r}: expected \"what|owner|YYYY-MM-DD\"")
    return {"text": parts[0], "owner": parts[1], "due": parts[2]}


def cmd_review(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from records.incidents import IncidentNotFound, get_incident
    from records.reviews import ReviewInput, enter_review
    from reports.publish import publish_report

    try:
        incident = get_incident(args.incident)
        # Validated from plain data, as the intake's form is: each action item's fields are checked there.
        review = ReviewInput.model_validate({"root_cause": args.root_cause, "lessons": args.lesson,
                                             "action_items": [_action_item(a) for a in args.action],
                                             "entered_by": args.by})
    except IncidentNotFound as exc:
        return _fail(str(exc))
    except ValueError as exc:  # includes pydantic's ValidationError
        if isinstance(exc, ValidationError):
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return _fail(f"review rejected: {detail}")
        return _fail(str(exc))
    row = enter_review(incident.id, review)
    # Refresh the Prefect artifact only where a Prefect API is configured; the files always.
    paths = publish_report(incident.id, incident.flow_run_id, artifact=bool(os.environ.get("PREFECT_API_URL")))
    print(f"review revision {row.revision} stored for {incident.id} (sha256 {row.sha256})")
    for name, path in sorted(paths.items()):
        print(f"report ({name}): {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="render an incident's post-incident report")
    p.add_argument("incident")
    p.add_argument("--format", choices=["md", "html", "pdf"], default="html",
                   help="pdf: for archiving, A4 (needs the pdf extra, Pango and a CJK font: see the README)")
    p.add_argument("--lang", choices=["en", "zh", "all"], default="en")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("reports", help="list incidents with durations and commitment breaches; write index.html")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_reports)

    p = subparsers.add_parser("audit", help="the tamper-evident timeline")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    v = audit_sub.add_parser("verify", help="verify the audit trail of one incident (or all, and that none is "
                                            "missing): exit 0 intact, 1 broken, 3 not anchored outside the records")
    v.add_argument("incident", nargs="?")
    v.add_argument("--expect-head", metavar="HASH", help="a head hash kept outside the database (from a report "
                                                         "or export): the chain must still hold it, at its end "
                                                         "or extended since")
    v.set_defaults(func=cmd_audit_verify)

    p = subparsers.add_parser("export", help="write an incident's complete raw record as JSON")
    p.add_argument("incident")
    p.add_argument("--output", "-o", help="file to write (default FIREBREAK_HOME/exports/<id>.json; - for stdout)")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("review", help="enter the post-incident review: root cause, lessons, action items")
    p.add_argument("incident")
    p.add_argument("--root-cause", required=True)
    p.add_argument("--lesson", action="append", default=[], help="a lesson learned (repeat for more)")
    p.add_argument("--action", action="append", default=[], metavar="WHAT|OWNER|YYYY-MM-DD",
                   help="an action item with its owner and due date (repeat for more)")
    p.add_argument("--by", required=True, help="who enters the review")
    p.set_defaults(func=cmd_review)
