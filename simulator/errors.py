"""The one exception type the simulator uses to turn a problem into an HTTP answer."""

from __future__ import annotations


class ApiError(Exception):
    """A request the simulator refuses; becomes `{"error": message}` with `status`.

    Raised from validation (400), routing (404/405) and state rules (409) alike, so the
    HTTP layer has a single place that formats refusals.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
