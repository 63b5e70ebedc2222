"""`firebreak incident <action> INC-… --by <contact> …`: run an incident by hand from the command line.

    firebreak incident acknowledge INC-2026-0001 --by li-wei [--comment …]
    firebreak incident resolve     INC-2026-0001 --by li-wei --reason "failed over; health checks pass"
    firebreak incident close       INC-2026-0001 --by qian-li --reason "false alarm"
    firebreak incident note        INC-2026-0001 --by li-wei --text "vendor on site"
    firebreak incident level       INC-2026-0001 I --by qian-li --reason "10,000 customers affected"
    firebreak incident handover    INC-2026-0001 --to zhao-gang --by qian-li [--note …]
    firebreak incident rerun       INC-2026-0001 --by li-wei [--reason …]
    firebreak incident resume      INC-2026-0001 --by li-wei [--reason …]   # a run that crashed goes on
    firebreak incident cancel      INC-2026-0001 --by li-wei --reason "wrong runbook"
    firebreak incident view        INC-2026-0001          # the live view, as Prefect shows it

Every action is flows.operator_actions, as the Prefect forms and the intake API call it. `--by` is a
contact (id, or name as in the contacts directory); anyone else is refused. The live view in Prefect
is updated when this checkout's Prefect server (or PREFECT_API_URL) is up; `rerun`, `resume` and
`cancel` need it (and `rerun` the deployments `firebreak up` serves).
"""
from __future__ import annotations

import argparse
import os
from typing import Any

#: Actions that talk to Prefect themselves (re-run creates a flow run, resume and cancel set its state).
NEEDS_PREFECT = frozenset({"rerun", "resume", "cancel"})


def _prefect(required: bool) -> None:
    """Point Prefect at this checkout's server before Prefect is imported (it reads its settings then)."""
    from firebreak.cli.prefect_server import ensure_server, local_server_url

    if required:
        ensure_server()
        return
    url = local_server_url()
    if url:
        os.environ["PREFECT_API_URL"] = url


def cmd_action(args: argparse.Namespace) -> int:
    _prefect(args.action in NEEDS_PREFECT)
    from flows import operator_actions

    common: dict[str, Any] = {"by": args.by, "via": "cli"}
    if args.action == "acknowledge":
        result = operator_actions.acknowledge(args.incident, comment=args.comment, **common)
    elif args.action == "resolve":
        result = operator_actions.resolve(args.incident, reason=args.reason, **common)
    elif args.action == "close":
        result = operator_actions.close(args.incident, reason=args.reason, **common)
    elif args.action == "note":
        result = operator_actions.note(args.incident, text=args.text, **common)
    elif args.action == "level":
        result = operator_actions.change_level(args.incident, level=args.level, reason=args.reason, **common)
    elif args.action == "handover":
        result = operator_actions.hand_over(args.incident, to=args.to, note=args.note, **common)
    elif args.action == "rerun":
        result = operator_actions.rerun(args.incident, reason=args.reason, runbook=args.runbook, **common)
    elif args.action == "resume":
        result = operator_actions.resume(args.incident, reason=args.reason, **common)
    else:
        result = operator_actions.cancel_run(args.incident, reason=args.reason, **common)
    print(f"{result.incident_id}: {result.summary}")
    print(f"  status {result.status} · level {result.level} · recorded as {result.via}:{result.by}")
    if result.details.get("flow_run_url"):
        print(f"  flow run: {result.details['flow_run_url']}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    _prefect(False)
    from reports.live_view import artifact_key, build

    view = build(args.incident)
    print(view.markdown)
    print(f"(Prefect artifact {artifact_key(view.incident_id)}"
          + (f"; run tags: {', '.join(sorted(view.tags))}" if view.tags else "") + ")")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parent = subparsers.add_parser("incident", help="run an incident by hand: acknowledge, resolve, close, note, "
                                                   "level, handover, rerun, resume, cancel, view")
    actions = parent.add_subparsers(dest="action", required=True)

    def action(name: str, help_text: str, *, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, aliases=list(aliases))
        p.add_argument("incident", help="incident id, e.g. INC-2026-0001")
        p.add_argument("--by", required=True, help="who takes the action: a contact id or name from the contacts "
                                                   "directory (e.g. li-wei)")
        p.set_defaults(func=cmd_action, action=name)
        return p

    p = action("acknowledge", "acknowledge: escalation of the incident's pages stops", aliases=("ack",))
    p.add_argument("--comment", help="optional comment for the timeline")
    p = action("resolve", "resolve: the service is back")
    p.add_argument("--reason", required=True, help="how it was resolved")
    p = action("close", "close, with a reason (from any open status)")
    p.add_argument("--reason", required=True, help="why it can be closed (e.g. 'false alarm')")
    p = action("note", "add a note to the timeline")
    p.add_argument("--text", required=True, help="the note")
    p = action("level", "change the response level; the roles the new level newly engages are paged")
    p.add_argument("level", choices=["I", "II", "III"], help="the new level")
    p.add_argument("--reason", required=True, help="why")
    p = action("handover", "hand over command to another contact")
    p.add_argument("--to", required=True, help="who commands from now on (contact id or name)")
    p.add_argument("--note", help="optional: what the new commander should know")
    p = action("rerun", "run the incident's runbook again on it (from its deployment)")
    p.add_argument("--reason", help="optional: why")
    p.add_argument("--runbook", help="another runbook id to run on the incident (default: its own)")
    p = action("resume", "resume the incident's run that crashed, failed or was cancelled: the same run goes on, "
                         "what it did stands")
    p.add_argument("--reason", help="optional: why")
    p = action("cancel", "cancel the incident's runbook run (pages nobody)")
    p.add_argument("--reason", required=True, help="why it must stop")

    p = actions.add_parser("view", help="print the incident's live view (the Prefect artifact incident-<id>)")
    p.add_argument("incident", help="incident id, e.g. INC-2026-0001")
    p.set_defaults(func=cmd_view, action="view")
