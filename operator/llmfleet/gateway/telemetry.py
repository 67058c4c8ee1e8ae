"""Gateway telemetry: Prometheus metrics as the client sees them, and JSON access logs without prompt text.

Label children are cached so the hot path does one dict lookup per metric; the access log is written
through a buffer flushed every 100 ms rather than with the logging module.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class Telemetry:
    def __init__(self, access_log: IO[bytes] | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llmfleet_gateway_requests", "Requests by route, status and API key (hash).",
                                ["route", "status", "key"], registry=r)
        self.ttft = Histogram("llmfleet_gateway_ttft_seconds", "Time to first byte of the response as the client sees it.",
                              ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("llmfleet_gateway_inter_token_seconds", "Mean inter-chunk latency of a stream.",
                             ["route"], buckets=ITL_BUCKETS, registry=r)
        self.duration = Histogram("llmfleet_gateway_request_duration_seconds", "Whole request duration.",
                                  ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("llmfleet_gateway_tokens", "Tokens by route and kind (prompt, completion).",
                              ["route", "kind"], registry=r)
        self.upstream_errors = Counter("llmfleet_gateway_upstream_errors", "Upstream failures (connect, 5xx, cut).",
                                       ["route", "kind"], registry=r)
        self.in_flight = Gauge("llmfleet_gateway_in_flight", "Requests in flight.", registry=r)
        self.cache = Counter("llmfleet_gateway_cache", "Cache lookups by result (exact, semantic, miss, error).",
                             ["result"], registry=r)
        self.cache_similarity = Histogram("llmfleet_gateway_cache_similarity", "Similarity of semantic-cache hits.",
                                          buckets=(0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0), registry=r)
        self.cache_saved_tokens = Counter("llmfleet_gateway_cache_saved_tokens", "Completion tokens served from cache.",
                                          registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._log = access_log if access_log is not None else sys.stdout.buffer
        self._buf: list[bytes] = []
        self._flusher: asyncio.Task[None] | None = None

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def log(self, record: dict[str, Any]) -> None:
        self._buf.append(orjson.dumps(record) + b"\n")
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0.1)
        self.flush()
        self._flusher = None

    def flush(self) -> None:
        if self._buf:
            data, self._buf = b"".join(self._buf), []
            try:
                self._log.write(data)
                self._log.flush()
            except (OSError, ValueError):
                pass


_stamp: tuple[int, str] = (0, "")


def now_iso() -> str:
    """UTC timestamp for the access log, formatted once per second (it is on every request's path)."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _stamp[1]
