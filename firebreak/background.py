"""Repeat a small action in a background thread for as long as a block runs."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def repeating(action: Callable[[], object], every: float, name: str, *, now: bool = True) -> Iterator[None]:
    """Call `action` every `every` seconds (and once at once if `now`) until the block ends.

    A failing call is skipped and tried again next time: keep-alives (heartbeats,
    lock renewals) must never take the run they keep alive down with them."""
    stop = threading.Event()

    def loop() -> None:
        if not now and stop.wait(every):
            return
        while True:
            try:
                action()
            except Exception:
                pass
            if stop.wait(every):
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
