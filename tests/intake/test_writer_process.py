"""The alert writer as a process of its own (intake/writer_process.py), on SQLite: a real writer
process and real clients. Every request answered as stored is in the database; a writer killed
with requests in flight fails them with WriterUnreachable (the intake's 503) rather than hanging,
and is started again; a writer outlives neither its intake nor a SIGTERM."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from firebreak.errors import ConfigInvalid
from firebreak.settings import reload_settings
from intake.server import uses_writer_process
from intake.settings import IntakeSettings
from intake.writer_process import WriterClient, WriterProcess, WriterUnreachable
from records.alert_ingest import Alert, AlertResult, IncomingAlert, IngestRequest, RunPlan
from records.db import dispose_all, session_scope
from records.signatures import SignatureReplayed
from tests.environment import environment
from tests.intake_harness import TOKENS, free_port, write_config

FIREBREAK = str(Path(sys.executable).with_name("firebreak"))
PROJECT_ROOT = Path(__file__).resolve().parents[2]

UNROUTED = RunPlan(route="default", runbook_id=None)


def request_for(fingerprint: str, signature: str | None = None) -> IngestRequest:
    alert = IncomingAlert(source="am", format="alertmanager", fingerprint=f"am/{fingerprint}", status="firing",
                          summary=f"alert {fingerprint}", labels={"alertname": "A", "team": "核心"},
                          payload={"fingerprint": fingerprint})
    return IngestRequest([(alert, UNROUTED)], signature=signature, source="am",
                         sent_at=time.time() if signature else None, expires_at=time.time() + 300 if signature else None)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    with environment(FIREBREAK_DATABASE_URL=url):  # the writer process inherits it
        yield url
    dispose_all()


@pytest.fixture
def writer(database: str) -> Iterator[WriterProcess]:
    process = WriterProcess()
    process.start()
    try:
        yield process
    finally:
        process.stop()


def stored(url: str) -> dict[int, str]:
    with session_scope(url) as session:
        return dict(session.execute(select(Alert.id, Alert.fingerprint)).all())


def test_concurrent_requests_are_each_answered_after_commit_with_their_own_ids(
        writer: WriterProcess, database: str) -> None:
    client = WriterClient(writer.socket_path)

    async def post_many() -> list[list[AlertResult]]:
        try:
            return list(await asyncio.gather(*(client.ingest(request_for(f"c{i}")) for i in range(300))))
        finally:
            client.stop()

    results = asyncio.run(post_many())
    assert [r[0].fingerprint for r in results] == [f"am/c{i}" for i in range(300)]
    rows = stored(database)
    assert {r[0].alert_id: r[0].fingerprint for r in results} == rows  # each id names its own row
    with session_scope(database) as session:
        alert = session.scalars(select(Alert).where(Alert.fingerprint == "am/c7")).one()
    assert alert.labels == {"alertname": "A", "team": "核心"} and alert.payload == {"fingerprint": "c7"}


def test_a_replayed_signature_is_refused_by_the_writer_and_stores_nothing(
        writer: WriterProcess, database: str) -> None:
    client = WriterClient(writer.socket_path)

    async def post_twice() -> list[object]:
        try:
            first = await client.ingest(request_for("signed", signature="sig-1"))
            again = await asyncio.gather(client.ingest(request_for("signed-again", signature="sig-1")),
                                         return_exceptions=True)
            return [first, *again]
        finally:
            client.stop()

    first, again = asyncio.run(post_twice())
    assert isinstance(first, list) and first[0].fingerprint == "am/signed"
    assert isinstance(again, SignatureReplayed)
    assert sorted(stored(database).values()) == ["am/signed"]


def test_a_killed_writer_fails_its_requests_in_flight_and_is_started_again(
        writer: WriterProcess, database: str) -> None:
    client = WriterClient(writer.socket_path)
    assert writer.process is not None
    killed = writer.process.pid

    async def post_through_a_kill() -> tuple[list[object], list[AlertResult]]:
        try:
            in_flight = [asyncio.ensure_future(client.ingest(request_for(f"k{i}"))) for i in range(2000)]
            await asyncio.sleep(0.05)
            os.kill(killed, signal.SIGKILL)
            outcomes = list(await asyncio.wait_for(asyncio.gather(*in_flight, return_exceptions=True), 30))
            deadline = time.monotonic() + 30
            while True:  # the watcher starts a new writer; until it listens, requests fail fast
                try:
                    return outcomes, await client.ingest(request_for("after"))
                except WriterUnreachable:
                    assert time.monotonic() < deadline, "no new writer process within 30 s"
                    await asyncio.sleep(0.2)
        finally:
            client.stop()

    outcomes, after = asyncio.run(post_through_a_kill())
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    answered = [o for o in outcomes if isinstance(o, list)]
    assert failed, "the kill came after every request was answered: nothing was tested"
    assert all(isinstance(o, WriterUnreachable) for o in failed), failed[:3]
    rows = stored(database)
    assert all(rows.get(r[0].alert_id) == r[0].fingerprint for r in answered)  # nothing acknowledged is lost
    assert after[0].fingerprint == "am/after" and writer.restarts == 1
    assert writer.process is not None and writer.process.pid != killed


def test_the_writer_ends_with_its_intake_and_after_sigterm(database: str, tmp_path: Path) -> None:
    # An "intake" that starts a writer, prints its pid and waits to be killed.
    script = ("import sys, time\n"
              "from intake.writer_process import WriterProcess\n"
              "writer = WriterProcess(); writer.start()\n"
              "print(writer.process.pid, flush=True)\n"
              "time.sleep(600)\n")
    intake = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert intake.stdout is not None
        writer_pid = int(intake.stdout.readline())
        intake.kill()  # SIGKILL: no chance to stop its writer
        intake.wait()
        assert _gone(writer_pid, within=10), "the writer outlived its intake"
    finally:
        intake.kill()

    writer = WriterProcess()
    writer.start()
    assert writer.process is not None
    writer.stop()  # SIGTERM: it ends after the batch it is storing
    assert writer.process.returncode == 0 and not os.path.exists(writer.socket_path)

    # Signals in a volley (the intake's SIGTERM and the parent-death one land together): still it ends.
    # A handler that took a lock once deadlocked here, leaving writers behind their dead intakes.
    writer = WriterProcess()
    writer.start()
    assert writer.process is not None
    for _ in range(50):
        writer.process.send_signal(signal.SIGTERM)
    assert writer.process.wait(10) == 0
    writer.stop()


def test_firebreak_serve_answers_503_while_its_writer_is_down_and_202_once_it_is_back(
        database: str, tmp_path: Path) -> None:
    """Through HTTP, as a monitor sees it: `firebreak serve` on SQLite stores through a writer process;
    killing that process costs 503s with Retry-After (sent again by the monitor), never a 500 or a lost 202."""
    sources, routes = write_config(tmp_path, {"runbook": None})
    port, log = free_port(), tmp_path / "intake.log"
    env = {**os.environ, **TOKENS, "FIREBREAK_INTAKE_SOURCES_FILE": str(sources),
           "FIREBREAK_INTAKE_ROUTES_FILE": str(routes), "FIREBREAK_INTAKE_EXECUTOR": "none"}
    serve = subprocess.Popen([FIREBREAK, "serve", "--port", str(port)], cwd=PROJECT_ROOT, env=env,
                             stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1/alerts/alertmanager"
    auth = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}"}

    def post(fingerprint: str) -> httpx.Response:
        return httpx.post(url, headers=auth, timeout=10, json={
            "version": "4", "status": "firing", "receiver": "r", "groupKey": "g",
            "alerts": [{"status": "firing", "labels": {"alertname": "W"}, "annotations": {},
                        "startsAt": "2026-01-01T00:00:00Z", "fingerprint": fingerprint}]})

    try:
        _wait_for(lambda: post("first").status_code == 202, serve, log)
        assert "alerts stored by a writer process" in log.read_text()
        (writer_pid,) = _children(serve.pid)
        os.kill(writer_pid, signal.SIGKILL)
        answers = [post(f"during-{i}") for i in range(5)]
        refused = [a for a in answers if a.status_code != 202]
        assert refused, "every post was stored: the new writer was up before the first one (nothing tested)"
        assert all(a.status_code == 503 and a.headers["Retry-After"] for a in refused), [a.text for a in refused]
        _wait_for(lambda: post("after").status_code == 202, serve, log)
        (new_writer,) = _children(serve.pid)
        assert new_writer != writer_pid
        accepted = {"first", "after"} | {f"during-{i}" for i, a in enumerate(answers) if a.status_code == 202}
    finally:
        serve.terminate()
        serve.wait(30)
    assert {f.split("/", 1)[1] for f in stored(database).values()} >= accepted  # every 202 is stored
    assert _gone(new_writer, within=10), "the writer outlived `firebreak serve`"


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):  # not listening yet
            if condition():
                return
        assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    """The writer processes `pid` started (its children running intake.writer_process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z" and b"intake.writer_process" in command:
            found.append(int(entry.name))
    return found


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            # A zombie (exited, not yet reaped) counts as gone.
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(("setting", "records", "expected"), [
    ("auto", "sqlite:///records.db", True), ("auto", "postgresql+psycopg://h/db", False),
    ("thread", "sqlite:///records.db", False), ("process", "sqlite:///records.db", True),
])
def test_which_intakes_store_through_a_writer_process(setting: str, records: str, expected: bool) -> None:
    try:
        with environment(FIREBREAK_DATABASE_URL=records):
            reload_settings()
            assert uses_writer_process(IntakeSettings(alert_writer=setting)) is expected
    finally:
        reload_settings()  # outside the environment: the cached settings must not keep this test's URL


def test_a_writer_process_on_postgresql_is_refused_before_anything_starts() -> None:
    # Its connections would be outside the connection budget; PostgreSQL needs no single writer.
    try:
        with environment(FIREBREAK_DATABASE_URL="postgresql+psycopg://h/db"):
            reload_settings()
            with pytest.raises(ConfigInvalid, match="ALERT_WRITER=process is for SQLite"):
                uses_writer_process(IntakeSettings(alert_writer="process"))
    finally:
        reload_settings()  # outside the environment, as above
