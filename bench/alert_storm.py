"""Alert storm: 10,000 alerts with one fingerprint, posted as fast as the intake takes them
over 64 concurrent connections. Expect 1 incident, 1 run and all 10,000 alerts recorded.

    .venv/bin/python bench/alert_storm.py [--alerts 10000]

Baseline in the same run: the same number of alerts each with its own fingerprint (every one
opens an incident and an outbox row) — the ratio shows what dedup costs or saves.
The intake records only here (executor "none"): the outbox row it writes is the one run request.
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.http_load import build_request, closed_loop  # noqa: E402
from bench.http_load import run as run_load
from bench.intake_stack import TOKEN, IntakeProcess, alertmanager_body  # noqa: E402

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

ROUTE = {"runbook": "system-outage"}


def count(records_url: str, sql: str) -> int:
    engine = create_engine(records_url)
    with engine.connect() as connection:
        return int(connection.execute(text(sql)).scalar_one())


def run(alerts: int, same_fingerprint: bool) -> dict[str, float]:
    with IntakeProcess(ROUTE) as intake:
        tag = f"storm-{time.time_ns()}"
        requests = [build_request("POST", "/v1/alerts/alertmanager", json.dumps(
            alertmanager_body(tag if same_fingerprint else f"{tag}-{i}")).encode(), HEADERS) for i in range(alerts)]
        result = run_load(closed_loop("127.0.0.1", intake.port, requests, connections=64))
        url = intake.records_url()
        return {"seconds": result.seconds, "dropped": result.count(-1), "accepted": result.count(202),
                "other": result.failed - result.count(-1),
                "incidents": count(url, "select count(*) from incidents"),
                "runs": count(url, "select count(*) from run_requests"),
                "alerts": count(url, "select count(*) from alerts")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=10_000)
    args = parser.parse_args()
    storm = run(args.alerts, same_fingerprint=True)
    print(f"storm, one fingerprint:  {args.alerts} alerts in {storm['seconds']:.1f}s "
          f"({args.alerts / storm['seconds']:.0f}/s); accepted {storm['accepted']}, other {storm['other']} "
          f"(dropped connections, retried: {storm['dropped']}); "
          f"incidents {storm['incidents']}, run requests {storm['runs']}, alerts recorded {storm['alerts']}")
    baseline = run(args.alerts, same_fingerprint=False)
    print(f"baseline, all distinct: {args.alerts} alerts in {baseline['seconds']:.1f}s "
          f"({args.alerts / baseline['seconds']:.0f}/s); incidents {baseline['incidents']}, "
          f"run requests {baseline['runs']}, alerts recorded {baseline['alerts']}")
    print(f"ratio storm/baseline time: {storm['seconds'] / baseline['seconds']:.2f}")


if __name__ == "__main__":
    main()
