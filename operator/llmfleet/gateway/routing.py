"""Routing across engine replicas: least-outstanding-requests, or prefix affinity (consistent hashing of the
prompt prefix with a load bound, so vLLM's prefix cache hits while no replica overloads).

The load bound follows "consistent hashing with bounded loads" (Mirrokni et al.): a replica may take a
request only while its outstanding count is below ``ceil(c × (total + 1) / n)``; otherwise the next
replica on the ring is tried. A replica that fails is ejected for a cool-down and then tried again. A replica
that answers 503 (vLLM's admission control: its queue is full, it is healthy) is only passed over for a short
interval that doubles while it keeps refusing (``BUSY_BACKOFF_S`` up to ``BUSY_BACKOFF_MAX_S``).

A replica's load is this gateway's own requests in flight on it plus, when the engines' /load is polled
(gateway.load), the requests the other gateway replicas have there: several gateways then see one picture and do
not all send their next request to the same idle replica.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

VNODES = 64
BUSY_BACKOFF_S = 0.05
BUSY_BACKOFF_MAX_S = 2.0
PREFIX_CHARS = 512  # the stable part of a prompt: system prompt and the start of the conversation


@dataclass(eq=False)
class Endpoint:
    url: str  # http://ip:port
    outstanding: int = 0
    ejected_until: float = 0.0
    failures: int = 0
    busy_strikes: int = 0  # 503s in a row (admission control)
    served: int = 0
    others: int = (
        0  # requests other gateways have in flight on it, at the last look at its /load (gateway.load)
    )
    meta: dict[str, str] = field(default_factory=dict)

    def available(self, now: float) -> bool:
        return self.ejected_until <= now


def _h(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Router:
    def __init__(
        self,
        policy: str = "prefix-affinity",
        load_factor: float = 1.25,
        eject_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.load_factor = load_factor
        self.eject_seconds = eject_seconds
        self.clock = clock
        self.endpoints: dict[str, Endpoint] = {}
        self._eps: list[Endpoint] = []
        # No endpoint is ejected past this time: until then `available` and `pick` filter, after it they need not.
        self._ejected_until = 0.0
        self._ring: list[int] = []
        self._ring_eps: list[Endpoint] = []
        self.outstanding = 0  # requests in flight on all endpoints (begin/end), read on every request

    def begin(self, ep: Endpoint) -> None:
        """A request goes to `ep`."""
        ep.outstanding += 1
        self.outstanding += 1

    def end(self, ep: Endpoint) -> None:
        """A request to `ep` is over (answered, failed or cut)."""
        ep.outstanding -= 1
        self.outstanding -= 1

    def set_endpoints(self, urls: Iterable[str]) -> None:
        """Replace the endpoint set (from discovery); keeps the counters of endpoints that stay."""
        urls = sorted(set(urls))
        self.endpoints = {u: self.endpoints.get(u) or Endpoint(u) for u in urls}
        self._eps = list(self.endpoints.values())
        self._ejected_until = max((e.ejected_until for e in self._eps), default=0.0)
        ring = sorted((_h(f"{u}#{i}".encode()), u) for u in urls for i in range(VNODES))
        self._ring = [h for h, _ in ring]
        self._ring_eps = [self.endpoints[u] for _, u in ring]

    def available(self) -> list[Endpoint]:
        """The endpoints not ejected now (do not modify the list)."""
        now = self.clock()
        if self._ejected_until <= now:
            return self._eps
        return [e for e in self._eps if e.available(now)]

    def pick(self, prefix: bytes, exclude: AbstractSet[str] = frozenset()) -> Endpoint | None:
        now = self.clock()
        if not exclude and self._ejected_until <= now:
            candidates = self._eps
        else:
            candidates = [e for e in self._eps if e.available(now) and e.url not in exclude]
        if not candidates:
            # Everyone is ejected: try the least recently ejected rather than failing outright.
            candidates = sorted(
                (e for e in self.endpoints.values() if e.url not in exclude), key=lambda e: e.ejected_until
            )[:1]
            if not candidates:
                return None
        if self.policy != "prefix-affinity" or len(candidates) == 1 or not prefix:
            return min(candidates, key=lambda e: (e.outstanding + e.others, e.served))
        bound = math.ceil(
            self.load_factor * (sum(e.outstanding + e.others for e in candidates) + 1) / len(candidates)
        )
        start = bisect.bisect(self._ring, _h(prefix[:PREFIX_CHARS]))
        n = len(self._ring)
        seen: set[str] = set()
        for i in range(n):
            ep = self._ring_eps[(start + i) % n]
            if ep.url in seen:
                continue
            seen.add(ep.url)
            if ep.url in exclude or not ep.available(now):
                continue
            if ep.outstanding + ep.others < bound:
                return ep
        return min(candidates, key=lambda e: e.outstanding + e.others)

    def fail(self, ep: Endpoint) -> None:
        ep.failures += 1
        ep.ejected_until = self.clock() + self.eject_seconds
        self._ejected_until = max(self._ejected_until, ep.ejected_until)

    def busy(self, ep: Endpoint) -> None:
        """The replica refused for load (503): back off briefly, longer each time in a row; it is not broken."""
        ep.busy_strikes += 1
        ep.ejected_until = self.clock() + min(BUSY_BACKOFF_MAX_S, BUSY_BACKOFF_S * 2 ** (ep.busy_strikes - 1))
        self._ejected_until = max(self._ejected_until, ep.ejected_until)

    def ok(self, ep: Endpoint) -> None:
        ep.failures = 0
        ep.busy_strikes = 0
        ep.ejected_until = 0.0
