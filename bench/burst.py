"""A burst of new incidents: alert → first page delivered, p50 and p99, on the embedded default and
on the production layout, each beside a paced baseline from the same run.

    .venv/bin/python bench/burst.py [--layout embedded|production|both] [--burst 50] [--burst-rate 5]
                                    [--paced 20] [--paced-rate 1]

embedded:   `firebreak serve` (warm executor: runs in the intake process), SQLite records, the local
            Prefect server on SQLite (PREFECT_API_URL if set, else `firebreak server`'s).
production: `firebreak up --layout production` (2 intake replicas recording only, 2 workers × 8 slots,
            Prefect on PostgreSQL, records on PostgreSQL), both databases on a private PostgreSQL
            cluster started for this run (initdb/pg_ctl; skipped without them); alerts alternate
            between the replicas.

Every alert is a new incident whose runbook pages technical support once (two contacts; the
simulator's inbox receives them). Times: POST sent → the incident's first page `sent_at`
(records). Paced: --paced alerts at --paced-rate a second; burst: --burst alerts at --burst-rate
a second. Prints p50/p99 of each and burst p99 ÷ paced p99. Asserts nothing; tunes nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import httpx  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.intake_stack import ROOT, TOKEN, IntakeProcess, alertmanager_body, free_port, percentile  # noqa: E402

RUNBOOK = {"id": "bench-burst-page", "title": "Bench burst page", "description": "Page technical support once.",
           "version": "1", "level": {"default": "III"}, "roles": ["technical_support"],
           "steps": [{"id": "page", "action": "notify",
                      "with": {"to": ["technical_support"], "title": "bench", "message": "bench page"}}]}
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


ROLES = (("prefect_server_main", "Prefect server"), ("firebreak worker", "workers"),
         ("serve-deployments", "deployments runner"), ("writer_process", "intake"), ("firebreak serve", "intake"),
         ("firebreak up", "supervisor"), ("postgres", "PostgreSQL"))


class CpuMeter:
    """CPU seconds the processes of a layout used, by role, from /proc: every process under the
    given roots (a layout's supervisor, the Prefect server, a PostgreSQL cluster's postmaster)."""

    def __init__(self) -> None:
        self.roots: set[int] = set()
        self.tick = os.sysconf("SC_CLK_TCK")

    def add_root(self, pid: int | None) -> None:
        if pid:
            self.roots.add(pid)

    def read(self) -> dict[str, float]:
        parents: dict[int, int] = {}
        used: dict[int, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            parents[int(entry)] = int(fields[1])
            used[int(entry)] = (int(fields[11]) + int(fields[12])) / self.tick
        totals: dict[str, float] = {}
        for pid, seconds in used.items():
            ancestor = pid
            while ancestor not in self.roots and ancestor > 1:
                ancestor = parents.get(ancestor, 0)
            if ancestor in self.roots:
                role = self._role(pid)
                totals[role] = totals.get(role, 0.0) + seconds
        return totals

    @staticmethod
    def _role(pid: int) -> str:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "other"
        return next((role for mark, role in ROLES if mark in command), "other")


#: The meter of the layout being measured (None: not measured).
METER: CpuMeter | None = None


def cpu_per_run(before: dict[str, float], after: dict[str, float], runs: int) -> str:
    """CPU seconds a run cost each role over a phase (its background work included), and the runs a
    second this machine's cores would sustain at that cost. A process that ended during the phase is
    not counted (its CPU left /proc with it): the layouts here restart none in a benchmark."""
    spent = {role: after.get(role, 0.0) - before.get(role, 0.0) for role in after}
    spent = {role: seconds for role, seconds in spent.items() if seconds >= 0.005 * runs}
    total = sum(spent.values())
    shown = ", ".join(f"{role} {seconds / runs:.2f}" for role, seconds in sorted(spent.items(), key=lambda kv: -kv[1]))
    cores = os.cpu_count() or 1
    return (f"CPU per run: {total / runs:.2f} s ({shown}); {cores} core(s) sustain at most "
            f"{cores * runs / total:.1f} runs/s" if total else "CPU per run: not measured")


def measure(intakes: list[str], records_url: str, alerts: int, rate: float, timeout: float) -> list[float]:
    """Send `alerts` new incidents at `rate` a second (alternating intakes); seconds from each POST
    to its incident's first delivered page."""
    sent: dict[str, datetime] = {}
    tag = time.time_ns()
    cpu_before = METER.read() if METER else {}
    start = time.monotonic()
    with httpx.Client(timeout=30) as client:
        for i in range(alerts):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            at = datetime.now(timezone.utc)
            body = json.dumps(alertmanager_body(f"burst-{tag}-{i}")).encode()
            response = client.post(f"{intakes[i % len(intakes)]}/v1/alerts/alertmanager", headers=AUTH, content=body)
            response.raise_for_status()
            sent[response.json()["alerts"][0]["incident_id"]] = at
    engine = create_engine(records_url)
    pages: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(pages) < alerts:
            with engine.connect() as connection:
                first_pages = connection.execute(text(
                    "select incident_id, min(sent_at) from notifications where status = 'delivered' "
                    "group by incident_id")).all()
            for incident_id, sent_at in first_pages:
                if incident_id in sent and incident_id not in pages and sent_at:
                    stamp = datetime.fromisoformat(str(sent_at)).replace(tzinfo=timezone.utc)
                    pages[incident_id] = (stamp - sent[incident_id]).total_seconds()
            time.sleep(0.5)
    finally:
        engine.dispose()
    if len(pages) < alerts:
        print(f"  ({alerts - len(pages)} of {alerts} incidents had no delivered page after {timeout:.0f}s)")
    finished = _wait_until_finished(records_url, list(sent), deadline)
    if METER and finished:
        CPU[len(STAGES)] = cpu_per_run(cpu_before, METER.read(), alerts)
    STAGES[len(STAGES)] = stages(records_url, list(sent))
    return list(pages.values())


def _wait_until_finished(records_url: str, incident_ids: list[str], deadline: float) -> bool:
    """Until every run of these incidents has ended (the next phase starts on a quiet layout, and the
    CPU a phase used is all of its runs'); False if the deadline came first."""
    engine = create_engine(records_url)
    marks = ", ".join(f"'{i}'" for i in incident_ids)  # ids the intake made (INC-YYYY-NNNN), not user text
    try:
        while True:
            with engine.connect() as connection:
                left = connection.execute(text(
                    f"select count(*) from run_requests where incident_id in ({marks}) and finished_at is null")).scalar()
            if not left:
                return True
            if time.monotonic() > deadline:
                print(f"  ({left} run(s) still running at the deadline: CPU per run not measured)")
                return False
            time.sleep(0.5)
    finally:
        engine.dispose()


#: Per measure() call, where the time went (see stages()); printed beside the burst figures.
STAGES: dict[int, dict[str, list[float]]] = {}
#: Per measure() call, the CPU its runs cost (see cpu_per_run()).
CPU: dict[int, str] = {}


def stages(records_url: str, incident_ids: list[str]) -> dict[str, list[float]]:
    """Seconds each incident spent in each stage, from the records: stored → claimed (waiting for a
    free slot), claimed → run started (creating the Prefect flow run), started → first page delivered,
    started → finished (the slot is held until the run ends)."""
    engine = create_engine(records_url)
    marks = ", ".join(f"'{i}'" for i in incident_ids)  # ids the intake made (INC-YYYY-NNNN), not user text
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(
                "select r.created_at, r.claimed_at, r.started_at, r.finished_at, (select min(n.sent_at) from notifications n "
                "where n.incident_id = r.incident_id and n.status = 'delivered') "
                f"from run_requests r where r.incident_id in ({marks})")).all()
            # The runs must also end well: a run that failed or crashed may still have paged first.
            failed = connection.execute(text(
                f"select count(*) from incidents where id in ({marks}) and run_state in ('failed', 'crashed')")).scalar()
    finally:
        engine.dispose()

    def stamp(value: Any) -> datetime:
        return datetime.fromisoformat(str(value)).replace(tzinfo=timezone.utc)

    print(f"  runs failed or crashed: {failed} of {len(incident_ids)}", flush=True)
    found: dict[str, list[float]] = {"waiting for a slot": [], "creating the run": [], "run to first page": [],
                                     "run (slot held)": []}
    for created, claimed, started, finished, paged in rows:
        if finished and started:
            found["run (slot held)"].append((stamp(finished) - stamp(started)).total_seconds())
        if created and claimed and started and paged:
            found["waiting for a slot"].append((stamp(claimed) - stamp(created)).total_seconds())
            found["creating the run"].append((stamp(started) - stamp(claimed)).total_seconds())
            found["run to first page"].append((stamp(paged) - stamp(started)).total_seconds())
    return found


def figures(values: list[float], alerts: int) -> str:
    if not values:
        return "none"
    return f"p50 {percentile(values, 0.5):.2f}s  p99 {percentile(values, 0.99):.2f}s  (n={len(values)}/{alerts})"


def run_layout(label: str, intakes: list[str], records_url: str, args: argparse.Namespace) -> dict[str, Any]:
    measure(intakes, records_url, 3, 2.0, timeout=120)  # warm-up: the first runs import the runbook machinery
    paced = measure(intakes, records_url, args.paced, args.paced_rate, timeout=300)
    burst = measure(intakes, records_url, args.burst, args.burst_rate, timeout=600)
    print(f"{label:<12} paced, {args.paced_rate:g}/s:  alert → first page {figures(paced, args.paced)}", flush=True)
    print(f"{'':<12} burst, {args.burst_rate:g}/s:  alert → first page {figures(burst, args.burst)}", flush=True)
    if paced and burst:
        ratio = percentile(burst, 0.99) / percentile(paced, 0.99)
        print(f"{'':<12} burst p99 ÷ paced p99: {ratio:.1f}×", flush=True)
    for stage, values in STAGES[len(STAGES) - 1].items():
        print(f"{'':<12}   burst, {stage}: {figures(values, args.burst)}", flush=True)
    for phase, index in (("paced", len(STAGES) - 2), ("burst", len(STAGES) - 1)):
        if index in CPU:
            print(f"{'':<12}   {phase}, {CPU[index]}", flush=True)
    return {"paced": paced, "burst": burst}


def write_config(directory: Path) -> dict[str, str]:
    runbook = directory / "bench-burst-page.yaml"
    runbook.write_text(yaml.safe_dump(RUNBOOK))
    sources, routes = directory / "sources.yaml", directory / "routes.yaml"
    sources.write_text(yaml.safe_dump({"sources": {"alertmanager": {
        "format": "alertmanager", "auth": {"type": "bearer", "token_env": "FIREBREAK_BENCH_TOKEN"},
        "rate_limit": None}}}))
    routes.write_text(yaml.safe_dump({"route": {"runbook": str(runbook)}}))
    return {"runbook": str(runbook), "FIREBREAK_INTAKE_SOURCES_FILE": str(sources),
            "FIREBREAK_INTAKE_ROUTES_FILE": str(routes), "FIREBREAK_BENCH_TOKEN": TOKEN}


def embedded(args: argparse.Namespace, inbox: str) -> None:
    from firebreak.cli.prefect_server import ensure_server, own_server_state

    server = ensure_server()
    directory = Path(tempfile.mkdtemp(prefix="firebreak-bench-burst-"))
    config = write_config(directory)
    env = {"PREFECT_API_URL": server.api_url, "FIREBREAK_INBOX": inbox}
    with IntakeProcess({"runbook": config["runbook"]}, executor="warm", env=env) as intake:
        global METER
        METER = CpuMeter()
        METER.add_root(intake.process.pid if intake.process else None)
        state = own_server_state()
        METER.add_root(int(str(state["pid"])) if state else None)
        try:
            run_layout("embedded", [intake.url], intake.records_url(), args)
        finally:
            METER = None


@contextmanager
def production_stack(args: argparse.Namespace, inbox: str):  # type: ignore[no-untyped-def]
    from tests.private_postgres import private_cluster

    directory = Path(tempfile.mkdtemp(prefix="firebreak-bench-burst-production-"))
    config = write_config(directory)
    with ExitStack() as stack:
        cluster = stack.enter_context(private_cluster(max_connections=100))
        cluster.create_database("records", owner="firebreak")
        cluster.create_database("prefect")
        port = free_port()
        while True:  # two consecutive free ports for the replicas
            try:
                import socket

                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 1))
                break
            except OSError:
                port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update({k: v for k, v in config.items() if k != "runbook"})
        records = cluster.url("records", user="firebreak")
        env.update({"FIREBREAK_HOME": str(directory / "home"), "FIREBREAK_DATABASE_URL": records,
                    "PREFECT_SERVER_DATABASE_CONNECTION_URL": cluster.url("prefect", driver="asyncpg"),
                    "FIREBREAK_PREFECT_PORT": str(free_port()), "FIREBREAK_INBOX": inbox})
        log = directory / "up.log"
        process = subprocess.Popen([str(Path(sys.executable).with_name("firebreak")), "up", "--layout", "production",
                                    "--intake-replicas", "2", "--workers", "2", "--slots", str(args.slots),
                                    "--intake-port", str(port)], cwd=ROOT, env=env, stdout=log.open("wb"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        intakes = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        try:
            deadline = time.monotonic() + 300
            while True:
                text_ = log.read_text(errors="replace")
                try:
                    ready = len(re.findall(r"run worker \S+: ", text_)) >= 2 and all(
                        httpx.get(f"{u}/readyz", timeout=2).status_code == 200 for u in intakes)
                except httpx.HTTPError:
                    ready = False
                if ready:
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the production layout did not come up:\n{text_[-3000:]}")
                time.sleep(0.5)
            global METER
            METER = CpuMeter()
            METER.add_root(process.pid)  # `firebreak up`: the Prefect server, replicas, workers, deployments
            postmaster = cluster.directory / "data" / "postmaster.pid"
            METER.add_root(int(postmaster.read_text().split()[0]) if postmaster.exists() else None)
            try:
                yield intakes, records
            finally:
                METER = None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def production(args: argparse.Namespace, inbox: str) -> None:
    try:
        stack = production_stack(args, inbox)
        intakes, records = stack.__enter__()
    except BaseException as exc:  # pytest's Skipped without the PostgreSQL binaries
        print(f"production layout skipped: {type(exc).__name__}: {exc}")
        return
    try:
        run_layout("production", intakes, records, args)
    finally:
        stack.__exit__(None, None, None)


def machine_probe() -> float:
    """Seconds one core takes for a fixed piece of pure Python (ten million additions), best of three:
    on 2 shared cores the burst's figures move with the machine's speed from session to session,
    and this says how fast this one was when the figures were taken."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(10_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=["embedded", "production", "both"], default="both")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--burst-rate", type=float, default=5.0)
    parser.add_argument("--paced", type=int, default=20)
    parser.add_argument("--paced-rate", type=float, default=1.0)
    parser.add_argument("--slots", type=int, default=8, help="production: run slots per worker")
    args = parser.parse_args()
    from simulator import start_simulator

    print(f"machine: {os.cpu_count()} cores; a fixed Python loop took {machine_probe():.2f} s "
          "(the same on every machine and session: a slower machine takes longer; compare runs by it)", flush=True)

    receiver = start_simulator(fault="none")
    inbox = f"{receiver.host}:{receiver.port}"
    try:
        if args.layout in ("embedded", "both"):
            embedded(args, inbox)
        if args.layout in ("production", "both"):
            production(args, inbox)
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
