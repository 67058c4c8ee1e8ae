"""Gather for the autoscaler: one deployment's fleet figures from Prometheus' HTTP API (``/api/v1/query``).

Series are grouped by ``namespace`` and vLLM's own ``model_name`` label (the served name), which any
Prometheus scraping the engine pods has (kube-prometheus' PodMonitor and our dev scrape config both add
``namespace``), and each CR picks its own group: one set of queries serves every CR (at 120 CRs, per-CR
queries were 1,200 requests per 15 s tick; the operator's HTTP pool timed out on them and it burned a core). Every failure becomes a ``MetricsAvailable=False`` condition naming the cause; the policy
then holds the target. Plain httpx rather than prometheus-api-client: eleven instant queries per interval do not
need a client that depends on matplotlib (a fork of it exists only to make that optional).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from llmfleet.api.conditions import ConditionResult, Reason
from llmfleet.autoscale.policy import PROMPT_ALL, PROMPT_COMPUTED, SLO_WINDOW, Observation
from llmfleet.fleet.vllm import TTFT_BUCKETS

QUERY_TIMEOUT_SECONDS = 5.0
PEAK_WINDOW = "30s"  # the rate window of the burst figure: two 15 s scrapes
log = logging.getLogger("llmfleet.autoscale")


def failure_cause(exc: Exception) -> str:
    """Why a query failed, in words that stay the same while the cause does: the condition's message is part of
    the status, and a message that changed with each attempt's exception (a refused connection on one tick, a
    full connection pool on the next) would patch the status of every CR on every tick of an idle operator."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return "is not reachable"
    if isinstance(exc, httpx.TimeoutException):
        return f"did not answer within {QUERY_TIMEOUT_SECONDS:g} s"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"answered HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return "broke off the connection"
    return "did not answer with a Prometheus query result"


@dataclass(frozen=True)
class Observed:
    observation: Observation | None  # None: nothing to decide on
    available: ConditionResult


class MetricsSource(Protocol):
    async def observe(
        self,
        url: str,
        namespace: str,
        model: str,
        gateway_service: str,
        expect_engines: bool,
        ttft_target_s: float = 0.5,
    ) -> Observed: ...


def bucket_at_or_below(target_s: float) -> str:
    """The ``le`` label of vLLM's TTFT bucket at or below a target (the smallest when the target is below all):
    first tokens counted within it surely met the target, so the share read is never flattering."""
    bounds = [b for b in TTFT_BUCKETS if b <= target_s + 1e-12] or [TTFT_BUCKETS[0]]
    return repr(float(bounds[-1]))


FLEET = "namespace, model_name"  # how every engine figure is grouped: one series per deployment's fleet
GATEWAY = "namespace, service"


def queries(ttft_target_s: float = 0.5) -> dict[str, str]:
    """The PromQL the autoscaler reads, by figure (the engine series are vLLM 0.33's own), each grouped by
    (namespace, model_name) so that one query answers for every fleet: a tick of 120 CRs costs the same
    eleven queries as a tick of one (``PrometheusSource`` shares each answer for ``max_age_s``)."""
    le = bucket_at_or_below(ttft_target_s)
    by = f"sum by ({FLEET})"
    return {
        # The gateway's requests (the `service` label as a ServiceMonitor sets it): the only figure left when
        # the fleet is scaled to zero, so the wake-up signal; scale-to-zero waits until this series exists.
        "arrivals": f"sum by ({GATEWAY}) (rate(llmfleet_gateway_received_requests_total[1m]))",
        "waiting": f"{by} (vllm:num_requests_waiting)",
        "running": f"{by} (vllm:num_requests_running)",
        "ready": f"count by ({FLEET}) (vllm:num_requests_waiting)",
        "kv": f"avg by ({FLEET}) (vllm:kv_cache_usage_perc)",
        "ttft": f"histogram_quantile(0.95, sum by ({FLEET}, le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))",
        "prompt_tps": f"{by} (rate(vllm:prompt_tokens_total[1m]))",
        # The prefill work the GPUs did (vLLM >= 0.33 splits prompt tokens by source): prefix-cache hits are no
        # work, so a fleet with reused prefixes is not sized for prompt tokens it never computes.
        "prompt_compute_tps": f'{by} (rate(vllm:prompt_tokens_by_source_total{{source="local_compute"}}[1m]))',
        "generation_tps": f"{by} (rate(vllm:generation_tokens_total[1m]))",
        # The share of first tokens within the TTFT target, from the histogram bucket at or below it.
        "ttft_within": f'{by} (rate(vllm:time_to_first_token_seconds_bucket{{le="{le}"}}[1m]))',
        "ttft_count": f"{by} (rate(vllm:time_to_first_token_seconds_count[1m]))",
        # The same share over the SLO window: the error budget spent (NaN, so None, before any first token).
        "ttft_miss_window": (
            f'1 - {by} (increase(vllm:time_to_first_token_seconds_bucket{{le="{le}"}}[{SLO_WINDOW}]))'
            f" / {by} (increase(vllm:time_to_first_token_seconds_count[{SLO_WINDOW}]))"
        ),
        # Bursts shorter than the minute: the busiest 30 s of the last minute (the finest rate a 15 s scrape
        # gives), so a fleet is sized for the burst it just saw, not for the minute's mean.
        "prompt_peak_tps": f"max_over_time({by} (rate(vllm:prompt_tokens_total[{PEAK_WINDOW}]))[1m:15s])",
        "prompt_compute_peak_tps": f'max_over_time({by} (rate(vllm:prompt_tokens_by_source_total{{source="local_compute"}}[{PEAK_WINDOW}]))[1m:15s])',
    }


Series = dict[tuple[str, str], float]  # (namespace, model_name or service) → value


def _vector(body: dict[str, object], key: tuple[str, str]) -> Series:
    """An instant vector as {(label, label): value}, NaN and infinities left out (no requests in the window)."""
    data = body.get("data")
    result = data.get("result") if isinstance(data, dict) else None
    out: Series = {}
    for item in result if isinstance(result, list) else []:
        metric = item.get("metric") or {}
        value = float(item["value"][1])
        if not (math.isnan(value) or math.isinf(value)):
            out[(metric.get(key[0], ""), metric.get(key[1], ""))] = value
    return out


class PrometheusSource:
    """Reads the fleet figures; concurrent ticks of many CRs share one fetch of the grouped queries, and an
    answer (or a failure) is reused for ``max_age_s``: Prometheus sees eleven queries per interval, whatever
    the number of CRs, and an unreachable one is not retried by every CR's tick."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        max_age_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client or httpx.AsyncClient(timeout=QUERY_TIMEOUT_SECONDS)
        self.max_age_s, self.clock = max_age_s, clock
        self._answers: dict[tuple[str, str], tuple[float, dict[str, Series] | Exception]] = {}
        self._fetching: dict[tuple[str, str], asyncio.Future[dict[str, Series]]] = {}

    async def _query(self, url: str, promql: str, key: tuple[str, str]) -> Series:
        r = await self.client.get(f"{url.rstrip('/')}/api/v1/query", params={"query": promql})
        r.raise_for_status()
        body = r.json()
        if body.get("status") != "success":
            raise ValueError(body.get("error") or "query failed")
        return _vector(body, key)

    async def _fetch(self, url: str, ttft_target_s: float) -> dict[str, Series]:
        q = queries(ttft_target_s)
        keys = {name: ("namespace", "service" if name == "arrivals" else "model_name") for name in q}
        values = await asyncio.gather(*(self._query(url, promql, keys[name]) for name, promql in q.items()))
        return dict(zip(q, values, strict=True))

    async def fleets(self, url: str, ttft_target_s: float) -> dict[str, Series]:
        """Every fleet's figures at ``url``: fetched once for all callers waiting at the same time, then reused
        for ``max_age_s`` (failures too)."""
        key = (url, bucket_at_or_below(ttft_target_s))
        now = self.clock()
        answer = self._answers.get(key)
        if answer is not None and now - answer[0] < self.max_age_s:
            if isinstance(answer[1], Exception):
                raise answer[1]
            return answer[1]
        loop = asyncio.get_running_loop()
        pending = self._fetching.get(key)
        if pending is None or pending.get_loop() is not loop:
            pending = self._fetching[key] = loop.create_task(self._fetch(url, ttft_target_s))
        try:
            got = await asyncio.shield(pending)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._answers[key] = (self.clock(), exc)
            raise
        finally:
            if pending.done() and self._fetching.get(key) is pending:
                del self._fetching[key]
        self._answers[key] = (self.clock(), got)
        return got

    async def observe(
        self,
        url: str,
        namespace: str,
        model: str,
        gateway_service: str,
        expect_engines: bool,
        ttft_target_s: float = 0.5,
    ) -> Observed:
        try:
            fleets = await self.fleets(url, ttft_target_s)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("querying %s failed: %s: %s", url, type(exc).__name__, exc)
            return Observed(
                None,
                ConditionResult(
                    "False",
                    Reason.PROMETHEUS_UNREACHABLE,
                    f"Prometheus at {url} {failure_cause(exc)}; holding the replica count.",
                ),
            )
        got = {
            name: series.get((namespace, gateway_service if name == "arrivals" else model))
            for name, series in fleets.items()
        }
        ready = int(got["ready"] or 0)
        if ready == 0 and expect_engines:
            return Observed(
                None,
                ConditionResult(
                    "False",
                    Reason.NO_ENGINE_SERIES,
                    f"{url} has no vllm:num_requests_waiting series with namespace={namespace!r} and "
                    f"model_name={model!r} (engines starting, or not scraped); holding the replica count.",
                ),
            )
        computed = got["prompt_compute_tps"] is not None
        obs = Observation(
            waiting=got["waiting"] or 0.0,
            running=got["running"] or 0.0,
            ready=ready,
            ttft_p95=got["ttft"],
            kv_usage=got["kv"],
            prompt_tps=got["prompt_compute_tps"] if computed else got["prompt_tps"],
            prompt_source=PROMPT_COMPUTED if computed else PROMPT_ALL,
            generation_tps=got["generation_tps"],
            prompt_tps_peak=got["prompt_compute_peak_tps"] if computed else got["prompt_peak_tps"],
            ttft_miss_share=(
                max(0.0, 1.0 - (got["ttft_within"] or 0.0) / got["ttft_count"]) if got["ttft_count"] else None
            ),
            ttft_miss_share_window=(
                None if got["ttft_miss_window"] is None else min(1.0, max(0.0, got["ttft_miss_window"]))
            ),
            arrivals=got["arrivals"],
        )
        return Observed(
            obs,
            ConditionResult(
                "True",
                Reason.METRICS_READ,
                f"Queue depth, TTFT p95, token rates and KV-cache usage read from {url}.",
            ),
        )
