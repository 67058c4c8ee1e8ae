"""The Redis tier's circuit breaker, one class for both of its users: the response cache (``cache.store``) and the
gateway's shared limits (``gateway.limits.RedisLimiter``).

A late or failed Redis call decides only the request that made it (a cache miss, a limit decided by the
replica alone). ``trip_after`` failures in a row open the breaker for ``cooldown`` seconds, during which Redis
is not asked at all, so a Redis that is down or overloaded is not waited on by every request. After the
cooldown one call is tried (half-open): a success closes the breaker, a failure opens it again at once. Any
success resets the count, so misses scattered between answers never add up.

Why not open on the first failure: the Redis timeouts are measured on the gateway's event loop, and a loaded
loop serves an answer that arrived in time a little late; opening on that one miss bypassed the cache (or made
the limits per-replica) for the whole cooldown. No I/O here; the clock is injected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("llmfleet.redis")

TRIP_AFTER = 3  # failures in a row that open the breaker
COOLDOWN_S = 5.0  # seconds the breaker stays open before one call is tried again
LOG_EVERY_S = 30.0  # at most one warning per this many seconds per breaker


class Breaker:
    def __init__(
        self,
        what: str,
        *,
        trip_after: int = TRIP_AFTER,
        cooldown: float = COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = LOG_EVERY_S,
    ) -> None:
        if trip_after < 1:
            raise ValueError("trip_after must be at least 1")
        self.what, self.trip_after, self.cooldown, self.clock = what, trip_after, cooldown, clock
        self.log_every = log_every
        self.open_until = 0.0
        self.misses = 0  # calls in a row that failed or timed out
        self.failures = 0  # all failures, for the log line
        # True once the breaker has opened, until a call succeeds: then one more failure reopens it at once.
        self._trial = False
        self._logged = -1e18

    @property
    def closed(self) -> bool:
        """Redis may be asked (the breaker is closed, or half-open after its cooldown)."""
        return self.clock() >= self.open_until

    def ok(self) -> None:
        """A call answered in time."""
        self.misses = 0
        self._trial = False

    def fail(self, exc: BaseException | None = None) -> bool:
        """A call failed or timed out. True when this failure opened the breaker."""
        self.failures += 1
        self.misses += 1
        if self.misses < self.trip_after and not self._trial:
            return False
        now = self.clock()
        self.open_until = now + self.cooldown
        self.misses, self._trial = 0, True
        if now - self._logged >= self.log_every:
            self._logged = now
            cause = f"{type(exc).__name__}: {exc}" if exc is not None else "no answer"
            log.warning(
                "%s for %.0fs: Redis %s (%d failures so far)", self.what, self.cooldown, cause, self.failures
            )
        return True
