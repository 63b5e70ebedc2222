"""First pages first: in a burst of new incidents, the work a run does after it has paged waits for
the runs of its process that are already on their way to their first page.

A run's report (rendered twice, in two languages, and published to Prefect), its final live view
and its anchor cost more CPU than everything before its first page. On a machine whose cores a
burst keeps busy, that work of the runs that paged first took the CPU from the runs still on their
way to their first page: measured on 2 cores, 50 new incidents at 5 a second, the p99 alert → first
page was several seconds although each run alone pages in a fraction of one (issue 13).

So a run that has finished its steps calls `wait_for_first_pages()` before that work. It waits until
the runs this process had taken on by then (claimed from the outbox, or started by Prefect) have
paged, for at most MAX_DEFER_SECONDS; runs taken on later do not make it wait longer. A run counts
as on its way from `expect()` until `paged()` or `forget()`, and for no longer than PENDING_SECONDS:
a run whose first steps take longer (a health check that retries, an approval) does not hold the
others back.

Nothing is skipped, only reordered: the run still renders and publishes its report before it ends.
Per process, as the CPU it shares is; the Prefect server's share follows, because the deferred work
is also most of the run's calls to it.

A run in an executor slot gives the slot up as it begins to wait (`releasable_slot`): the wait and
its remaining work then hold no slot, and the next new incident starts at once. Without that, the
embedded default was worse with this on than off (p99 2.97–7.19 s against 2.13–4.36 s, three
alternating runs; waiting for a slot p99 2.1–6.2 s against 0.3–2.6 s).

Off unless `enable()`d: `firebreak serve` and `firebreak worker` enable it. On the production layout
(Prefect on PostgreSQL) the burst's p99 had a median of 0.9 s over ten runs with it (slots held)
against 3.9 s over twelve without (README, bench/burst.py). On the embedded default, with slots given
up, five alternating pairs on a slow 2-core machine: p99 5.04, 24.24, 4.00, 6.43, 4.64 s with it,
25.77, 6.93, 16.68, 7.01, 5.63 s without (lower in 4 of 5 pairs; waiting for a slot p50 0.05–0.34 s
against 0.67–11.86 s).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: How long a run counts as on its way to its first page, from expect(). Longer than a burst's run
#: takes to page on a loaded 2-core machine, shorter than a run that waits for a person.
PENDING_SECONDS = 3.0
#: The longest a run's report and final view wait for other runs' first pages.
MAX_DEFER_SECONDS = 10.0

_enabled = False
_changed = threading.Condition()
_pending: dict[str, float] = {}  # incident id → monotonic time it was expected
#: What gives up the current run's executor slot (set by the executor around a run; see releasable_slot).
_slot_release: ContextVar[Callable[[], bool] | None] = ContextVar("first_pages_slot_release", default=None)


def enable() -> None:
    """This process's runs take turns so (see the module docstring); for the life of the process."""
    global _enabled
    _enabled = True


def expect(incident_id: str) -> None:
    """A run of this incident was taken on here and has not paged yet (idempotent: the first call counts)."""
    if not _enabled:
        return
    with _changed:
        _pending.setdefault(incident_id, time.monotonic())


def paged(incident_id: str) -> None:
    """Its first page went out (or was tried): others' deferred work need not wait for it."""
    with _changed:
        if _pending.pop(incident_id, None) is not None:
            _changed.notify_all()


forget = paged  # the run ended, or never started here: the same for whoever waits


@contextmanager
def releasable_slot(release: Callable[[], bool]) -> Iterator[None]:
    """Around a run in an executor slot: a run that waits for others' first pages first calls
    `release()`, which gives its slot to the next run (and returns whether it did). Its wait and its
    remaining work then hold no slot: had they, the next new incident waited for a slot behind runs
    that were only waiting for it to page (figures in the module docstring)."""
    token = _slot_release.set(release)
    try:
        yield
    finally:
        _slot_release.reset(token)


def waiting() -> int:
    """Runs still on their way to their first page (expired ones are dropped)."""
    with _changed:
        return _drop_expired(time.monotonic())


def wait_for_first_pages(incident_id: str | None = None, max_wait: float = MAX_DEFER_SECONDS) -> float:
    """Wait until the runs here that are on their way to their first page now have paged (or stopped
    counting), at most `max_wait`; the seconds waited. The caller's own incident does not count, nor
    do runs taken on while it waits: in a steady stream of new incidents there is always one more, and
    waiting for all of them held every finished run's slot until none was left to take the next."""
    if not _enabled:
        return 0.0
    started = time.monotonic()
    with _changed:
        if incident_id is not None and _pending.pop(incident_id, None) is not None:
            _changed.notify_all()
        _drop_expired(started)
        ahead = dict(_pending)  # incident → when it was expected; the same entry while it is still pending
    release = _slot_release.get()
    if ahead and release is not None:
        release()  # outside the condition: the executor takes its own lock to give the slot back
    with _changed:
        while True:
            now = time.monotonic()
            _drop_expired(now)
            still = [since for key, since in ahead.items() if _pending.get(key) == since]
            if not still or now - started >= max_wait:
                return now - started
            _changed.wait(min(min(still) + PENDING_SECONDS, started + max_wait) - now)


def _drop_expired(now: float) -> int:
    for incident_id, since in list(_pending.items()):
        if now - since >= PENDING_SECONDS:
            del _pending[incident_id]
    return len(_pending)
