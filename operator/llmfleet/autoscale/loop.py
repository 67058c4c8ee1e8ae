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
from typing import Any

from llmfleet.api.sizing import SizingError, size
from llmfleet.api.v1alpha1 import LLMDeploymentSpec
from llmfleet.autoscale.metrics import Condition, Observed
from llmfleet.autoscale.policy import (
    Capacity,
    Decision,
    Observation,
    ScaleState,
    capacity_of,
    decide,
    initial_state,
    replacing,
)
from llmfleet.reconcile.status import RECLAIM, ScaleInput
from llmfleet.sim.perfmodel import EngineProfile

Key = tuple[str, str]


@dataclass
class _Entry:
    state: ScaleState
    metrics: dict[str, Any] | None = None
    last_scale: dict[str, Any] | None = None
    available: Condition | None = None
    capacity: Capacity | None = None
    capacity_for: LLMDeploymentSpec | None = None  # the spec the capacity was computed from


def replacing_now(status: dict[str, Any]) -> int:
    """``policy.replacing`` from the CR's status: while its Reclaim condition is True (replacements pending), the
    pods the last notice drained (``replicas.<pool>.lastReclaim.pods``), against its ``ready`` ("ready/desired")."""
    if not any(c.get("type") == RECLAIM and c.get("status") == "True" for c in status.get("conditions") or []):
        return 0
    pools = (status.get("replicas") or {}).values()
    lost = sum(len((p.get("lastReclaim") or {}).get("pods") or []) for p in pools if isinstance(p, dict))
    try:
        ready, desired = (int(x) for x in str(status.get("ready", "")).split("/"))
    except ValueError:
        return 0
    return replacing(lost, desired, ready)


def replica_capacity(spec: LLMDeploymentSpec) -> Capacity | None:
    """One replica's token capacity from the engine performance model; None when the spec cannot be sized."""
    try:
        return capacity_of(EngineProfile.for_spec(spec, size(spec)))
    except SizingError:
        return None


def metrics_status(obs: Observation) -> dict[str, Any]:
    """status.metrics, rounded so that an unchanged fleet writes an unchanged status."""
    out: dict[str, Any] = {"queueDepth": round(obs.waiting, 1), "running": round(obs.running, 1),
                           "readyReplicas": obs.ready}
    if obs.ttft_p95 is not None:
        out["ttftP95"] = round(obs.ttft_p95, 3)
    if obs.kv_usage is not None:
        out["kvCacheUsage"] = round(obs.kv_usage, 2)
    if obs.prompt_tps is not None:
        out["promptTokensPerSecond"] = round(obs.prompt_tps, 1)
        if obs.prompt_source is not None:
            out["promptTokensSource"] = obs.prompt_source
    if obs.generation_tps is not None:
        out["generationTokensPerSecond"] = round(obs.generation_tps, 1)
    return out


class Autoscaler:
    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)

    def target(self, key: Key) -> int | None:
        e = self._entries.get(key)
        return e.state.target if e else None

    def step(self, key: Key, spec: LLMDeploymentSpec, status: dict[str, Any], now: datetime,
             observed: Observed | None = None) -> ScaleInput | None:
        """The scale input for one reconcile of this CR; None when autoscaling is off."""
        a = spec.autoscaling
        if not a.enabled:
            self.forget(key)
            return None
        e = self._entries.get(key)
        if e is None:
            last = (status.get("replicas") or {}).get("desired") if status.get("observedGeneration") else None
            e = self._entries[key] = _Entry(initial_state(a, spec.replicas, last, now),
                                            last_scale=status.get("lastScale"), metrics=status.get("metrics"))
        obs = observed.observation if observed else None
        if obs is not None:
            obs = replace(obs, replacing=replacing_now(status))
        if obs is not None and e.capacity_for != spec:
            e.capacity, e.capacity_for = replica_capacity(spec), spec
        if observed is not None:
            e.available = observed.available
            if obs is not None:
                e.metrics = metrics_status(obs)
        d: Decision = decide(a, e.state, obs, now, spec.replicas, e.capacity)
        e.state = d.state
        if d.changed:
            e.last_scale = {"time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "from": d.previous, "to": d.target,
                            "reason": d.reason}
        return ScaleInput(target=d.target, metrics=e.metrics, last_scale=e.last_scale, metrics_available=e.available)
