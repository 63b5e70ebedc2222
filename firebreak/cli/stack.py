"""What `firebreak up` started, in pid files, so `firebreak down` (and `make stop`) can stop all of it.

`$FIREBREAK_HOME/run/<name>.pid` for `up` itself and each process it starts (simulator,
deployments, intake), each in a process group of its own; the local Prefect server has its state
file (firebreak.cli.prefect_server). `down` asks `up` to stop (SIGTERM: it stops its children in
order and the Prefect server it started), then stops whatever is still running from the pid files,
then the local Prefect server. Only processes Firebreak recorded are touched.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from firebreak.settings import get_settings

UP = "up"


def run_dir() -> Path:
    path = get_settings().resolved_home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(name: str, pid: int) -> None:
    (run_dir() / f"{name}.pid").write_text(f"{pid}\n")


def forget(name: str) -> None:
    (run_dir() / f"{name}.pid").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Exited but not yet reaped by its parent (a supervisor or script that started `up` and waits on
    `down` before reaping it): signal 0 still reaches it, but it has stopped. Without this `down`
    waited out its whole grace period for a process that was already gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): signal 0 is all there is
    # The state is the first field after the command name, which is in parentheses and may hold spaces.
    return stat[stat.rfind(")") + 2:].startswith("Z")


def recorded() -> dict[str, int]:
    found = {}
    for path in sorted(run_dir().glob("*.pid")):
        try:
            found[path.stem] = int(path.read_text().strip())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    return found


def stop_all(grace: float = 20.0) -> list[str]:
    """Stop what `up` recorded and the local Prefect server; the names of what was stopped."""
    from firebreak.cli.prefect_server import stop_local_server

    stopped = []
    processes = recorded()
    up = processes.pop(UP, None)
    if up is not None and _alive(up):
        os.kill(up, signal.SIGTERM)  # `up` stops its children in order, then its Prefect server
        deadline = time.monotonic() + grace
        while _alive(up) and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped.append(UP)
    forget(UP)
    for name, pid in processes.items():
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            stopped.append(name)
        forget(name)
    if stop_local_server():
        stopped.append("prefect-server")
    return stopped
