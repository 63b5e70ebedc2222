"""Token buckets, one per source and per reader: a request takes a token or is answered 429
with Retry-After (the seconds until a token is back). Kept in the process: each intake
process and replica has its own buckets, so N of them let N times the rate through."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from intake.sources import RateLimit


class Bucket:
    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic):
        self.rate, self.capacity = limit.per_second, float(limit.burst)
        self.clock = clock
        self.tokens = self.capacity
        self.updated = clock()

    def take(self) -> float:
        """0 if a token was taken; otherwise the seconds until one is available (nothing taken)."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """Buckets by key ("source:<name>", "reader:<name>"); a key without a limit is never limited."""

    def __init__(self, limits: dict[str, RateLimit | None], clock: Callable[[], float] = time.monotonic):
        self._buckets = {key: Bucket(limit, clock) for key, limit in limits.items() if limit is not None}
        self._lock = threading.Lock()  # the incidents API's handlers run on threads

    def retry_after(self, key: str) -> int | None:
        """None if the request may go ahead (a token was taken); else whole seconds to wait (≥ 1)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        with self._lock:
            wait = bucket.take()
        return None if wait == 0 else max(1, math.ceil(wait))
