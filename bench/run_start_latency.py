"""How long from a flow run's creation to its first step starting.

Firebreak's engine (open the incident, load and validate the runbook, record the
step's intent) against a baseline measured in the same process on the same
server: a bare Prefect flow whose single task notes when it starts. Both run
in-process, so neither pays a worker's process start-up.

    .venv/bin/python bench/run_start_latency.py [--runs 30]

Uses PREFECT_API_URL if set, else starts/reuses the local server (firebreak server).
Prints figures and the ratio; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("FIREBREAK_HOME", tempfile.mkdtemp(prefix="firebreak-bench-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    from firebreak.cli.prefect_server import ensure_server

    server = ensure_server()
    import yaml
    from prefect import flow, task
    from prefect.client.orchestration import get_client

    from flows.engine import run_runbook
    from records.incidents import events, list_incidents

    runbook = Path(os.environ["FIREBREAK_HOME"]) / "bench-one-step.yaml"
    runbook.write_text(yaml.safe_dump({
        "id": "bench-one-step", "title": "Bench", "description": "One recorded step.", "version": "1",
        "level": {"default": "III"}, "roles": ["technical_support"],
        "steps": [{"id": "first", "action": "record", "with": {"message": "started"}}],
    }))

    started_at: dict[str, datetime] = {}

    @task
    def first_step(key: str) -> None:
        started_at[key] = datetime.now(timezone.utc)

    @flow
    def bare(key: str) -> None:
        first_step(key)

    def created(client, flow_run_id: str) -> datetime:
        return client.read_flow_run(flow_run_id).created

    # Warm both paths once (imports, first connections), as a long-lived executor would be.
    bare("warm", return_state=True)
    run_runbook(runbook=str(runbook), return_state=True)

    baseline: list[float] = []
    firebreak: list[float] = []
    with get_client(sync_client=True) as client:
        for n in range(args.runs):
            state = bare(f"k{n}", return_state=True)
            baseline.append((started_at[f"k{n}"] - created(client, str(state.state_details.flow_run_id))).total_seconds())

            state = run_runbook(runbook=str(runbook), return_state=True)
            flow_run_id = str(state.state_details.flow_run_id)
            incident = next(i for i in list_incidents(5) if i.flow_run_id == flow_run_id)
            first = next(e for e in events(incident.id) if e.phase == "intent")
            firebreak.append((first.at - created(client, flow_run_id)).total_seconds())

    def line(name: str, values: list[float]) -> str:
        return (f"{name:<28} p50 {statistics.median(values) * 1000:7.1f} ms   p99 {percentile(values, 0.99) * 1000:7.1f} ms"
                f"   max {max(values) * 1000:7.1f} ms")

    print(f"Prefect server: {server.api_url}; {args.runs} runs each, in-process, same server")
    print(line("bare Prefect flow + task", baseline))
    print(line("Firebreak engine first step", firebreak))
    print(f"ratio (Firebreak / bare), p50: {statistics.median(firebreak) / statistics.median(baseline):.2f}×")


if __name__ == "__main__":
    main()
