"""The autoscaler's memory in the operator: per CR, the policy's state and the last figures, turned into the
``ScaleInput`` each reconcile plans with.

A metrics tick (``observed`` given) runs the policy on fresh figures; any other reconcile (a child event, a spec
change) only applies what needs no figures: a new ``spec.replicas`` and the min/max bounds. A fresh operator
(a restart, a new leader) starts from the target it last wrote to ``status.replicas.desired``, so a restart
neither resets a scaled-out fleet to its minimum nor repeats a scale-up. Like the HPA, the windows' history is
not persisted: after a restart a window has to fill again before it acts, which only delays a decision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from llmfleet.api.conditions import ConditionResult, ConditionType
from llmfleet.api.v1alpha1 import (
    SCALE_HISTORY,
    AutoscalingStatus,
    LastScale,
    LLMDeploymentSpec,
    MetricsStatus,
    ScaleFigures,
    ScaleRecord,
)
from llmfleet.autoscale.metrics import Observed
from llmfleet.autoscale.policy import Observation, ScaleDecision, ScaleState, decide, initial_state
from llmfleet.fleet.capacity import Capacity, replica_capacity
from llmfleet.fleet.pools import split_replicas
from llmfleet.fleet.reclaim import replacing
from llmfleet.fleet.scale import ScaleInput

CRKey = tuple[str, str]  # (namespace, name) of an LLMDeployment


@dataclass
class _Entry:
    state: ScaleState
    metrics: MetricsStatus | None = None
    last_scale: LastScale | None = None
    available: ConditionResult | None = None
    capacity: Capacity | None = None
    capacity_for: LLMDeploymentSpec | None = None  # the spec the capacity was computed from
    history: tuple[ScaleRecord, ...] = ()  # status.autoscaling.history, oldest first


def replacing_now(status: dict[str, Any]) -> int:
    """``fleet.reclaim.replacing`` from the CR's status: while its Reclaim condition is True (replacements
    pending), the pods the last notice drained (``replicas.<pool>.lastReclaim.pods``), against its ``ready``
    ("ready/desired")."""
    if not any(
        c.get("type") == ConditionType.RECLAIM and c.get("status") == "True"
        for c in status.get("conditions") or []
    ):
        return 0
    pools = (status.get("replicas") or {}).values()
    lost = sum(len((p.get("lastReclaim") or {}).get("pods") or []) for p in pools if isinstance(p, dict))
    try:
        ready, desired = (int(x) for x in str(status.get("ready", "")).split("/"))
    except ValueError:
        return 0
    return replacing(lost, desired, ready)


_M = TypeVar("_M", MetricsStatus, LastScale, AutoscalingStatus)


def _model(cls: type[_M], value: Any) -> _M | None:
    """A status field written before (by this or an earlier operator), or None when absent or unreadable."""
    if not isinstance(value, dict):
        return None
    try:
        return cls.model_validate(value)
    except ValueError:
        return None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def scale_figures(obs: Observation | None) -> ScaleFigures | None:
    """The figures a decision was taken on, rounded as status.metrics is."""
    if obs is None:
        return None
    return ScaleFigures(
        ready_replicas=obs.ready,
        queue_depth=round(obs.waiting, 1),
        ttft_p95=_rounded(obs.ttft_p95, 3),
        ttft_late_share=_rounded(obs.ttft_miss_share, 4),
        kv_cache_usage=_rounded(obs.kv_usage, 2),
        prompt_tokens_per_second=_rounded(obs.prompt_tps, 1),
        generation_tokens_per_second=_rounded(obs.generation_tps, 1),
    )


def metrics_status(obs: Observation) -> MetricsStatus:
    """status.metrics, rounded so that an unchanged fleet writes an unchanged status."""
    return MetricsStatus(
        queue_depth=round(obs.waiting, 1),
        running=round(obs.running, 1),
        ready_replicas=obs.ready,
        ttft_p95=_rounded(obs.ttft_p95, 3),
        kv_cache_usage=_rounded(obs.kv_usage, 2),
        prompt_tokens_per_second=_rounded(obs.prompt_tps, 1),
        prompt_tokens_source=obs.prompt_source if obs.prompt_tps is not None else None,
        generation_tokens_per_second=_rounded(obs.generation_tps, 1),
    )


class Autoscaler:
    def __init__(self) -> None:
        self._entries: dict[CRKey, _Entry] = {}

    def forget(self, key: CRKey) -> None:
        self._entries.pop(key, None)

    def unwritten(self, key: CRKey, record: ScaleRecord) -> None:
        """The reconcile that took ``record`` failed to write it: the history says so (the target stays, and the
        next reconcile writes it again)."""
        e = self._entries.get(key)
        if e is not None:
            e.history = tuple(
                r.model_copy(update={"written": False}) if r is record else r for r in e.history
            )

    def target(self, key: CRKey) -> int | None:
        e = self._entries.get(key)
        return e.state.target if e else None

    def step(
        self,
        key: CRKey,
        spec: LLMDeploymentSpec,
        status: dict[str, Any],
        now: datetime,
        observed: Observed | None = None,
    ) -> ScaleInput | None:
        """The scale input for one reconcile of this CR; None when autoscaling is off."""
        a = spec.autoscaling
        if not a.enabled:
            self.forget(key)
            return None
        e = self._entries.get(key)
        if e is None:
            last = (status.get("replicas") or {}).get("desired") if status.get("observedGeneration") else None
            kept = _model(AutoscalingStatus, status.get("autoscaling"))
            e = self._entries[key] = _Entry(
                initial_state(spec, last, now),
                last_scale=_model(LastScale, status.get("lastScale")),
                metrics=_model(MetricsStatus, status.get("metrics")),
                history=tuple(kept.history) if kept else (),
            )
        obs = observed.observation if observed else None
        if obs is not None:
            obs = replace(obs, replacing=replacing_now(status))
        if obs is not None and e.capacity_for != spec:
            e.capacity, e.capacity_for = replica_capacity(spec), spec
        if observed is not None:
            e.available = observed.available
            if obs is not None:
                e.metrics = metrics_status(obs)
        d: ScaleDecision = decide(a, e.state, obs, now, spec.replicas, e.capacity)
        e.state = d.state
        scaled = None
        if d.changed:
            when = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            e.last_scale = LastScale(time=when, from_=d.previous, to=d.target, reason=d.reason)
            pools = split_replicas(spec, d.target)
            scaled = ScaleRecord(
                time=when,
                from_=d.previous,
                to=d.target,
                spot=pools.spot,
                on_demand=pools.on_demand,
                reason=d.cause,
                message=d.reason,
                figures=scale_figures(obs),
                written=True,  # status is written only after the children: the plan that carries it applied them
            )
            e.history = (*e.history, scaled)[-SCALE_HISTORY:]
        return ScaleInput(
            target=d.target,
            metrics=e.metrics,
            last_scale=e.last_scale,
            metrics_available=e.available,
            history=e.history,
            scaled=scaled,
        )
