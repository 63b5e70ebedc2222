"""Find or start the Prefect server the runs report to.

If PREFECT_API_URL is set, that server is used as it is. Otherwise Firebreak
starts `prefect server start` on the embedded SQLite under FIREBREAK_HOME and
leaves it running, so the run links it prints keep working afterwards
(`firebreak server stop` ends it).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from firebreak.settings import get_settings

STARTUP_TIMEOUT_SECONDS = 90.0


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    started_here: bool

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def server_environment(home: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no internet here; and no phoning home
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    })
    return env


def start_local_server(home: Path, port: int, log_path: Path, *, detach: bool) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect) if prefect.exists() else "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]
    return subprocess.Popen(command, env=server_environment(home, port), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=detach)


def wait_until_healthy(api_url: str, process: subprocess.Popen[bytes] | None, log_path: Path | None,
                       timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(api_url):
            return
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"the Prefect server exited with code {process.returncode}:\n{tail}")
        time.sleep(0.3)
    raise RuntimeError(f"the Prefect server at {api_url} was not healthy after {timeout:.0f}s (log: {log_path})")


def ensure_server() -> PrefectServer:
    """Use PREFECT_API_URL if set; else reuse or start the local server. Sets PREFECT_API_URL."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        if not healthy(configured):
            raise RuntimeError(f"PREFECT_API_URL={configured} is set but that server does not answer /health")
        return PrefectServer(configured, started_here=False)
    settings = get_settings()
    api_url = f"http://127.0.0.1:{settings.prefect_port}/api"
    home = settings.resolved_home / "prefect"
    if not healthy(api_url):
        log_path = settings.resolved_home / "prefect-server.log"
        print(f"starting a local Prefect server on {api_url} (log: {log_path}) …", flush=True)
        process = start_local_server(home, settings.prefect_port, log_path, detach=True)
        (settings.resolved_home / "prefect-server.pid").write_text(str(process.pid))
        wait_until_healthy(api_url, process, log_path)
        started = True
    else:
        started = False
    os.environ["PREFECT_API_URL"] = api_url
    return PrefectServer(api_url, started_here=started)


def stop_local_server() -> bool:
    pid_file = get_settings().resolved_home / "prefect-server.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)
    return True
