"""The intake's parts, built once per process from its settings: sources and who may read or act,
routes, the group-commit writer, the run dispatcher and the rate limiter."""
from __future__ import annotations

from dataclasses import dataclass, field

from intake.alert_writer import GroupCommitWriter
from intake.ratelimit import RateLimiter
from intake.routing import Route, load_routes
from intake.runs import RunDispatcher
from intake.settings import IntakeSettings, WorkerSettings
from intake.sources import Operator, Reader, Source, load_access
from intake.writer_process import WriterClient


@dataclass
class Intake:
    settings: IntakeSettings
    sources: dict[str, Source]
    routes: Route
    dispatcher: RunDispatcher
    writer: GroupCommitWriter | WriterClient
    #: Who may read the incidents API and /docs (the sources file's `readers:`).
    readers: dict[str, Reader] = field(default_factory=dict)
    #: Who may act on incidents over HTTP, each as one contact (the sources file's `operators:`).
    operators: dict[str, Operator] = field(default_factory=dict)
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter({**{f"source:{n}": s.rate_limit for n, s in self.sources.items()},
                                    **{f"reader:{n}": r.rate_limit for n, r in self.readers.items()},
                                    **{f"operator:{n}": o.rate_limit for n, o in self.operators.items()}})


def load_intake(settings: IntakeSettings | None = None, *, prefect_api_url: str | None = None) -> Intake:
    settings = settings or IntakeSettings()
    workers = WorkerSettings()
    # The embedded executor: the same class as `firebreak worker`, with the intake's slots and poll.
    dispatcher = RunDispatcher(settings.executor, max_concurrent_runs=settings.max_concurrent_runs,
                               poll_seconds=settings.outbox_poll_seconds, prefect_api_url=prefect_api_url,
                               heartbeat_seconds=workers.heartbeat_seconds, stale_after=workers.stale_seconds)
    access = load_access(settings.sources_file)
    writer = WriterClient(settings.writer_socket) if settings.writer_socket else GroupCommitWriter()
    return Intake(settings, access.sources, load_routes(settings.routes_file), dispatcher, writer,
                  readers=access.readers, operators=access.operators)
