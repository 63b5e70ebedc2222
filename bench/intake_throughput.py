"""Durable intake throughput (alerts/s) and accept latency at a fixed rate, on SQLite.

    .venv/bin/python bench/intake_throughput.py [--alerts 6000] [--rounds 3] [--rate 500] [--seconds 10]
                                                [--workers 1 2]

For each worker count (`firebreak serve --workers N`, its own SQLite records database):
1. Baseline: GET /healthz, closed loop over 64 connections (HTTP and framework only).
   --alert-writer process thread compares where alerts are stored from (intake.writer_process).
2. Durable intake: N Alertmanager posts with distinct fingerprints, closed loop over 64
   connections, each answered 202 only after its transaction committed (synchronous=FULL:
   on disk). Unrouted here, so the figure is the store, not runbook starts.
   Steps 1 and 2 alternate for --rounds rounds and each figure is the median of its rounds, so
   a neighbour's load on a shared machine moves both alike rather than skewing the ratio.
3. Open loop at --rate alerts/s for --seconds: accept latency p50/p99/max, from each
   request's scheduled send time; beside it, GET /healthz at the same rate (the server's and the
   machine's own latency, the floor for the alerts' figure).
The load generator (bench/http_load.py) runs in this process; the intake in its own
process(es); on a 2-core machine they share the CPUs. Prints figures and ratios; asserts nothing.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.http_load import build_request, closed_loop, open_loop, run  # noqa: E402
from bench.intake_stack import TOKEN, IntakeProcess, alertmanager_body, percentile  # noqa: E402

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def alert_request(fingerprint: str) -> bytes:
    return build_request("POST", "/v1/alerts/alertmanager", json.dumps(alertmanager_body(fingerprint)).encode(), HEADERS)


def measure(workers: int, alerts: int, rounds: int, rate: float, seconds: float, writer: str) -> dict[str, Any]:
    with IntakeProcess({"runbook": None}, workers=workers, env={"FIREBREAK_INTAKE_ALERT_WRITER": writer}) as intake:
        host, port = "127.0.0.1", intake.port
        health = build_request("GET", "/healthz")
        run(closed_loop(host, port, [health] * 500))  # warm-up
        tag = time.time_ns()
        baselines, rates, p99s, failed = [], [], [], 0
        for round_number in range(rounds):
            baseline = run(closed_loop(host, port, [health] * alerts))
            baselines.append(alerts / baseline.seconds)
            stored = run(closed_loop(host, port, [alert_request(f"tp-{tag}-{round_number}-{i}")
                                                  for i in range(alerts)]))
            rates.append(stored.count(202) / stored.seconds)
            p99s.append(percentile(stored.latencies, 0.99))
            failed += stored.failed
        paced = run(open_loop(host, port, lambda i: alert_request(f"rate-{tag}-{i}"), rate, seconds))
        paced_health = run(open_loop(host, port, lambda i: health, rate, seconds))
    return {"health": statistics.median(baselines), "stored": statistics.median(rates),
            "health_range": (min(baselines), max(baselines)), "stored_range": (min(rates), max(rates)),
            "stored_failed": failed, "stored_p99": statistics.median(p99s),
            "offered": int(rate * seconds), "accepted": paced.count(202),
            "p50": percentile(paced.latencies, 0.5), "p99": percentile(paced.latencies, 0.99),
            "max": max(paced.latencies), "health_p50": percentile(paced_health.latencies, 0.5),
            "health_p99": percentile(paced_health.latencies, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=6000, help="requests per round, each kind")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--alert-writer", nargs="+", default=["auto"], choices=["auto", "process", "thread"],
                        help="FIREBREAK_INTAKE_ALERT_WRITER; give both process and thread to compare them")
    args = parser.parse_args()
    for workers, writer in itertools.product(args.workers, args.alert_writer):
        m = measure(workers, args.alerts, args.rounds, args.rate, args.seconds, writer)
        low, high = m["health_range"]
        print(f"--- firebreak serve --workers {workers}, alert writer {writer}  "
              f"(medians of {args.rounds} alternating rounds)")
        print(f"baseline GET /healthz:         {m['health']:8.0f} requests/s  (rounds {low:.0f}–{high:.0f})")
        low, high = m["stored_range"]
        print(f"durable intake (commit → 202): {m['stored']:8.0f} alerts/s    (rounds {low:.0f}–{high:.0f}; "
              f"{m['stored'] / m['health']:.2f} of the baseline rate; closed-loop p99 {m['stored_p99'] * 1000:.0f} ms; "
              f"not accepted: {m['stored_failed']})")
        print(f"open loop {args.rate:.0f}/s for {args.seconds:g}s: {m['accepted']}/{m['offered']} accepted; accept "
              f"latency p50 {m['p50'] * 1000:.1f} ms, p99 {m['p99'] * 1000:.1f} ms, max {m['max'] * 1000:.1f} ms "
              f"(GET /healthz at the same rate: p50 {m['health_p50'] * 1000:.1f} ms, "
              f"p99 {m['health_p99'] * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
