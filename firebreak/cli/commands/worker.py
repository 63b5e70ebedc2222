"""`firebreak worker`: a run executor of its own, without the HTTP intake.

The same executor the intake embeds (intake.runs.RunDispatcher): it claims alert-started runs
from the records database's outbox, no more than it has free slots, and runs them in-process.
Run any number, on any number of machines, against one records database (PostgreSQL) and one
Prefect server, with the intake on `firebreak serve --executor none`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any


def cmd_worker(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from firebreak.settings import get_settings
    from intake.settings import WorkerSettings

    overrides = {k: v for k, v in {"slots": args.slots, "poll_seconds": args.poll}.items() if v is not None}
    settings = WorkerSettings(**overrides)
    from intake.connection_budget import enforce

    # Before anything connects: refuse a configuration over the connection budget, and size the one
    # pool every run on this worker's slots shares (records.db) to the slots.
    connections = enforce("worker", worker=settings)
    if not os.environ.get("PREFECT_API_URL"):
        from firebreak.cli.prefect_server import ensure_server

        ensure_server()  # the local one; a configured server is used as it is, even while it is down
    from flows import first_pages
    from intake.runs import RunDispatcher

    first_pages.enable()  # a finished run's report waits for its neighbours' first pages (see there)
    sys.setswitchinterval(0.001)  # quick hand-offs between the claim loop and the slots (as the intake)
    worker = RunDispatcher("warm", max_concurrent_runs=settings.slots, poll_seconds=settings.poll_seconds,
                           heartbeat_seconds=settings.heartbeat_seconds, stale_after=settings.stale_seconds)
    stopping, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        (hurry if stopping.is_set() else stopping).set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker.start()
    records = make_url(get_settings().records_url).render_as_string(hide_password=True)
    print(f"run worker {worker.worker_id}: {settings.slots} slot(s); records {records}; "
          f"Prefect {os.environ.get('PREFECT_API_URL')}; polls every {settings.poll_seconds:g}s; {connections}",
          flush=True)
    while not stopping.wait(1.0):
        pass
    print("stopping: no new runs are claimed; claimed runs not yet begun go back to the outbox", flush=True)
    worker.stop()
    running = [future for future in worker.runs.values() if not future.done()]
    if running:
        print(f"waiting up to {args.grace:g}s for {len(running)} run(s) to end (a second signal: exit now; "
              "a run cut short is recorded as crashed by `firebreak reconcile`)", flush=True)
        deadline = time.monotonic() + args.grace
        while not hurry.is_set() and time.monotonic() < deadline and not all(f.done() for f in running):
            hurry.wait(0.2)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("worker", help="run alert-started runbook runs from the outbox (no HTTP)")
    p.add_argument("--slots", type=int, help="runs executed at once, at most (default 16, FIREBREAK_WORKER_SLOTS)")
    p.add_argument("--poll", type=float, metavar="SECONDS",
                   help="how often the outbox is looked at (default 0.5, FIREBREAK_WORKER_POLL_SECONDS)")
    p.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, how long runs already begun may take to end (default 30)")
    p.set_defaults(func=cmd_worker)
