"""A private PostgreSQL cluster per test (initdb + pg_ctl in a temporary directory, on a port of
its own), for tests that limit the server (max_connections) or need databases nobody else uses.
The shared server on 5432 is never touched. Skips the test if the binaries are not installed."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.intake_harness import free_port


def binaries() -> Path | None:
    """The directory holding initdb and pg_ctl (newest PostgreSQL installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if
                   p.split("/")[-2].isdigit() else 0, reverse=True)
    for directory in [*found, *(str(Path(p).parent) for p in filter(None, [shutil.which("initdb")]))]:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    return None


@dataclass
class PrivateCluster:
    port: int
    directory: Path
    bindir: Path
    run_as: str | None

    def url(self, database: str = "postgres", user: str = "postgres", driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{user}@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str, database: str = "postgres") -> list[list[tuple]]:
        """Run statements as the superuser (autocommit); the rows of each."""
        import psycopg

        answers: list[list[tuple]] = []
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/{database}", autocommit=True) as conn:
            for statement in statements:
                cursor = conn.execute(statement)
                answers.append(cursor.fetchall() if cursor.description else [])
        return answers

    def create_database(self, name: str, owner: str | None = None) -> None:
        if owner is not None:
            self.sql(f'CREATE ROLE "{owner}" LOGIN')
        self.sql(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))

    def stop(self) -> None:
        """The server goes away at once (`pg_ctl stop -m immediate`: no clean shutdown, like a crash)."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        """The same cluster, on the same port, again."""
        self._pg_ctl("-l", str(self.directory / "server.log"), "-w", "-t", "120", "start")

    def _pg_ctl(self, *args: str) -> None:
        done = subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data"), *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_as_user(self.run_as),
                              cwd=self.directory)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)}: {done.stderr.decode()}\n{self.log()[-2000:]}")

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _as_user(user: str | None):  # type: ignore[no-untyped-def]
    if user is None:
        return None
    entry = pwd.getpwnam(user)

    def demote() -> None:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return demote


@contextmanager
def private_cluster(*, max_connections: int = 30, settings: dict[str, str] | None = None) -> Iterator[PrivateCluster]:
    """initdb a cluster in a temporary directory and start it on a free port (trust auth, 127.0.0.1);
    stop it and delete it afterwards."""
    bindir = binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    run_as = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run initdb as")
        run_as = "postgres"
    directory = Path(tempfile.mkdtemp(prefix="firebreak-pg-"))
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    data = directory / "data"
    port = free_port()
    demote = _as_user(run_as)
    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                    "-E", "UTF8", "--locale=C"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   preexec_fn=demote, cwd=directory)
    options = {"port": str(port), "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{directory}'",
               "max_connections": str(max_connections), "fsync": "off", "synchronous_commit": "off",
               "full_page_writes": "off", "shared_buffers": "16MB", **(settings or {})}
    with (data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in options.items())
    cluster = PrivateCluster(port, directory, bindir, run_as)
    started = subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"),
                              "-w", "-t", "120", "start"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             preexec_fn=demote, cwd=directory)
    try:
        if started.returncode != 0:
            raise RuntimeError(f"the private PostgreSQL did not start: {started.stderr.decode()}\n{cluster.log()}")
        yield cluster
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=demote, cwd=directory)
        shutil.rmtree(directory, ignore_errors=True)
