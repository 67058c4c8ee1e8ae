"""The operator's own ``/metrics``: each LLMDeployment's state as the operator last computed it, for alert rules
and dashboards (``render/monitoring.py``), in the shape kube-state-metrics would give a custom resource.

Nothing is computed at scrape time but label tuples: ``record`` keeps the figures of the status each reconcile
produced (a dict write), a collector turns them into families when Prometheus scrapes. Labels: ``namespace``,
``name`` and ``model_name`` (vLLM's own label for the served name), so rules join these series with the engines'
on (namespace, model_name). A standby replica serves ``llmfleet_operator_leader 0`` and no deployment series.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llmfleet.api.conditions import ConditionType
from llmfleet.api.quantity import parse_duration
from llmfleet.api.v1alpha1 import LLMDeploymentSpec
from llmfleet.autoscale.metrics import bucket_at_or_below

log = logging.getLogger(__name__)
POOLS = (("spot", "spot"), ("onDemand", "on-demand"))
CONDITIONS = tuple(ConditionType)


@dataclass(frozen=True, slots=True)
class Figures:
    """What one CR's last reconcile said, as numbers."""

    model_name: str
    ttft_target_s: float
    ttft_bucket: str
    attainment_target: float
    cost_per_hour: float | None
    replicas: tuple[tuple[str, str, int], ...]  # (pool, state, count)
    reclaims: tuple[tuple[str, int], ...]  # (pool, count)
    conditions: tuple[tuple[str, str, float], ...]  # (type, reason, 1 True / 0 otherwise)


def figures(spec: LLMDeploymentSpec, status: Mapping[str, Any], fallback_name: str) -> Figures:
    """A CR's figures from its parsed spec (the reconcile's own) and the status it computed."""
    target = parse_duration(spec.autoscaling.ttft_p95_target)
    replicas = status.get("replicas") or {}
    pools = [(label, replicas.get(key) or {}) for key, label in POOLS]
    return Figures(
        model_name=spec.model.served_name or fallback_name,
        ttft_target_s=target,
        ttft_bucket=bucket_at_or_below(target),
        attainment_target=spec.autoscaling.ttft_attainment_target,
        cost_per_hour=status.get("costPerHour"),
        replicas=tuple(
            (label, state, int(pool.get(state) or 0))
            for label, pool in pools
            for state in ("desired", "ready", "pending")
        ),
        reclaims=tuple((label, int(pool.get("reclaims") or 0)) for label, pool in pools),
        conditions=tuple(
            (str(c.get("type")), str(c.get("reason") or ""), 1.0 if c.get("status") == "True" else 0.0)
            for c in status.get("conditions") or []
            if c.get("type") in CONDITIONS
        ),
    )


class FleetMetrics:
    """The figures per CR (written by reconcile threads, read by the scrape thread: one lock, held for a dict
    operation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_cr: dict[tuple[str, str], Figures] = {}
        self.leader = 0.0
        self.reconciles: dict[str, float] = {"ok": 0.0, "error": 0.0}

    def record(self, namespace: str, name: str, spec: LLMDeploymentSpec, status: Mapping[str, Any]) -> None:
        """Keep what this reconcile computed (only for a spec that parses: an invalid one keeps the last)."""
        f = figures(spec, status, name)
        with self._lock:
            self._by_cr[(namespace, name)] = f

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._by_cr.pop((namespace, name), None)

    def count(self, ok: bool) -> None:
        self.reconciles["ok" if ok else "error"] += 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            items = sorted(self._by_cr.items())
        leader = GaugeMetricFamily(
            "llmfleet_operator_leader", "1 on the replica that holds the lease and acts."
        )
        leader.add_metric([], self.leader)
        yield leader
        runs = CounterMetricFamily("llmfleet_operator_reconciles", "Reconciles by result.", labels=["result"])
        for result, n in self.reconciles.items():
            runs.add_metric([result], n)
        yield runs
        who = ["namespace", "name", "model_name"]
        target = GaugeMetricFamily(
            "llmfleet_deployment_ttft_target_seconds", "spec.autoscaling.ttftP95Target.", labels=who
        )
        bucket = GaugeMetricFamily(
            "llmfleet_deployment_ttft_slo_bucket",
            "1 on the le of vLLM's TTFT bucket at or below the target (join the histogram on it).",
            labels=[*who, "le"],
        )
        budget = GaugeMetricFamily(
            "llmfleet_deployment_ttft_error_budget",
            "1 - spec.autoscaling.ttftAttainmentTarget: the share of first tokens allowed over the target.",
            labels=who,
        )
        cost = GaugeMetricFamily(
            "llmfleet_deployment_cost_per_hour",
            "status.costPerHour (USD) of the replicas wanted.",
            labels=who,
        )
        replicas = GaugeMetricFamily(
            "llmfleet_deployment_replicas",
            "Engine replicas per pool and state (desired, ready, pending).",
            labels=[*who, "pool", "state"],
        )
        reclaims = CounterMetricFamily(
            "llmfleet_deployment_reclaims", "Engine pods drained on a reclaim notice.", labels=[*who, "pool"]
        )
        conditions = GaugeMetricFamily(
            "llmfleet_deployment_condition",
            "1 while the condition is True, else 0, with its reason.",
            labels=[*who, "type", "reason"],
        )
        for (ns, name), f in items:
            key = [ns, name, f.model_name]
            target.add_metric(key, f.ttft_target_s)
            bucket.add_metric([*key, f.ttft_bucket], 1.0)
            budget.add_metric(key, round(1.0 - f.attainment_target, 6))
            if f.cost_per_hour is not None:
                cost.add_metric(key, f.cost_per_hour)
            for pool, state, n in f.replicas:
                replicas.add_metric([*key, pool, state], n)
            for pool, n in f.reclaims:
                reclaims.add_metric([*key, pool], n)
            for ctype, reason, value in f.conditions:
                conditions.add_metric([*key, ctype, reason], value)
        yield from (target, bucket, budget, cost, replicas, reclaims, conditions)

    def registry(self) -> CollectorRegistry:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(self)  # a Collector by protocol (collect)
        return reg

    def serve(self, host: str, port: int) -> bool:
        """``/metrics`` on host:port from a daemon thread (prometheus_client's own server). A port in use is
        logged as an error, not fatal: reconciling matters more than being scraped."""
        try:
            start_http_server(port, addr=host, registry=self.registry())
        except OSError as exc:
            log.error("cannot serve /metrics on %s:%d (%s); the operator runs without it", host, port, exc)
            return False
        log.info("serving /metrics on %s:%d", host, port)
        return True
