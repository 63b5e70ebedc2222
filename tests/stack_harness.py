"""`firebreak up` in a real process, as an operator starts it: its own Prefect server, the deployments,
the intake and the simulator, on free ports, in a home of its own. For the stack and browser tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    home: Path
    prefect_port: int
    intake_port: int
    simulator_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.simulator_port}"

    def env(self) -> dict[str, str]:
        """What a CLI command beside this stack runs with (its home, and no PREFECT_API_URL: it finds the server)."""
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update({"FIREBREAK_HOME": str(self.home), "FIREBREAK_PREFECT_PORT": str(self.prefect_port),
                    "FIREBREAK_INBOX": f"127.0.0.1:{self.simulator_port}",
                    "FIREBREAK_PUBLIC_URL": f"http://127.0.0.1:{self.intake_port}"})
        return env

    def firebreak(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "firebreak", *args], cwd=REPO, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def api(self, method: str, path: str, *, attempts: int = 8, **kwargs: Any) -> Any:
        """One call to the stack's Prefect API, retried as Prefect's own client retries: its server
        answers 503 when its SQLite database is locked under load (seen in CI), and 429 when it sheds."""
        for attempt in range(attempts):
            try:
                response = httpx.request(method, f"{self.api_url}{path}", timeout=10, **kwargs)
            except httpx.TransportError:
                if attempt == attempts - 1:
                    raise
            else:
                if response.status_code not in (429, 503) or attempt == attempts - 1:
                    response.raise_for_status()
                    return response.json()
            time.sleep(min(0.5 * 2 ** attempt, 8))
        raise AssertionError("unreachable")

    def deployments_served(self) -> bool:
        try:
            response = httpx.post(f"{self.api_url}/deployments/filter", json={"limit": 200}, timeout=5)
            names = {d["name"] for d in response.json()}
        except (httpx.HTTPError, ValueError, TypeError):
            return False
        return {"system-outage", "incident-resolve", "incident-close"} <= names


def start_stack(home: Path, *, timeout: float = 240) -> Stack:
    """`firebreak up --with-simulator` on free ports; returns once the Prefect API, the intake, the
    simulator and the deployments answer."""
    ports = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "FIREBREAK_INBOX",
                                                            "FIREBREAK_SERVICES_FILE", "FIREBREAK_PUBLIC_URL")}
    env["FIREBREAK_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    log = home / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "firebreak", "up", "--with-simulator",
                                    "--prefect-port", str(ports[0]), "--intake-port", str(ports[1]),
                                    "--simulator-port", str(ports[2])],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack = Stack(home, *ports, process=process, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"firebreak up exited {process.returncode}:\n{log.read_text()[-3000:]}")
        if (answers(f"{stack.api_url}/health") and answers(f"http://127.0.0.1:{ports[1]}/healthz")
                and answers(f"{stack.simulator_url}/health") and stack.deployments_served()):
            return stack
        time.sleep(0.5)
    stop_stack(stack)
    raise AssertionError(f"the stack did not come up in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def stop_stack(stack: Stack) -> None:
    """`firebreak down`, then make sure (the test's own process group, by its id) nothing is left."""
    stack.firebreak("down", timeout=90)
    try:
        stack.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(stack.process.pid, signal.SIGKILL)
        stack.process.wait(timeout=10)
