"""Ports and homes: FIREBREAK_HOME is one place per checkout, whatever the working directory;
Firebreak reuses only the Prefect server it started and refuses a stranger's in one line;
`firebreak up` takes its ports from options and `firebreak down` stops everything it started.
Real processes throughout (the CLI, `firebreak up` with its own Prefect server)."""
from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack_harness import REPO, answers, free_port, start_stack


def firebreak(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firebreak", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_home_is_the_checkouts_var_whatever_the_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FIREBREAK_HOME"}
    shown = subprocess.run([sys.executable, "-c", "from firebreak.settings import get_settings as s; "
                                                  "print(s().resolved_home); print(s().records_url)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True)
    home, records = shown.stdout.splitlines()
    assert Path(home) == REPO / "var"
    assert records == f"sqlite:///{REPO / 'var' / 'firebreak.db'}"


class _Stranger(http.server.BaseHTTPRequestHandler):
    """A server Firebreak did not start that answers Prefect's health check."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stranger() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stranger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_strangers_prefect_server_is_refused_in_one_line(tmp_path: Path, stranger: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"FIREBREAK_HOME": str(tmp_path / "home"), "FIREBREAK_PREFECT_PORT": str(stranger)}
    for args in (["server", "start"], ["up", "--prefect-port", str(stranger)]):
        refused = firebreak(*args, env={**env, "FIREBREAK_PREFECT_PORT": "4200"} if args[0] == "up" else env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert lines == [f"error: a Prefect server that Firebreak did not start answers on 127.0.0.1:{stranger}; "
                         "stop it, pick another port (--prefect-port or FIREBREAK_PREFECT_PORT), or set "
                         "PREFECT_API_URL to use it on purpose"]
    assert not (tmp_path / "home" / "run" / "up.pid").exists()  # nothing was started, nothing recorded
    status = firebreak("server", "status", env=env)
    assert "healthy; not started by firebreak" in status.stdout


@pytest.mark.slow
def test_up_listens_where_it_is_told_and_down_stops_it_all(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "home")
    try:
        run = stack.home / "run"
        assert {p.stem for p in run.glob("*.pid")} == {"up", "simulator", "deployments", "intake"}
        assert (stack.home / "prefect-server.json").exists()
        # The forms' service URL is this simulator's, not the runbook's default port.
        with httpx.Client(base_url=stack.api_url) as client:
            deployment = client.get("/deployments/name/system-outage/system-outage").json()
        schema = deployment["parameter_openapi_schema"]
        form = schema["definitions"][schema["properties"]["parameters"]["$ref"].rsplit("/", 1)[-1]]
        assert form["properties"]["service_url"]["default"] == stack.simulator_url
        # Its own server is reused by the CLI beside it; a second `up` is refused.
        assert "this checkout's" in stack.firebreak("server", "status").stdout
        again = stack.firebreak("up", "--prefect-port", str(stack.prefect_port))
        assert again.returncode == 1 and "already runs for this checkout" in again.stderr
        moved = subprocess.run([sys.executable, "-m", "firebreak", "server", "start"], cwd=REPO, timeout=60,
                               env={**stack.env(), "FIREBREAK_PREFECT_PORT": str(free_port())},
                               capture_output=True, text=True)
        assert moved.returncode == 1 and f"already runs on port {stack.prefect_port}" in moved.stderr
    finally:
        down = stack.firebreak("down", timeout=90)
    assert down.returncode == 0 and "stopped:" in down.stdout, down.stdout + down.stderr
    stack.process.wait(timeout=30)
    assert not list((stack.home / "run").glob("*.pid")) and not (stack.home / "prefect-server.json").exists()
    for url in (f"{stack.api_url}/health", f"http://127.0.0.1:{stack.intake_port}/healthz",
                f"{stack.simulator_url}/health"):
        assert not answers(url), f"{url} still answers after `firebreak down`"


def test_an_exited_but_unreaped_process_counts_as_stopped() -> None:
    """`up` started by a script that reaps it only after `down` returns stays a zombie until then:
    signal 0 still reaches it, and `down` used to wait its whole grace period for it."""
    from firebreak.cli.stack import _alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while _alive(child.pid) and time.monotonic() < deadline:  # exits, and nobody reaps it yet
            time.sleep(0.05)
        assert not _alive(child.pid)
        os.kill(child.pid, 0)  # still there for signal 0: a zombie, not a reaped pid
    finally:
        child.wait(timeout=10)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_a_command_started_with_sigint_ignored_still_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Started with SIGINT ignored (a shell script's `&` job), Python installs no KeyboardInterrupt
    handler: `firebreak serve-deployments` went on serving after SIGINT, which `firebreak up` stops
    its children with. The `firebreak` process entry (console script, `python -m firebreak`) puts
    Python's handler back first."""
    script = ("import signal, sys\nfrom firebreak.cli import entry\n"
              "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
              "sys.argv = ['firebreak', 'validate']\n"
              "code = entry()\n"
              "print(code, signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FIREBREAK_HOME": str(tmp_path / "home")},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # noqa: PLW1509
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 True"
