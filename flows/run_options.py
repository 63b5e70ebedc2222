"""The Prefect flow options of every runbook run: run-runbook (flows.engine) and the seed runbooks'
flows (flows.seed_runbooks).

- The state hooks (flows.hooks): whatever ends a run, the incident records it.
- Where results would go: Prefect's own local default, named here. A runbook run keeps no Prefect
  result (no step persists one; what a run did is in the records database), but without a storage of
  its own each run asked the Prefect server for the server's default result storage, twice (for the
  flow's result store and again for its step's): 2 of the 12 API calls a run made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.settings import get_current_settings

from flows.hooks import RUN_HOOKS

RUNBOOK_FLOW_OPTIONS: dict[str, Any] = {
    **RUN_HOOKS,
    "result_storage": Path(get_current_settings().results.local_storage_path),
}
