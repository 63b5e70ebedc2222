"""`firebreak oncall [ROLE] [--at TIME]` and `firebreak ack INC-… --by NAME [--comment …]`."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--at expects an ISO time such as 2027-02-06T22:00 (roster zone) or 2027-02-06T14:00+00:00, got {text!r}"
        ) from None


def cmd_oncall(args: argparse.Namespace) -> int:
    from notifications.config import ConfigErrors, load_config
    from runbooks.roles import ROLES

    try:
        config = load_config()
    except ConfigErrors as exc:
        print(f"notifications configuration invalid: {exc}", file=sys.stderr)
        return 2
    if args.role and args.role not in ROLES:
        print(f"unknown role {args.role!r}; known: {', '.join(sorted(ROLES))}", file=sys.stderr)
        return 2
    roster = config.roster
    at = args.at or datetime.now(roster.zone)
    local = at.replace(tzinfo=roster.zone) if at.tzinfo is None else at.astimezone(roster.zone)
    print(f"on duty at {local:%Y-%m-%d %H:%M} {roster.zone.key} ({local.astimezone(timezone.utc):%H:%M}Z):")
    for role in [args.role] if args.role else sorted(ROLES):
        duty = roster.on_duty(role, local)
        if not duty.contacts and not args.role:
            continue  # a role nobody uses or holds; required roles are checked when the config loads
        people = ", ".join(f"{config.directory.get(c).name} ({c})" for c in duty.contacts) or "nobody"
        source = "; ".join(duty.shifts) + (f"; override {', '.join(duty.overrides)}" if duty.overrides else "")
        print(f"  {role:<24} {people}   [{source}]")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from notifications.acknowledgement.service import AcknowledgementInvalid, acknowledge_incident
    from records.incidents import IncidentNotFound

    try:
        result = acknowledge_incident(args.incident, by=args.by, via="cli", comment=args.comment)
    except (IncidentNotFound, AcknowledgementInvalid) as exc:
        print(f"not acknowledged: {exc}", file=sys.stderr)
        return 1
    if result.first:
        print(f"{result.incident_id} acknowledged by {result.by} at {result.at:%H:%M:%S}Z; escalation stops; "
              f"status {result.incident_status}")
    else:
        print(f"{result.incident_id} was already acknowledged by {result.first_by} via {result.first_via}; "
              f"your acknowledgement is recorded, nothing else changed")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("oncall", help="show who is on duty (duty roster), now or at --at")
    p.add_argument("role", nargs="?", help="one role (default: every role somebody holds)")
    p.add_argument("--at", type=_parse_time, help="ISO time; without an offset it is read in the roster's zone")
    p.set_defaults(func=cmd_oncall)

    p = subparsers.add_parser("ack", help="acknowledge an incident: stops escalation of its pages")
    p.add_argument("incident", help="incident id, e.g. INC-2026-0001")
    p.add_argument("--by", required=True, help="who acknowledges")
    p.add_argument("--comment", help="optional comment for the timeline")
    p.set_defaults(func=cmd_ack)
