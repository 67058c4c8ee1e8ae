"""Per-key rate limits (requests and tokens per minute): in memory, or in Redis so replicas share them.

A sliding window approximated by two fixed one-minute windows (the previous one weighted by how much of
it still overlaps), the scheme most API gateways use. Tokens are reserved up front (prompt estimate +
max_tokens) and settled with the real usage when the response ends.

Shared limits degrade, never fail: when Redis does not answer within ``timeout`` a request is decided by the
replica's own in-memory limiter, and after ``trip_after`` such misses in a row the replica stops asking Redis
for ``cooldown`` seconds (``cache.breaker``, the response cache's breaker too). Each decision taken locally
counts in ``llmfleet_gateway_limit_fallbacks_total`` (by reason), because while it lasts every replica admits
the key's whole limit on its own. The timeout is measured on the gateway's event loop, so it includes the
loop's own lag at peak: a 50 ms cap is within that lag on a loaded two-core node, where one late answer used
to send the replica to its own counts for 5 s (the three-replica test once admitted 26 of 25). So the cap is
250 ms, the Redis client's socket timeout, and one late answer does not open the breaker.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from llmfleet.cache.breaker import Breaker

WINDOW = 60.0

# Why a decision was taken by the replica's own limiter (the label of llmfleet_gateway_limit_fallbacks).
FALLBACK_TIMEOUT = "timeout"  # Redis did not answer in time
FALLBACK_ERROR = "error"  # Redis refused or failed
FALLBACK_OPEN = "open"  # the breaker is open after repeated misses: Redis not asked
FALLBACK_REASONS = (FALLBACK_TIMEOUT, FALLBACK_ERROR, FALLBACK_OPEN)


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit_requests: int
    remaining_requests: int
    limit_tokens: int
    remaining_tokens: int
    retry_after: float  # seconds until the request would be allowed
    reset_requests: float
    reset_tokens: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's rate-limit headers; resets as whole milliseconds ("1250ms"), a duration OpenAI's SDKs parse."""
        out = []
        if self.limit_requests:
            out += [
                (b"x-ratelimit-limit-requests", b"%d" % self.limit_requests),
                (b"x-ratelimit-remaining-requests", b"%d" % max(0, self.remaining_requests)),
                (b"x-ratelimit-reset-requests", b"%dms" % (self.reset_requests * 1000)),
            ]
        if self.limit_tokens:
            out += [
                (b"x-ratelimit-limit-tokens", b"%d" % self.limit_tokens),
                (b"x-ratelimit-remaining-tokens", b"%d" % max(0, self.remaining_tokens)),
                (b"x-ratelimit-reset-tokens", b"%dms" % (self.reset_tokens * 1000)),
            ]
        if not self.allowed:
            out.append((b"retry-after", b"%d" % max(1, math.ceil(self.retry_after))))
        return out


class Limiter(Protocol):
    async def acquire(self, key: str, tokens: int) -> Decision: ...

    async def settle(self, key: str, reserved: int, actual: int) -> None: ...


def _weighted(prev: float, cur: float, elapsed: float) -> float:
    return prev * (1 - elapsed / WINDOW) + cur


class MemoryLimiter:
    """In-process limits (one gateway replica, or when no Redis is configured)."""

    def __init__(self, rpm: int, tpm: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self._state: dict[
            str, list[float]
        ] = {}  # key -> [window_start, prev_req, cur_req, prev_tok, cur_tok]

    def _roll(self, key: str) -> tuple[list[float], float]:
        now = self.clock()
        st = self._state.get(key)
        window = now - now % WINDOW
        if st is None:
            st = self._state[key] = [window, 0.0, 0.0, 0.0, 0.0]
        elif st[0] != window:
            gap = window - st[0]
            st[1], st[3] = (st[2], st[4]) if gap == WINDOW else (0.0, 0.0)
            st[2] = st[4] = 0.0
            st[0] = window
        return st, now - window

    async def acquire(self, key: str, tokens: int) -> Decision:
        st, elapsed = self._roll(key)
        used_req = _weighted(st[1], st[2], elapsed)
        used_tok = _weighted(st[3], st[4], elapsed)
        reset = WINDOW - elapsed
        ok_req = not self.rpm or used_req + 1 <= self.rpm
        ok_tok = not self.tpm or used_tok + tokens <= self.tpm or (used_tok == 0 and tokens > self.tpm)
        allowed = ok_req and ok_tok
        if allowed:
            st[2] += 1
            st[4] += tokens
        retry = 0.0 if allowed else _retry_after(st, elapsed, self.rpm, self.tpm, tokens, ok_req, ok_tok)
        return Decision(
            allowed,
            self.rpm,
            int(self.rpm - used_req - (1 if allowed else 0)),
            self.tpm,
            int(self.tpm - used_tok - (tokens if allowed else 0)),
            retry,
            reset,
            reset,
        )

    async def settle(self, key: str, reserved: int, actual: int) -> None:
        st, _ = self._roll(key)
        st[4] = max(0.0, st[4] + actual - reserved)


def _retry_after(
    st: list[float], elapsed: float, rpm: int, tpm: int, tokens: int, ok_req: bool, ok_tok: bool
) -> float:
    """Seconds until the weighted usage drops enough (the previous window's share decays linearly)."""
    waits = [WINDOW - elapsed]
    if not ok_req and st[1] > 0:
        excess = _weighted(st[1], st[2], elapsed) + 1 - rpm
        waits.append(excess / st[1] * WINDOW)
    if not ok_tok and st[3] > 0:
        excess = _weighted(st[3], st[4], elapsed) + tokens - tpm
        waits.append(excess / st[3] * WINDOW)
    if (not ok_req and st[2] + 1 > rpm) or (not ok_tok and st[4] + tokens > tpm):
        return WINDOW - elapsed + 0.001  # the current window alone is over: wait for it to roll
    return max(0.001, min(waits))


_LUA = """
local now = tonumber(ARGV[1]); local window = now - (now % 60); local elapsed = now - window
local rpm = tonumber(ARGV[2]); local tpm = tonumber(ARGV[3]); local tokens = tonumber(ARGV[4])
local cur = KEYS[1] .. ':' .. window; local prev = KEYS[1] .. ':' .. (window - 60)
local pr = tonumber(redis.call('HGET', prev, 'r') or '0'); local pt = tonumber(redis.call('HGET', prev, 't') or '0')
local cr = tonumber(redis.call('HGET', cur, 'r') or '0'); local ct = tonumber(redis.call('HGET', cur, 't') or '0')
local w = 1 - elapsed / 60
local ur = pr * w + cr; local ut = pt * w + ct
local okr = (rpm == 0) or (ur + 1 <= rpm)
local okt = (tpm == 0) or (ut + tokens <= tpm) or (ut == 0 and tokens > tpm)
if okr and okt then
  redis.call('HINCRBY', cur, 'r', 1); redis.call('HINCRBY', cur, 't', tokens); redis.call('EXPIRE', cur, 130)
  return {1, tostring(ur + 1), tostring(ut + tokens), tostring(elapsed), tostring(pr), tostring(pt), tostring(cr + 1), tostring(ct + tokens)}
end
return {0, tostring(ur), tostring(ut), tostring(elapsed), tostring(pr), tostring(pt), tostring(cr), tostring(ct)}
"""


def _is_timeout(exc: BaseException) -> bool:
    """asyncio's and the Redis client's own (redis.exceptions.TimeoutError is no builtin TimeoutError)."""
    return any(c.__name__ == "TimeoutError" for c in type(exc).__mro__)


class RedisLimiter:
    """Limits shared by every gateway replica through one Redis (an atomic Lua script per request)."""

    def __init__(
        self,
        redis: Any,
        rpm: int,
        tpm: int,
        prefix: str = "llmfleet:rl",
        clock: Callable[[], float] = time.time,
        timeout: float = 0.25,
        cooldown: float = 5.0,
        trip_after: int = 3,
        on_fallback: Callable[[str], None] = lambda reason: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.rpm, self.tpm, self.prefix, self.clock = redis, rpm, tpm, prefix, clock
        self._script = redis.register_script(_LUA)
        # Redis down or slow: each replica enforces the limits on its own until Redis answers again.
        self.fallback = MemoryLimiter(rpm, tpm)
        self.timeout, self.on_fallback = timeout, on_fallback
        self.breaker = Breaker(
            "shared limits decided per replica", trip_after=trip_after, cooldown=cooldown, clock=monotonic
        )

    async def acquire(self, key: str, tokens: int) -> Decision:
        if not self.breaker.closed:
            self.on_fallback(FALLBACK_OPEN)
            return await self.fallback.acquire(key, tokens)
        try:
            res = await asyncio.wait_for(
                self._script(keys=[f"{self.prefix}:{key}"], args=[self.clock(), self.rpm, self.tpm, tokens]),
                self.timeout,
            )
        except Exception as exc:
            self.breaker.fail(exc)
            self.on_fallback(FALLBACK_TIMEOUT if _is_timeout(exc) else FALLBACK_ERROR)
            return await self.fallback.acquire(key, tokens)
        self.breaker.ok()
        allowed = int(res[0]) == 1
        used_r, used_t, elapsed = float(res[1]), float(res[2]), float(res[3])
        st = [0.0, float(res[4]), float(res[6]), float(res[5]), float(res[7])]
        retry = (
            0.0
            if allowed
            else _retry_after(
                st,
                elapsed,
                self.rpm,
                self.tpm,
                tokens,
                not self.rpm or used_r + 1 <= self.rpm,
                not self.tpm or used_t + tokens <= self.tpm,
            )
        )
        reset = WINDOW - elapsed
        return Decision(
            allowed, self.rpm, int(self.rpm - used_r), self.tpm, int(self.tpm - used_t), retry, reset, reset
        )

    async def settle(self, key: str, reserved: int, actual: int) -> None:
        if not self.breaker.closed:
            await self.fallback.settle(key, reserved, actual)
            return
        now = self.clock()
        window = now - now % WINDOW
        delta = actual - reserved
        if delta:
            try:
                await asyncio.wait_for(
                    self.redis.hincrby(f"{self.prefix}:{key}:{int(window)}", "t", delta), self.timeout
                )
            except Exception as exc:
                self.breaker.fail(exc)
            else:
                self.breaker.ok()
