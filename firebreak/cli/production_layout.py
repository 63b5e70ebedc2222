"""`firebreak up --layout production`: the production layout on one machine, from one configuration.

    Prefect server on PostgreSQL (or PREFECT_API_URL: a server that already runs on it)
    N intake replicas   `firebreak serve --executor none --port P+i`   (behind your load balancer)
    M run workers       `firebreak worker --slots S`                    (the runs, from the outbox)
    the deployments     `firebreak serve-deployments`                   (UI-started runs; reconcile every minute)

Every process gets the whole configuration in its environment (`production_environment`): the
records database, Prefect's API, the shared acknowledgement secret and audit key, the process
counts the connection budget counts. The budget is checked here before anything starts, and by
each process again as it starts. A replica or worker that dies is started again (after a second),
as a service manager would; the deployments runner or the Prefect server dying stops the stack.

The same processes, on several machines, are the README's production section: run each command
there with the environment this prints.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

from firebreak.errors import ConfigInvalid
from firebreak.settings import get_settings, reload_settings

#: What every process of the layout is given (besides anything else already in the environment).
SHARED_SETTINGS = ("FIREBREAK_DATABASE_URL", "PREFECT_API_URL", "FIREBREAK_ACK_SECRET", "FIREBREAK_AUDIT_KEY",
                   "FIREBREAK_PUBLIC_URL", "FIREBREAK_INTAKE_EXECUTOR", "FIREBREAK_INTAKE_REPLICAS",
                   "FIREBREAK_WORKER_PROCESSES", "FIREBREAK_WORKER_SLOTS")
SECRET_SETTINGS = frozenset({"FIREBREAK_ACK_SECRET", "FIREBREAK_AUDIT_KEY"})
RESTART_DELAY_SECONDS = 1.0


def prefect_database_url() -> str | None:
    """The Prefect server's database, from Prefect's own setting (either of its names)."""
    return (os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL")
            or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"))


def production_environment(args: argparse.Namespace, prefect_api_url: str) -> dict[str, str]:
    """The one configuration every process of the layout runs with."""
    from notifications.acknowledgement.links import _secret
    from records.audit_key import load_key

    settings = get_settings()
    env = {**os.environ,
           "FIREBREAK_DATABASE_URL": settings.records_url,
           "PREFECT_API_URL": prefect_api_url,
           # One secret and one key for all: a link signed by one replica is accepted by every other,
           # and the audit chain's heads are signed alike whoever wrote them.
           "FIREBREAK_ACK_SECRET": _secret().decode(),
           "FIREBREAK_AUDIT_KEY": load_key().secret.decode(),
           "FIREBREAK_PUBLIC_URL": os.environ.get("FIREBREAK_PUBLIC_URL", f"http://127.0.0.1:{args.intake_port}"),
           "FIREBREAK_INTAKE_EXECUTOR": "none",  # the workers run the runs
           "FIREBREAK_INTAKE_REPLICAS": str(args.intake_replicas),
           "FIREBREAK_WORKER_PROCESSES": str(args.workers),
           "FIREBREAK_WORKER_SLOTS": str(args.slots if args.slots is not None
                                         else os.environ.get("FIREBREAK_WORKER_SLOTS", "16")),
           "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    return env


def _check_layout(args: argparse.Namespace) -> None:
    from sqlalchemy.engine import make_url

    if args.intake_replicas < 1 or args.workers < 1:
        raise ConfigInvalid("--intake-replicas and --workers must each be at least 1")
    records = get_settings().records_url
    if make_url(records).get_backend_name() != "postgresql":
        raise ConfigInvalid("the production layout keeps the records on PostgreSQL: set FIREBREAK_DATABASE_URL="
                            "postgresql+psycopg://user@host/database (now: "
                            f"{make_url(records).render_as_string(hide_password=True)})")
    if not os.environ.get("PREFECT_API_URL"):
        prefect_db = prefect_database_url()
        if not prefect_db or not prefect_db.startswith("postgresql"):
            raise ConfigInvalid("the production layout runs Prefect on PostgreSQL: set PREFECT_API_URL (a server "
                                "on PostgreSQL already) or PREFECT_SERVER_DATABASE_CONNECTION_URL="
                                "postgresql+asyncpg://user@host/database for the server started here")


def _budget(env: dict[str, str]) -> str:
    """The connection budget of the whole layout, checked before anything starts (each process checks again)."""
    from intake.connection_budget import check_budget, plan_connections, server_limit
    from intake.settings import IntakeSettings, WorkerSettings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings = reload_settings()
        plan = plan_connections("worker", intake=IntakeSettings(), worker=WorkerSettings(), settings=settings)
        limit = server_limit(settings.records_url)
        check_budget(plan, limit)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reload_settings()
    budget = f"of budget {plan.budget}" if plan.budget is not None else "(no FIREBREAK_DB_CONNECTION_BUDGET set)"
    server = f"; {limit.describe()}" if limit else ""
    return f"records connections: {plan.formula()} {budget}{server}"


def cmd_up_production(args: argparse.Namespace) -> int:
    from firebreak.cli.commands.intake import _child, _stop
    from firebreak.cli.prefect_server import PrefectServer, healthy, start_local_server, wait_until_healthy
    from records.db import migrate

    _check_layout(args)
    settings = get_settings()
    prefect_process: subprocess.Popen[bytes] | None = None
    if os.environ.get("PREFECT_API_URL"):
        server = PrefectServer(os.environ["PREFECT_API_URL"], started_here=False)
        if not healthy(server.api_url):
            raise ConfigInvalid(f"PREFECT_API_URL={server.api_url} is set but that server does not answer /health")
    else:
        port = settings.prefect_port
        home = settings.resolved_home / "prefect-production"
        log_path = settings.resolved_home / "prefect-server-production.log"
        print(f"starting the Prefect server on PostgreSQL on port {port} (log: {log_path}) …", flush=True)
        prefect_process = start_local_server(home, port, log_path, detach=True)
        server = PrefectServer(f"http://127.0.0.1:{port}/api", started_here=True)
        try:
            wait_until_healthy(server.api_url, prefect_process, log_path)
        except BaseException:
            _end(prefect_process)
            raise
    try:
        env = production_environment(args, server.api_url)
        print(_budget(env), flush=True)
        migrate()  # once, before the processes race to do it
        return _supervise(args, env, server, _child, _stop)
    finally:
        if prefect_process is not None:
            _end(prefect_process)
            print("Prefect server stopped", flush=True)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _supervise(args: argparse.Namespace, env: dict[str, str], server: Any, child: Any, stop: Any) -> int:
    commands: dict[str, list[str]] = {"deployments": ["serve-deployments"]}
    for i in range(args.intake_replicas):
        commands[f"intake-{i + 1}"] = ["serve", "--executor", "none", "--port", str(args.intake_port + i)]
    for i in range(args.workers):
        commands[f"worker-{i + 1}"] = ["worker"]
    running: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def start(name: str, why: str = "") -> None:
        running[name] = child(commands[name], env)
        where = f" http://127.0.0.1:{commands[name][-1]}" if name.startswith("intake") else ""
        print(f"{name}: pid {running[name].pid}{where}{why}", flush=True)

    shown = ", ".join(f"{k}={'***' if k in SECRET_SETTINGS else _hide(env[k])}" for k in SHARED_SETTINGS)
    print(f"every process gets: {shown}", flush=True)
    code = 0
    try:
        for name in commands:
            start(name)
        print(f"Prefect UI: {server.ui_url}   intake replicas: ports {args.intake_port}…"
              f"{args.intake_port + args.intake_replicas - 1}   workers: {args.workers} × "
              f"{env['FIREBREAK_WORKER_SLOTS']} slot(s)", flush=True)
        print("production layout up; Ctrl-C stops everything.", flush=True)
        while not stopping:
            for name, process in list(running.items()):
                if process.poll() is None or stopping:
                    continue
                if name == "deployments":
                    print(f"{name} exited with code {process.returncode}; stopping the stack", file=sys.stderr,
                          flush=True)
                    stopping, code = True, 1
                    break
                print(f"{name} (pid {process.pid}) exited with code {process.returncode}; starting it again",
                      file=sys.stderr, flush=True)
                time.sleep(RESTART_DELAY_SECONDS)
                start(name, " (restarted)")
            time.sleep(0.3)
    finally:
        print("stopping …", flush=True)
        stop(list(running.items()))
    return code


def _hide(value: str) -> str:
    if "://" in value:
        from sqlalchemy.engine import make_url

        try:
            return make_url(value).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - not a database URL (PREFECT_API_URL)
            return value
    return value


def register_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", choices=["local", "production"], default="local",
                   help="local: the embedded stack (default); production: Prefect and the records on PostgreSQL, "
                        "--intake-replicas intake processes and --workers run workers")
    p.add_argument("--intake-replicas", type=int, default=2, help="production: intake replicas (default 2)")
    p.add_argument("--workers", type=int, default=2, help="production: `firebreak worker` processes (default 2)")
    p.add_argument("--slots", type=int, help="production: run slots per worker (default FIREBREAK_WORKER_SLOTS, 16)")
    p.add_argument("--intake-port", type=int, default=8700,
                   help="port of the intake (local: FIREBREAK_INTAKE_PORT when not given); production: of the "
                        "first replica, the others take the next ones (default 8700)")
