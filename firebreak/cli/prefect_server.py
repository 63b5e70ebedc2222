"""Find or start the Prefect server the runs report to.

If PREFECT_API_URL is set, that server is used as it is. Otherwise Firebreak
starts `prefect server start` on the embedded SQLite under FIREBREAK_HOME and
leaves it running, so the run links it prints keep working afterwards
(`firebreak server stop` or `firebreak down` ends it).

Firebreak knows its own local server by the state file it writes when it starts one
(`$FIREBREAK_HOME/prefect-server.json`: pid, port, API URL): only that server is reused. A
healthy Prefect server on the port that Firebreak did not start (another checkout's, anyone's) is
refused with one line saying what to do, never adopted: its runs, artifacts and incident numbers
would mix with this checkout's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from firebreak.errors import Conflict, StoreUnavailable
from firebreak.settings import get_settings

STARTUP_TIMEOUT_SECONDS = 90.0
STATE_FILE = "prefect-server.json"
LEGACY_PID_FILE = "prefect-server.pid"


class ForeignServer(Conflict, RuntimeError):
    """A Prefect server Firebreak did not start answers on the port it would use."""


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


def server_command(port: int) -> list[str]:
    """`prefect server start`, through firebreak.cli.prefect_server_main: Prefect itself plus one fix
    that keeps its SQLite server from freezing for 60 s under bursts (see there)."""
    return [sys.executable, "-m", "firebreak.cli.prefect_server_main", "server", "start", "--host", "127.0.0.1",
            "--port", str(port)]


def start_local_server(home: Path, port: int, log_path: Path, *, detach: bool) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the server writes through its own copy; ours closes here
        return subprocess.Popen(server_command(port), env=server_environment(home, port), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach)


def wait_until_healthy(api_url: str, process: subprocess.Popen[bytes] | None, log_path: Path | None,
                       timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(api_url):
            return
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise PrefectServerDidNotStart(f"the Prefect server exited with code {process.returncode}:\n{tail}")
        time.sleep(0.3)
    raise PrefectServerDidNotStart(f"the Prefect server at {api_url} was not healthy after {timeout:.0f}s "
                                   f"(log: {log_path})")


class PrefectServerDidNotStart(StoreUnavailable, RuntimeError):
    """The local Prefect server Firebreak started did not become healthy (its log says why); the CLI
    prints this one line rather than a traceback."""


def _state_path() -> Path:
    return get_settings().resolved_home / STATE_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_server_state() -> dict[str, object] | None:
    """What the state file says about the local server this FIREBREAK_HOME started, if its process lives."""
    try:
        state = json.loads(_state_path().read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        state = _legacy_state()
        if state is None:
            return None
        pid = int(str(state["pid"]))
    return state if _alive(pid) else None


def _legacy_state() -> dict[str, object] | None:
    """A server started by an earlier version, which wrote only its pid (on FIREBREAK_PREFECT_PORT)."""
    settings = get_settings()
    try:
        pid = int((settings.resolved_home / LEGACY_PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    port = settings.prefect_port
    return {"pid": pid, "port": port, "api_url": f"http://127.0.0.1:{port}/api"}


def local_server_url() -> str | None:
    """PREFECT_API_URL if set, else the API URL of this home's own local server if it runs and answers;
    None otherwise. Never starts one (for commands that use Prefect only if it is there)."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return configured
    state = own_server_state()
    if state is not None and healthy(str(state["api_url"])):
        return str(state["api_url"])
    return None


def ensure_server(port: int | None = None) -> PrefectServer:
    """Use PREFECT_API_URL if set; else reuse this home's own local server or start one (on `port`,
    default FIREBREAK_PREFECT_PORT). A server on that port that Firebreak did not start is refused
    (ForeignServer). Sets PREFECT_API_URL."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        if not healthy(configured):
            raise RuntimeError(f"PREFECT_API_URL={configured} is set but that server does not answer /health")
        return PrefectServer(configured, started_here=False)
    settings = get_settings()
    port = port or settings.prefect_port
    api_url = f"http://127.0.0.1:{port}/api"
    state = own_server_state()
    if state is not None and int(str(state["port"])) != port:
        raise ForeignServer(f"this checkout's Prefect server already runs on port {state['port']} (pid "
                            f"{state['pid']}); use that port, or stop it first (firebreak down)")
    if state is not None and not healthy(api_url):  # ours, still starting (another command started it)
        wait_until_healthy(api_url, None, settings.resolved_home / "prefect-server.log")
    if healthy(api_url):
        if state is None:
            raise ForeignServer(f"a Prefect server that Firebreak did not start answers on 127.0.0.1:{port}; "
                                "stop it, pick another port (--prefect-port or FIREBREAK_PREFECT_PORT), or set "
                                "PREFECT_API_URL to use it on purpose")
        started = False
    else:
        home = settings.resolved_home / "prefect"
        log_path = settings.resolved_home / "prefect-server.log"
        print(f"starting a local Prefect server on {api_url} (log: {log_path}) …", flush=True)
        process = start_local_server(home, port, log_path, detach=True)
        _state_path().write_text(json.dumps({"pid": process.pid, "port": port, "api_url": api_url,
                                             "home": str(settings.resolved_home)}))
        wait_until_healthy(api_url, process, log_path)
        started = True
    os.environ["PREFECT_API_URL"] = api_url
    return PrefectServer(api_url, started_here=started)


def stop_local_server() -> bool:
    """Stop the local server this home started (its state file says which); False if there is none."""
    home = get_settings().resolved_home
    pids = []
    try:
        pids.append(int(json.loads((home / STATE_FILE).read_text())["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:  # written by earlier versions
        pids.append(int((home / LEGACY_PID_FILE).read_text()))
    except (OSError, ValueError):
        pass
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    (home / STATE_FILE).unlink(missing_ok=True)
    (home / LEGACY_PID_FILE).unlink(missing_ok=True)
    return bool(pids)
