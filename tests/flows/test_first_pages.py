"""First pages first (flows.first_pages): a run's after-page work waits while other runs in the
process have yet to page, never for its own incident, never for a run that stopped counting, and
never longer than it is allowed. Real threads; the order of events is asserted, not durations."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from flows import first_pages


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(first_pages, "_enabled", True)  # as `firebreak worker` does
    first_pages._pending.clear()
    yield
    first_pages._pending.clear()


def _waiter(incident_id: str | None = None, **kwargs: float) -> tuple[threading.Thread, list[str]]:
    log: list[str] = []

    def wait() -> None:
        first_pages.wait_for_first_pages(incident_id, **kwargs)
        log.append("report")

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, log


def test_nothing_pending_means_no_wait() -> None:
    assert first_pages.wait_for_first_pages("INC-1") == pytest.approx(0, abs=0.5)
    assert first_pages.waiting() == 0


def test_the_report_waits_until_every_other_run_has_paged() -> None:
    first_pages.expect("INC-2")
    first_pages.expect("INC-3")
    first_pages.expect("INC-1")  # the waiting run's own incident, not yet forgotten
    thread, log = _waiter("INC-1")
    thread.join(0.3)
    assert thread.is_alive() and log == []
    log.append("INC-2 paged")
    first_pages.paged("INC-2")
    thread.join(0.3)
    assert thread.is_alive(), "INC-3 has not paged yet"
    log.append("INC-3 ended without a page")
    first_pages.forget("INC-3")
    thread.join(10)
    assert log == ["INC-2 paged", "INC-3 ended without a page", "report"]
    assert first_pages.waiting() == 0  # its own incident was dropped too


def test_runs_taken_on_during_the_wait_do_not_prolong_it() -> None:
    """In a steady stream there is always one more new run: waiting for those too held every
    finished run's slot (measured: the embedded burst's p99 went from 0.6 s to 3 s)."""
    first_pages.expect("INC-2")
    thread, log = _waiter("INC-1")
    thread.join(0.3)
    first_pages.expect("INC-3")  # claimed after the wait began
    log.append("INC-2 paged")
    first_pages.paged("INC-2")
    thread.join(10)
    assert log == ["INC-2 paged", "report"]
    assert first_pages.waiting() == 1  # INC-3 is still on its way; its own page goes on


def test_a_run_that_pages_again_later_is_not_waited_for_twice() -> None:
    first_pages.expect("INC-2")
    thread, log = _waiter("INC-1")
    thread.join(0.3)
    first_pages.paged("INC-2")
    first_pages.expect("INC-2")  # a second run of the same incident, taken on later
    thread.join(10)
    assert log == ["report"]


def test_a_run_slow_to_page_stops_holding_the_others_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(first_pages, "PENDING_SECONDS", 0.3)
    first_pages.expect("INC-slow")  # a health check retrying, an approval: never pages here
    thread, log = _waiter("INC-1", max_wait=60)
    thread.join(30)
    assert log == ["report"]
    assert first_pages.waiting() == 0


def test_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(first_pages, "PENDING_SECONDS", 600)
    first_pages.expect("INC-2")
    waited = first_pages.wait_for_first_pages("INC-1", max_wait=0.2)
    assert waited >= 0.2
    assert first_pages.waiting() == 1  # still pending: the report went ahead anyway


def test_a_run_that_waits_gives_its_slot_up_first_and_one_that_need_not_wait_keeps_it() -> None:
    released: list[str] = []

    def release(name: str) -> bool:
        released.append(name)
        return True

    with first_pages.releasable_slot(lambda: release("alone")):
        first_pages.wait_for_first_pages("INC-1")  # nobody else on the way: no wait, the slot is kept
    assert released == []

    first_pages.expect("INC-2")
    log: list[str] = []

    def finish() -> None:
        with first_pages.releasable_slot(lambda: release("behind INC-2")):
            first_pages.wait_for_first_pages("INC-1")
            log.append("report")

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and released == ["behind INC-2"] and log == []  # given up before waiting
    first_pages.paged("INC-2")
    thread.join(10)
    assert log == ["report"] and released == ["behind INC-2"]  # once
    first_pages.wait_for_first_pages("INC-3")  # outside any slot: nothing to give up
    assert released == ["behind INC-2"]


def test_off_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes that run no executor (the CLI, tests, `firebreak drill`) leave it off."""
    monkeypatch.setattr(first_pages, "_enabled", False)
    first_pages.expect("INC-2")
    assert first_pages.waiting() == 0
    assert first_pages.wait_for_first_pages("INC-1") == 0.0


def test_expect_keeps_the_first_time() -> None:
    """The executor expects a run at its claim, the engine again at its start: the claim counts."""
    first_pages.expect("INC-2")
    claimed = first_pages._pending["INC-2"]
    first_pages.expect("INC-2")
    assert first_pages._pending["INC-2"] == claimed
