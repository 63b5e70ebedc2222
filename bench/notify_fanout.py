"""How long the notify action takes to deliver 100 pages to a receiver that answers in 200 ms.

The same notify code path (roster lookup, per-contact zh/en rendering, signed
ack links, one delivery record per channel, Apprise json://) runs twice in this
process against the same local receiver: once as it ships (concurrent sends)
and once with one send at a time, the sequential baseline. Target: under 2 s
for the concurrent run.

    .venv/bin/python bench/notify_fanout.py [--pages 100] [--delay 0.2]

Uses a throw-away FIREBREAK_HOME (SQLite records); needs no Prefect server.
Prints figures and the ratio; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
_HOME = Path(tempfile.mkdtemp(prefix="firebreak-bench-"))
os.environ["FIREBREAK_HOME"] = str(_HOME)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


class SlowReceiver:
    """Answers every POST after `delay` seconds, many at once (one thread per request)."""

    def __init__(self, delay: float):
        self.count = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                with lock:
                    outer.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 256
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def write_config(pages: int, address: str) -> None:
    import yaml

    contacts = [{"id": f"agent-{n:03d}", "name": f"Agent {n}", "department": "Customer Service",
                 "roles": ["reserve_staff"], "locale": "zh" if n % 2 else "en",
                 "channels": [f"json://{address}/inbox/agent-{n:03d}"]} for n in range(pages)]
    files = {
        "FIREBREAK_CONTACTS_FILE": {"contacts": contacts},
        "FIREBREAK_ROSTER_FILE": {"timezone": "Asia/Shanghai", "shifts": []},
        "FIREBREAK_ESCALATION_FILE": {"policies": {}},
        "FIREBREAK_ROUTING_FILE": {"levels": {"I": ["reserve_staff"], "II": ["reserve_staff"],
                                              "III": ["reserve_staff"]}, "groups": {"default": {}}},
    }
    for variable, document in files.items():
        path = _HOME / f"{variable.lower()}.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        os.environ[variable] = str(path)
    (_HOME / "runbooks").mkdir(exist_ok=True)
    os.environ["FIREBREAK_RUNBOOKS_DIR"] = str(_HOME / "runbooks")


def page_everyone(label: str, *, parallel: int) -> float:
    import tasks.notify as notify_task
    from records import incidents
    from tasks.base import Attempt, StepContext

    incident = incidents.open_incident(runbook_id="bench", runbook_version="1", title=f"fan-out {label}",
                                       level="II", source="cli", parameters={}, drill=True)
    context = StepContext(incident_id=incident.id, runbook_id="bench", step_id="page_reserve",
                          step_title="Page the reserve agents", action="notify", level="II", drill=True, timeout=600)
    arguments = notify_task.NotifyInput(to=["reserve_staff"], event="triggered", title="Report for duty",
                                        message="Log in to the agent desktop and take calls from the main queue.")
    notify_task.MAX_PARALLEL_SENDS = parallel
    started = time.perf_counter()
    output = notify_task.notify.function(arguments, Attempt(context=context, number=1,
                                                            deadline=time.monotonic() + 600))
    elapsed = time.perf_counter() - started
    if output.delivered != len(output.deliveries):
        raise SystemExit(f"{label}: only {output.delivered} of {len(output.deliveries)} delivered")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.2, help="receiver answer time in seconds")
    args = parser.parse_args()
    receiver = SlowReceiver(args.delay)
    write_config(args.pages, receiver.address)
    import tasks.notify as notify_task
    from firebreak.settings import reload_settings

    reload_settings()
    shipped = notify_task.MAX_PARALLEL_SENDS
    page_everyone("warm-up", parallel=shipped)  # imports, migrations, first connections
    concurrent = page_everyone("concurrent", parallel=shipped)
    sequential = page_everyone("sequential", parallel=1)
    print(f"{args.pages} pages, receiver answers in {args.delay * 1000:.0f} ms "
          f"({receiver.count} requests received over 3 runs)")
    print(f"  concurrent (up to {shipped} sends at once): {concurrent:6.2f} s   "
          f"{'meets' if concurrent < 2 else 'misses'} the 2 s target")
    print(f"  sequential baseline (one at a time):      {sequential:6.2f} s")
    print(f"  speed-up: {sequential / concurrent:.1f}×")


if __name__ == "__main__":
    main()
