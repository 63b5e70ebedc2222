"""Durable intake throughput (alerts/s) and accept latency at a fixed rate, on SQLite.

    .venv/bin/python bench/intake_throughput.py [--alerts 3000] [--rate 500] [--seconds 5]

1. Closed loop, 64 connections: N alerts with distinct fingerprints, each committed before
   its 202 (unrouted here, so the figure is the store, not runbook starts).
   Baseline in the same run: GET /healthz on the same server (HTTP and framework only).
2. Open loop at --rate alerts/s for --seconds: accept latency p50/p99, measured from each
   request's scheduled send time (so queueing in the client counts too).
The client runs in this process and the intake in its own (`firebreak serve`); on a 2-core
machine they share the CPUs. Prints figures and ratios; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.intake_stack import TOKEN, IntakeProcess, alertmanager_body, percentile  # noqa: E402

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def closed_loop(url: str, requests: list[tuple[str, str, bytes | None]], concurrency: int = 64) -> float:
    queue: asyncio.Queue[tuple[str, str, bytes | None]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    failures = 0
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=concurrency), timeout=60) as client:
        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                method, path, body = queue.get_nowait()
                response = await client.request(method, path, content=body, headers=HEADERS)
                failures += response.status_code >= 300
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        print(f"  ({failures} requests were not accepted)")
    return elapsed


async def open_loop(url: str, rate: float, seconds: float) -> list[float]:
    total = int(rate * seconds)
    latencies: list[float] = []
    tag = time.time_ns()
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=256), timeout=60) as client:
        async def one(i: int, at: float) -> None:
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = json.dumps(alertmanager_body(f"rate-{tag}-{i}")).encode()
            response = await client.post("/v1/alerts/alertmanager", content=body, headers=HEADERS)
            if response.status_code == 202:
                latencies.append(time.perf_counter() - at)
        start = time.perf_counter() + 0.5
        await asyncio.gather(*(one(i, start + i / rate) for i in range(total)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    with IntakeProcess({"runbook": None}) as intake:
        warm = [("GET", "/healthz", None)] * 200
        asyncio.run(closed_loop(intake.url, warm))
        health = asyncio.run(closed_loop(intake.url, [("GET", "/healthz", None)] * args.alerts))
        tag = time.time_ns()
        bodies = [("POST", "/v1/alerts/alertmanager", json.dumps(alertmanager_body(f"tp-{tag}-{i}")).encode())
                  for i in range(args.alerts)]
        stored = asyncio.run(closed_loop(intake.url, bodies))
        print(f"baseline GET /healthz:         {args.alerts / health:8.0f} requests/s")
        print(f"durable intake (commit → 202): {args.alerts / stored:8.0f} alerts/s   "
              f"({health / stored:.2f} of the baseline rate)")
        latencies = asyncio.run(open_loop(intake.url, args.rate, args.seconds))
        offered = int(args.rate * args.seconds)
        print(f"at {args.rate:.0f} alerts/s for {args.seconds:g}s: {len(latencies)}/{offered} accepted; accept latency "
              f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
