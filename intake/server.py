"""Run the intake under uvicorn (`firebreak serve`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from flows import first_pages
from intake.app import create_app
from intake.service import Intake, load_intake
from intake.settings import IntakeSettings
from intake.writer_process import WriterClient, WriterProcess

# Longer than monitors' idle pools, so a reused connection is not closed under a request.
KEEP_ALIVE_SECONDS = 75
SWITCH_INTERVAL_SECONDS = 0.001


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, except that at shutdown an idle HTTPS connection is cut at once.

    uvicorn closes idle connections gracefully; over TLS that waits for the client's close_notify,
    which an idle keep-alive pool (a monitor's, or the PagerDuty client's session) never sends, so
    every stop of an HTTPS intake took its whole graceful timeout (10 s). An idle connection has no
    request in flight and nothing left to send, so nothing is lost by cutting it."""

    def shutdown(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if (idle and self.transport.get_extra_info("sslcontext") is not None
                and not self.transport.get_write_buffer_size()):
            self.transport.abort()
            return
        super().shutdown()


def app_from_environment() -> FastAPI:
    """The app each worker process builds for itself (settings from FIREBREAK_INTAKE_*)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    first_pages.enable()  # as in serve()
    return create_app(load_intake(IntakeSettings()))


def tls_options(settings: IntakeSettings) -> dict[str, Any]:
    """uvicorn's TLS options: with a certificate and its key the intake serves HTTPS only."""
    if settings.certfile is None or settings.keyfile is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(settings.certfile), "ssl_keyfile": str(settings.keyfile)}
    if settings.keyfile_password is not None:
        options["ssl_keyfile_password"] = settings.keyfile_password.get_secret_value()
    return options


def uses_writer_process(settings: IntakeSettings) -> bool:
    """Whether alerts are stored by a writer process (intake.writer_process): FIREBREAK_INTAKE_ALERT_WRITER."""
    from sqlalchemy.engine import make_url

    from firebreak.errors import ConfigInvalid
    from firebreak.settings import get_settings

    sqlite = make_url(get_settings().records_url).get_backend_name() == "sqlite"
    if settings.alert_writer == "process" and not sqlite:
        # Its connections would be outside the connection budget, and PostgreSQL needs no single writer.
        raise ConfigInvalid("FIREBREAK_INTAKE_ALERT_WRITER=process is for SQLite records; on PostgreSQL each "
                            "intake process stores its own alerts (thread, or auto)")
    return settings.alert_writer == "process" or (settings.alert_writer == "auto" and sqlite)


def serve(settings: IntakeSettings) -> None:
    from records.db import migrate

    # Requests pass between threads (event loop → dispatcher → run threads); with Python's default
    # 5 ms GIL switch interval each hand-off can wait that long behind a busy run thread, which adds
    # tens of milliseconds from alert to run start.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    # A finished run's report waits for the first pages of the runs on their way, without its slot.
    first_pages.enable()
    writer_process = uses_writer_process(settings)
    intake = load_intake(settings)  # a sources or routes file with problems ends here, before anything starts
    migrate()  # once, before the writer process and the workers race to do it
    writer = WriterProcess() if writer_process else None
    if writer is not None:
        writer.start()
        # The worker processes uvicorn starts read their settings from the environment.
        os.environ["FIREBREAK_INTAKE_WRITER_SOCKET"] = writer.socket_path
        intake.settings = settings = settings.model_copy(update={"writer_socket": Path(writer.socket_path)})
        intake.writer = WriterClient(writer.socket_path)
    try:
        _serve(intake)
    finally:
        if writer is not None:
            writer.stop()


def _serve(intake: Intake) -> None:
    settings = intake.settings
    enabled = ", ".join(f"{name} ({source.format})" for name, source in sorted(intake.sources.items()))
    readers = ", ".join(sorted(intake.readers)) or "none configured: nobody can read incidents or /docs"
    scheme = "https" if settings.certfile else "http"
    writer = "a writer process" if settings.writer_socket else "a writer thread per process"
    print(f"intake: {scheme}://{settings.host}:{settings.port}  (docs: /docs, with a read token; sources: {enabled}; "
          f"readers: {readers}; runs: {settings.executor} executor; {settings.workers} worker process(es); "
          f"alerts stored by {writer})", flush=True)
    options = {"host": settings.host, "port": settings.port, "log_level": "warning",
               "timeout_graceful_shutdown": 10, "http": HttpProtocol, "timeout_keep_alive": KEEP_ALIVE_SECONDS, "backlog": 2048,
               **tls_options(settings)}
    if settings.workers == 1:
        uvicorn.run(create_app(intake), **options)
        return
    # Worker processes import the app by name; they read the same settings from the environment
    # (the caller's overrides are exported by `firebreak serve`).
    uvicorn.run("intake.server:app_from_environment", factory=True, workers=settings.workers, **options)
