"""Client-side rate limits: requests and tokens per minute, and calls in flight.

The limiter spaces call starts evenly (a generic cell-rate algorithm without bursts): a
call may start `60/rpm` seconds after the previous one and after the previous calls'
tokens have drained at `tpm` per minute.  So no 60-second window ever holds more than
`rpm` starts, the achieved rate is `rpm/60` whenever enough calls are waiting, and a
provider's per-minute quota is never hit in a burst.  The limits hold per process (per
Beam worker): with W workers, give each `quota / W`.
"""

from __future__ import annotations

import threading
import time


class RateLimiter:
    def __init__(self, rpm: float | None = None, tpm: float | None = None, clock=time.monotonic,
                 sleep=time.sleep):
        if rpm is not None and rpm <= 0 or tpm is not None and tpm <= 0:
            raise ValueError("rate limits must be positive")
        self.request_interval = 60.0 / rpm if rpm else 0.0
        self.token_interval = 60.0 / tpm if tpm else 0.0
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_request = 0.0  # earliest start of the next call
        self._tokens_drained = 0.0  # when the tokens reserved so far have drained

    def acquire(self, tokens: int = 0) -> float:
        """Wait for a slot for one call of about `tokens` tokens; returns seconds waited."""
        with self._lock:
            now = self.clock()
            start = max(now, self._next_request, self._tokens_drained)
            self._next_request = start + self.request_interval
            if self.token_interval:
                self._tokens_drained = start + tokens * self.token_interval
        wait = start - now
        if wait > 0:
            self.sleep(wait)
        return max(wait, 0.0)

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token reservation once the provider has counted the tokens."""
        if self.token_interval and actual != estimated:
            with self._lock:
                self._tokens_drained += (actual - estimated) * self.token_interval


class InFlight:
    """At most `limit` calls at once in this process (shared by every stage)."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("concurrency must be at least 1")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def __enter__(self):
        self._slots.acquire()
        return self

    def __exit__(self, *exc):
        self._slots.release()
