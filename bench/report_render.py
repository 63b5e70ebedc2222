"""Report rendering and audit-chain verification for an incident with 10,000 timeline events.

The issue's budget: Markdown + HTML report under 2 s, chain verification under 1 s.
The baseline, measured in the same run on the same events, is the least any
report must do: serialise every event once with json.dumps.

    .venv/bin/python bench/report_render.py [--events 10000] [--repeat 3]

Uses a throw-away FIREBREAK_HOME (SQLite) unless FIREBREAK_HOME or
FIREBREAK_DATABASE_URL is set. Prints figures and ratios; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("FIREBREAK_HOME", tempfile.mkdtemp(prefix="firebreak-bench-"))


def build_incident(count: int) -> str:
    """One incident with `count` events, sealed by the real append path in one transaction."""
    from records import incidents
    from records.db import session_scope
    from records.models import EventPhase

    incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title="Bench outage",
                                       level="I", source="drill", drill=True, parameters={"affected_customers": 20000})
    start = incident.triggered_at
    steps = ["assess", "isolate_failed_node", "fail_over", "publish_fault_notice", "verify_recovery"]
    with session_scope() as session:
        incidents._locked(session, incident.id)
        for n in range(1, count):
            step = steps[n % len(steps)]
            phase = EventPhase.intent if n % 2 else EventPhase.outcome
            incidents._append(session, incident.id, phase=phase, status="started" if n % 2 else "succeeded",
                              actor="runbook:system-outage", step_id=step, action="http", attempt=1 + n % 3,
                              summary=f"{step}: check {n} of the service <health> & routing",
                              data={"output": {"status": 200, "json": {"n": n, "active_node": "standby"}}},
                              at=start + timedelta(milliseconds=50 * n))
    return incident.id


def timed(function, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - began)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    args = parser.parse_args(argv)

    from records import audit
    from reports.render import load_record, render

    began = time.perf_counter()
    incident_id = build_incident(args.events)
    print(f"built {incident_id} with {args.events} events in {time.perf_counter() - began:.1f}s "
          f"({os.environ.get('FIREBREAK_DATABASE_URL') or os.environ['FIREBREAK_HOME']})")

    load_s, record = timed(lambda: load_record(incident_id), args.repeat)
    render_s, rendered = timed(lambda: render(record, "en"), args.repeat)
    verify_s, verification = timed(lambda: audit.verify(incident_id), args.repeat)
    rows = [audit.event_fields(e) for e in record.events]
    baseline_s, dumped = timed(lambda: json.dumps(rows, default=str), args.repeat)
    assert verification.intact and verification.events == args.events

    md_kb, html_kb = len(rendered.markdown) / 1024, len(rendered.html) / 1024
    print(f"load record (events, notifications, chain check):   {load_s * 1000:8.1f} ms")
    print(f"render Markdown + HTML (en, {md_kb:.0f} KB + {html_kb:.0f} KB):  {render_s * 1000:8.1f} ms   budget 2000 ms")
    print(f"load + render (what `firebreak report` does):       {(load_s + render_s) * 1000:8.1f} ms")
    print(f"verify the chain (read + {args.events} sha256):         {verify_s * 1000:8.1f} ms   budget 1000 ms")
    print(f"baseline: json.dumps of the same events ({len(dumped) / 1024:.0f} KB): {baseline_s * 1000:8.1f} ms")
    print(f"ratio render / baseline: {render_s / baseline_s:.1f}x   ratio verify / baseline: {verify_s / baseline_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
