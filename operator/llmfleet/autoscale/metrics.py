"""Gather for the autoscaler: one deployment's fleet figures from Prometheus' HTTP API (``/api/v1/query``).

Series are selected by ``namespace`` and vLLM's own ``model_name`` label (the served name), which any
Prometheus scraping the engine pods has (kube-prometheus' PodMonitor and our dev scrape config both add
``namespace``). Every failure becomes a ``MetricsAvailable=False`` condition naming the cause; the policy
then holds the target. Plain httpx rather than prometheus-api-client: ten instant queries per tick do not
need a client that depends on matplotlib (a fork of it exists only to make that optional).
"""

from __future__ import annotations

import asyncio
import logging
import math
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


def queries(namespace: str, model: str, gateway_service: str, ttft_target_s: float = 0.5) -> dict[str, str]:
    """The PromQL the autoscaler reads, by figure (the engine series are vLLM 0.33's own)."""
    le = bucket_at_or_below(ttft_target_s)
    sel = f'namespace="{namespace}",model_name="{model}"'
    gw = f'namespace="{namespace}",service="{gateway_service}"'
    return {
        # The gateway's requests (the `service` label as a ServiceMonitor sets it): the only figure left when
        # the fleet is scaled to zero, so the wake-up signal; scale-to-zero waits until this series exists.
        "arrivals": f"sum(rate(llmfleet_gateway_received_requests_total{{{gw}}}[1m]))",
        "waiting": f"sum(vllm:num_requests_waiting{{{sel}}})",
        "running": f"sum(vllm:num_requests_running{{{sel}}})",
        "ready": f"count(vllm:num_requests_waiting{{{sel}}})",
        "kv": f"avg(vllm:kv_cache_usage_perc{{{sel}}})",
        "ttft": f"histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[1m])))",
        "prompt_tps": f"sum(rate(vllm:prompt_tokens_total{{{sel}}}[1m]))",
        # The prefill work the GPUs did (vLLM >= 0.33 splits prompt tokens by source): prefix-cache hits are no
        # work, so a fleet with reused prefixes is not sized for prompt tokens it never computes.
        "prompt_compute_tps": f'sum(rate(vllm:prompt_tokens_by_source_total{{{sel},source="local_compute"}}[1m]))',
        "generation_tps": f"sum(rate(vllm:generation_tokens_total{{{sel}}}[1m]))",
        # Bursts shorter than the minute: the busiest 30 s of the last minute (the finest rate a 15 s scrape
        # gives), so a fleet is sized for the burst it just saw, not for the minute's mean.
        # The share of first tokens within the TTFT target, from the histogram bucket at or below it.
        "ttft_within": f'sum(rate(vllm:time_to_first_token_seconds_bucket{{{sel},le="{le}"}}[1m]))',
        "ttft_count": f"sum(rate(vllm:time_to_first_token_seconds_count{{{sel}}}[1m]))",
        # The same share over the SLO window: the error budget spent (NaN, so None, before any first token).
        "ttft_miss_window": (
            f'1 - sum(increase(vllm:time_to_first_token_seconds_bucket{{{sel},le="{le}"}}[{SLO_WINDOW}]))'
            f" / sum(increase(vllm:time_to_first_token_seconds_count{{{sel}}}[{SLO_WINDOW}]))"
        ),
        "prompt_peak_tps": f"max_over_time(sum(rate(vllm:prompt_tokens_total{{{sel}}}[{PEAK_WINDOW}]))[1m:15s])",
        "prompt_compute_peak_tps": f'max_over_time(sum(rate(vllm:prompt_tokens_by_source_total{{{sel},source="local_compute"}}[{PEAK_WINDOW}]))[1m:15s])',
    }


def _scalar(body: dict[str, object]) -> float | None:
    """The value of a one-element instant vector; None for no series or NaN (no requests in the window)."""
    data = body.get("data")
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list) or not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) or math.isinf(value) else value


class PrometheusSource:
    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self.client = client or httpx.AsyncClient(timeout=QUERY_TIMEOUT_SECONDS)

    async def _query(self, url: str, promql: str) -> float | None:
        r = await self.client.get(f"{url.rstrip('/')}/api/v1/query", params={"query": promql})
        r.raise_for_status()
        body = r.json()
        if body.get("status") != "success":
            raise ValueError(body.get("error") or "query failed")
        return _scalar(body)

    async def observe(
        self,
        url: str,
        namespace: str,
        model: str,
        gateway_service: str,
        expect_engines: bool,
        ttft_target_s: float = 0.5,
    ) -> Observed:
        q = queries(namespace, model, gateway_service, ttft_target_s)
        try:
            values = await asyncio.gather(*(self._query(url, promql) for promql in q.values()))
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
        got = dict(zip(q, values, strict=True))
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
