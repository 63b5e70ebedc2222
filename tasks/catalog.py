"""Every runbook action, by name. Importing this module registers them all."""
from tasks import http, notify, record, set_status, staffing, wait, wait_until  # noqa: F401  (registers)
from tasks.base import ACTIONS, Action

__all__ = ["ACTIONS", "Action"]
