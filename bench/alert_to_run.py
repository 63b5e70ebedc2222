"""Alert → flow-run start, and alert → first page delivered, side by side:
the intake's warm executor against Prefect's default `serve()` in the same run.

    .venv/bin/python bench/alert_to_run.py [--alerts 50] [--spacing 1.0] [--burst-spacing 0.2] [--baseline-alerts 10]

Warm: `firebreak serve` (executor warm) runs each alert's runbook in its own threads
as soon as the alert is committed; measured twice, with alerts (each a new incident)
arriving --spacing apart, and in a burst --burst-spacing apart. Baseline: the same intake creating the runs from
the `run-runbook` deployment, served by `run_runbook.serve()` with Prefect's default
settings (a new process per run, polling every 10 s). The runbook pages
technical_support (notify), delivered to a local receiver (the simulator's inbox).
Times: POST sent → the flow run's start_time (Prefect) and → the page's sent_at
(records). Uses PREFECT_API_URL if set, else the local server. Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import httpx  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.intake_stack import ROOT, TOKEN, IntakeProcess, alertmanager_body, percentile  # noqa: E402

RUNBOOK = {"id": "bench-page", "title": "Bench page", "description": "Page technical support once.", "version": "1",
           "level": {"default": "III"}, "roles": ["technical_support"],
           "steps": [{"id": "page", "action": "notify",
                      "with": {"to": ["technical_support"], "title": "bench", "message": "bench page"}}]}


def measure(intake: IntakeProcess, alerts: int, spacing: float, timeout: float) -> tuple[list[float], list[float]]:
    from prefect.client.orchestration import get_client

    sent: dict[str, datetime] = {}
    tag = time.time_ns()
    for i in range(alerts):
        at = datetime.now(timezone.utc)
        response = httpx.post(f"{intake.url}/v1/alerts/alertmanager",
                              headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                              content=json.dumps(alertmanager_body(f"lat-{tag}-{i}")).encode(), timeout=30)
        sent[response.json()["alerts"][0]["incident_id"]] = at
        time.sleep(spacing)
    engine = create_engine(intake.records_url())
    deadline = time.monotonic() + timeout
    starts: dict[str, float] = {}
    pages: dict[str, float] = {}
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and (len(starts) < alerts or len(pages) < alerts):
            with engine.connect() as connection:
                rows = connection.execute(text("select id, flow_run_id from incidents")).all()
                first_pages = connection.execute(text(
                    "select incident_id, min(sent_at) from notifications where status = 'delivered' "
                    "group by incident_id")).all()
            for incident_id, flow_run_id in rows:
                if incident_id in sent and incident_id not in starts and flow_run_id:
                    run = client.read_flow_run(flow_run_id)
                    if run.start_time:
                        starts[incident_id] = (run.start_time - sent[incident_id]).total_seconds()
            for incident_id, sent_at in first_pages:
                if incident_id in sent and incident_id not in pages and sent_at:
                    stamp = datetime.fromisoformat(str(sent_at)).replace(tzinfo=timezone.utc)
                    pages[incident_id] = (stamp - sent[incident_id]).total_seconds()
            time.sleep(0.5)
    return list(starts.values()), list(pages.values())


def postgres_prefect_server() -> Any:
    """A Prefect server of its own on a fresh PostgreSQL database (127.0.0.1:5432, trust auth);
    stopped when this process exits."""
    import atexit

    import psycopg

    from bench.intake_stack import free_port
    from firebreak.cli.prefect_server import PrefectServer, start_local_server, wait_until_healthy

    name = "firebreak_bench_prefect"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    home = Path(tempfile.mkdtemp(prefix="firebreak-bench-prefect-"))
    port = free_port()
    process = start_local_server(home, port, home / "server.log", detach=False)
    atexit.register(process.terminate)
    api_url = f"http://127.0.0.1:{port}/api"
    wait_until_healthy(api_url, process, home / "server.log")
    os.environ.pop("PREFECT_API_DATABASE_CONNECTION_URL")
    os.environ["PREFECT_API_URL"] = api_url
    return PrefectServer(api_url, started_here=True)


def show(label: str, starts: list[float], pages: list[float], alerts: int) -> None:
    def figures(values: list[float]) -> str:
        if not values:
            return "none"
        return f"p50 {percentile(values, 0.5):.2f}s  p99 {percentile(values, 0.99):.2f}s  (n={len(values)}/{alerts})"
    print(f"{label:<28} alert → run start: {figures(starts)}")
    print(f"{'':<28} alert → first page: {figures(pages)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=50)
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between alerts (paced)")
    parser.add_argument("--burst-spacing", type=float, default=0.2, help="seconds between alerts (burst); 0 skips")
    parser.add_argument("--baseline-alerts", type=int, default=10)
    parser.add_argument("--prefect-database", choices=["default", "postgres"], default="default",
                        help="default: PREFECT_API_URL or the local SQLite server; postgres: start a Prefect server "
                             "on the local PostgreSQL (the production layout) for this run")
    args = parser.parse_args()

    if args.prefect_database == "postgres":
        server = postgres_prefect_server()
    else:
        from firebreak.cli.prefect_server import ensure_server

        server = ensure_server()
    print(f"Prefect server: {server.api_url} ({args.prefect_database} database)", flush=True)
    from simulator import start_simulator

    receiver = start_simulator(fault="none")
    directory = Path(tempfile.mkdtemp(prefix="firebreak-bench-runbook-"))
    runbook = directory / "bench-page.yaml"
    runbook.write_text(yaml.safe_dump(RUNBOOK))
    env = {"PREFECT_API_URL": server.api_url, "FIREBREAK_INBOX": f"{receiver.host}:{receiver.port}"}
    try:
        with IntakeProcess({"runbook": str(runbook)}, executor="warm", env=env) as warm:
            measure(warm, 3, spacing=0.5, timeout=60)  # warm-up: the first run imports the runbook machinery
            warm_starts, warm_pages = measure(warm, args.alerts, spacing=args.spacing, timeout=180)
            burst = measure(warm, args.alerts, spacing=args.burst_spacing, timeout=300) if args.burst_spacing else None
        home = Path(tempfile.mkdtemp(prefix="firebreak-bench-intake-"))
        runner_env = {**os.environ, **env, "FIREBREAK_HOME": str(home)}
        runner_env.pop("PREFECT_RUNNER_POLL_FREQUENCY", None)  # Prefect's default (10 s)
        runner = subprocess.Popen([sys.executable, "-c", "from flows.engine import run_runbook; "
                                   "run_runbook.serve(name='run-runbook', print_starting_message=False)"],
                                  env=runner_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(8)  # let the runner register the deployment
            with IntakeProcess({"runbook": str(runbook)}, executor="deployment", env=env, home=home) as served:
                base_starts, base_pages = measure(served, args.baseline_alerts, spacing=2.0, timeout=180)
        finally:
            runner.terminate()
            runner.wait(timeout=30)
    finally:
        receiver.stop()
    show(f"warm, one per {args.spacing:g}s", warm_starts, warm_pages, args.alerts)
    if burst is not None:
        show(f"warm, burst one per {args.burst_spacing:g}s", *burst, args.alerts)
    show("Prefect serve() defaults", base_starts, base_pages, args.baseline_alerts)
    if warm_starts and base_starts:
        print(f"ratio of p50 run start, serve()/warm: {percentile(base_starts, 0.5) / percentile(warm_starts, 0.5):.1f}×")


if __name__ == "__main__":
    main()
