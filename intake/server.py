"""Run the intake under uvicorn (`firebreak serve`)."""
from __future__ import annotations

import uvicorn

from intake.app import create_app, load_intake
from intake.settings import IntakeSettings


def serve(settings: IntakeSettings) -> None:
    intake = load_intake(settings)
    enabled = ", ".join(f"{name} ({source.format})" for name, source in sorted(intake.sources.items()))
    print(f"intake: http://{settings.host}:{settings.port}  (docs: /docs; sources: {enabled}; "
          f"runs: {settings.executor} executor)", flush=True)
    uvicorn.run(create_app(intake), host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=10,
                # Longer than monitors' idle pools, so a reused connection is not closed under a request.
                timeout_keep_alive=75, backlog=2048)
