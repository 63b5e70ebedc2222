"""Repeat a small action in a background thread for as long as a block runs."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_log = logging.getLogger("firebreak.background")


@contextmanager
def repeating(action: Callable[[], object], every: float, name: str, *, now: bool = True,
              on_error: Callable[[Exception], bool | None] | None = None) -> Iterator[None]:
    """Call `action` every `every` seconds (and once at once if `now`) until the block ends.

    A failing call never takes the block down (keep-alives such as heartbeats must never kill
    the run they keep alive), but it is not swallowed either: it goes to `on_error`, which may
    count it, judge it and return True to stop repeating (a run lock that was lost is not
    renewed again); without one it is logged and tried again next time."""
    stop = threading.Event()

    def failed(exc: Exception) -> bool:
        if on_error is None:
            _log.warning("%s failed (tried again in %gs): %s: %s", name, every, type(exc).__name__, exc)
            return False
        try:
            return bool(on_error(exc))
        except Exception:  # noqa: BLE001  a broken handler must not end the keep-alive either
            _log.exception("%s: the error handler failed", name)
            return False

    def loop() -> None:
        if not now and stop.wait(every):
            return
        while True:
            try:
                action()
            except Exception as exc:  # noqa: BLE001  keep-alive: any failure goes to on_error, never ends the loop
                if failed(exc):
                    return
            if stop.wait(every):
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
