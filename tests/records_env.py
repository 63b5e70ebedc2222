"""Point the records (FIREBREAK_DATABASE_URL) at another database for a while, then back."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from firebreak.settings import reload_settings


@contextmanager
def records_database_at(url: str) -> Iterator[str]:
    saved = os.environ.get("FIREBREAK_DATABASE_URL")
    os.environ["FIREBREAK_DATABASE_URL"] = url
    reload_settings()
    try:
        yield url
    finally:
        if saved is None:
            os.environ.pop("FIREBREAK_DATABASE_URL", None)
        else:
            os.environ["FIREBREAK_DATABASE_URL"] = saved
        reload_settings()
