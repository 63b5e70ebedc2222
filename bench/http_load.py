"""A lean HTTP/1.1 load generator for the intake benchmarks (not a benchmark itself).

httpx spends about a millisecond of CPU per request; on a 2-core machine the client
would then measure itself. This one writes pre-built requests on keep-alive
connections and reads only the status line, headers and Content-Length body, so the
server gets the CPU. Closed loop: N connections, each sends its next request when
the previous answer arrives. Open loop: requests leave at fixed times whatever the
answers, and latency counts from the scheduled time (queueing in the client counts).
"""
from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def build_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  host: str = "127.0.0.1") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> int:
        """Send one request, read its whole answer; returns the status code."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class LoadResult:
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # of 2xx answers, seconds

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


async def closed_loop(host: str, port: int, requests: list[bytes], connections: int = 64) -> LoadResult:
    queue = list(reversed(requests))
    result = LoadResult(0.0)

    async def worker() -> None:
        connection = await Connection.open(host, port)
        try:
            while queue:
                request = queue.pop()
                for _attempt in range(5):  # as a monitor does: a dropped connection is sent again
                    try:
                        started = time.perf_counter()
                        status = await connection.exchange(request)
                    except (ConnectionError, asyncio.IncompleteReadError):
                        result.statuses[-1] = result.statuses.get(-1, 0) + 1
                        connection.close()
                        connection = await Connection.open(host, port)
                        continue
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if 200 <= status < 300:
                        result.latencies.append(time.perf_counter() - started)
                    break
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


async def open_loop(host: str, port: int, make_request: Callable[[int], bytes], rate: float, seconds: float,
                    max_connections: int = 512) -> LoadResult:
    """Send request i at start + i/rate; a request waits for a free connection (opening one if
    fewer than max_connections are open). Latency: from the scheduled time to the answer."""
    total = int(rate * seconds)
    idle: list[Connection] = []
    opened = 0
    result = LoadResult(0.0)
    pool_changed = asyncio.Condition()

    async def take() -> Connection:
        nonlocal opened
        async with pool_changed:
            while not idle and opened >= max_connections:
                await pool_changed.wait()
            if idle:
                return idle.pop()
            opened += 1
        return await Connection.open(host, port)

    async def give(connection: Connection) -> None:
        async with pool_changed:
            idle.append(connection)
            pool_changed.notify()

    async def one(i: int, at: float) -> None:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # Built at its time, not when the task first runs: building all of them up front took the
        # first ~0.2 s, and the first requests left up to 130 ms late (counted as the server's latency).
        request = make_request(i)
        connection = await take()
        try:
            status = await connection.exchange(request)
        except (ConnectionError, asyncio.IncompleteReadError):
            result.statuses[-1] = result.statuses.get(-1, 0) + 1
            nonlocal opened
            async with pool_changed:
                opened -= 1
                pool_changed.notify()
            return
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            result.latencies.append(time.perf_counter() - at)
        await give(connection)

    # Open the connections a steady rate needs before the clock starts.
    warm = [await Connection.open(host, port) for _ in range(min(max_connections, max(8, int(rate / 20))))]
    idle.extend(warm)
    opened = len(warm)
    start = time.perf_counter() + 0.2
    # The generator's own garbage collections paused it for tens of milliseconds every second or so
    # (10,000 pending tasks to walk), and every request due meanwhile left late: off while it sends.
    gc.collect()
    gc.disable()
    try:
        await asyncio.gather(*(one(i, start + i / rate) for i in range(total)))
    finally:
        gc.enable()
    result.seconds = time.perf_counter() - start
    for connection in idle:
        connection.close()
    return result


def run(coroutine):  # type: ignore[no-untyped-def]
    """asyncio.run on uvloop when it is installed (less client CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
