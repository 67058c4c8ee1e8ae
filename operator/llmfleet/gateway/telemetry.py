"""Gateway telemetry: Prometheus metrics as the client sees them, and JSON access logs without prompt text.

Metrics are plain numbers on the hot path (the gateway is one event loop: no locks) and become Prometheus
families only when `/metrics` is scraped, through a collector on the registry: prometheus_client's own
metric objects cost ~1 µs per counter increment and ~2 µs per histogram observation (a lock and a Python
loop over the buckets), seven of them per request. Label children are kept by their label values, so the
hot path does one dict lookup per metric; the access log is written through a buffer flushed every 100 ms
rather than with the logging module.
"""

from __future__ import annotations

import asyncio
import bisect
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from llmfleet.gateway.limits import FALLBACK_REASONS

# Label values that exist from start-up at 0 (Prometheus' "initialise your metrics"): a ratio or a rate over
# them is 0, not absent, until the first event (the chart's alerts and dashboard rely on it).
CACHE_RESULTS = ("exact", "semantic", "miss", "bypass", "corrupt", "error")
UPSTREAM_ERROR_KINDS = ("refused", "connect", "cut", "error_event")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class _Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += (
            1  # bucket i holds bounds[i-1] < v <= bounds[i]
        )
        self.sum += amount


class _Family:
    """A metric with its label children; an unlabelled one is its own single child."""

    def __init__(
        self, kind: str, name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = ()
    ) -> None:
        self.kind, self.name, self.doc, self.label_names, self.buckets = kind, name, doc, labels, buckets
        self.children: dict[tuple[str, ...], Any] = {}
        self._single = None if labels else self.labels()

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _Buckets(self.buckets) if self.kind == "histogram" else _Value()
        return child

    def inc(self, amount: float = 1.0) -> None:
        self._single.inc(amount)  # type: ignore[union-attr]

    def dec(self, amount: float = 1.0) -> None:
        self._single.dec(amount)  # type: ignore[union-attr]

    def observe(self, amount: float) -> None:
        self._single.observe(amount)  # type: ignore[union-attr]

    def set(self, value: float) -> None:
        self._single.set(value)  # type: ignore[union-attr]

    def family(self) -> Metric:
        names = list(self.label_names)
        if self.kind == "counter":
            fam: Metric = CounterMetricFamily(self.name, self.doc, labels=names)
            for values, c in self.children.items():
                fam.add_metric(list(values), c.value)  # type: ignore[attr-defined]
        elif self.kind == "gauge":
            fam = GaugeMetricFamily(self.name, self.doc, labels=names)
            for values, c in self.children.items():
                fam.add_metric(list(values), c.value)
        else:
            fam = HistogramMetricFamily(self.name, self.doc, labels=names)
            for values, h in self.children.items():
                total, cumulative = 0, []
                for bound, n in zip((*(str(b) for b in self.buckets), "+Inf"), h.counts, strict=True):
                    total += n
                    cumulative.append((bound, total))
                fam.add_metric(list(values), cumulative, h.sum)
        return fam


class _RouteMetrics:
    """The per-route children a finished request updates, found with one lookup instead of four."""

    __slots__ = ("completion_tokens", "duration", "prompt_tokens", "ttft")

    def __init__(self, tel: Telemetry, route: str) -> None:
        self.duration, self.ttft = tel.duration.labels(route), tel.ttft.labels(route)
        self.prompt_tokens = tel.tokens.labels(route, "prompt")
        self.completion_tokens = tel.tokens.labels(route, "completion")


class _Collector:
    def __init__(self, families: list[_Family], requests: _Family) -> None:
        self.families = families
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        for f in self.families:
            yield f.family()
        # One series that exists from start-up (labelled children appear only once used), summed at scrape
        # time: the autoscaler reads its rate to wake a fleet scaled to zero (requests answered 503 count too).
        total = CounterMetricFamily(
            "llmfleet_gateway_received_requests", "Requests answered, any route, status and key."
        )
        total.add_metric([], sum(c.value for c in self.requests.children.values()))
        yield total


class Telemetry:
    def __init__(self, access_log: IO[bytes] | None = None) -> None:
        self.requests = _Family(
            "counter",
            "llmfleet_gateway_requests",
            "Requests by route, status and API key (hash).",
            ("route", "status", "key"),
        )
        self.ttft = _Family(
            "histogram",
            "llmfleet_gateway_ttft_seconds",
            "Time to first byte of the response as the client sees it.",
            ("route",),
            LATENCY_BUCKETS,
        )
        self.itl = _Family(
            "histogram",
            "llmfleet_gateway_inter_token_seconds",
            "Mean inter-chunk latency of a stream.",
            ("route",),
            ITL_BUCKETS,
        )
        self.duration = _Family(
            "histogram",
            "llmfleet_gateway_request_duration_seconds",
            "Whole request duration.",
            ("route",),
            LATENCY_BUCKETS,
        )
        self.tokens = _Family(
            "counter",
            "llmfleet_gateway_tokens",
            "Tokens by route and kind (prompt, completion).",
            ("route", "kind"),
        )
        self.upstream_errors = _Family(
            "counter",
            "llmfleet_gateway_upstream_errors",
            "Upstream failures (connect, 5xx, cut).",
            ("route", "kind"),
        )
        self.in_flight = _Family("gauge", "llmfleet_gateway_in_flight", "Requests in flight.")
        self.cache = _Family(
            "counter",
            "llmfleet_gateway_cache",
            "Cache lookups by result (exact, semantic, miss, error).",
            ("result",),
        )
        self.cache_similarity = _Family(
            "histogram",
            "llmfleet_gateway_cache_similarity",
            "Similarity of semantic-cache hits.",
            buckets=(0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0),
        )
        self.cache_checks = _Family(
            "counter",
            "llmfleet_gateway_cache_semantic_checks",
            "Semantic candidates checked against the engine's answer (maxFalseHitRate), by outcome (same, "
            "different).",
            ("outcome",),
        )
        self.cache_threshold = _Family(
            "gauge",
            "llmfleet_gateway_cache_semantic_threshold",
            "The similarity semantic hits are served from: learned under maxFalseHitRate (NaN: none proven "
            "yet, nothing served), else the configured threshold.",
        )
        self.cache_saved_tokens = _Family(
            "counter", "llmfleet_gateway_cache_saved_tokens", "Completion tokens served from cache."
        )
        self.models = _Family(
            "counter",
            "llmfleet_gateway_model_requests",
            "Requests of a model route (spec.routing) by the member that served and why it was chosen "
            "(explicit, rule, auto, default, sensitive).",
            ("model", "why"),
        )
        self.limit_fallbacks = _Family(
            "counter",
            "llmfleet_gateway_limit_fallbacks",
            "Rate-limit decisions this replica took on its own because the shared store (Redis) did not "
            "answer (timeout, error) or was not asked (open: the breaker is open). While they happen, "
            "every replica admits a key's whole limit.",
            ("reason",),
        )
        for result in CACHE_RESULTS:
            self.cache.labels(result)
        for outcome in ("same", "different"):
            self.cache_checks.labels(outcome)
        for reason in FALLBACK_REASONS:
            self.limit_fallbacks.labels(reason)
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels("self-hosted", kind)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_start_time_seconds: the crash-loop alert reads it
        self.registry.register(
            _Collector(
                [
                    self.requests,
                    self.ttft,
                    self.itl,
                    self.duration,
                    self.tokens,
                    self.upstream_errors,
                    self.in_flight,
                    self.cache,
                    self.cache_similarity,
                    self.cache_checks,
                    self.cache_threshold,
                    self.cache_saved_tokens,
                    self.models,
                    self.limit_fallbacks,
                ],
                self.requests,
            )
        )
        self._routes: dict[str, _RouteMetrics] = {}
        self._log = access_log if access_log is not None else sys.stdout.buffer
        self._buf: list[bytes] = []
        self._flusher: asyncio.Task[None] | None = None

    def route(self, route: str) -> _RouteMetrics:
        r = self._routes.get(route)
        if r is None:
            r = self._routes[route] = _RouteMetrics(self, route)
        return r

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
