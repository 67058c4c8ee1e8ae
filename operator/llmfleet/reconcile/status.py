"""Status as a pure function of the CR, its sizing, the planned pool counts and the observed children.

Conditions follow metav1.Condition; a condition's lastTransitionTime only moves when its status does,
so an unchanged world computes an identical status and the operator writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llmfleet.api.sizing import Sizing
from llmfleet.api.v1alpha1 import LLMDeployment
from llmfleet.kube.port import Obj
from llmfleet.reconcile.observe import Snapshot
from llmfleet.reconcile.reclaim import Drain
from llmfleet.render import PoolCounts
from llmfleet.render.common import POOL_LABEL
from llmfleet.render.engine import engine_pod_selector
from llmfleet.render.gateway import gateway_endpoint_for

# The Reclaim condition: present once a node notice has been acted on.
RECLAIM = "Reclaim"
REPLACEMENT_PENDING = "ReplacementPending"
REPLACED = "Replaced"


def _reclaims(previous: dict[str, Any], drained: list[Drain], now: datetime) -> dict[str, dict[str, Any]]:
    """Per pool (status key): the reclaim count and the latest reclaim, carried over and bumped."""
    out = {}
    for pool, key in (("spot", "spot"), ("on-demand", "onDemand")):
        prev = ((previous.get("replicas") or {}).get(key) or {})
        mine = [d for d in drained if d.pool == pool]
        fields: dict[str, Any] = {}
        if prev.get("reclaims") or mine:
            fields["reclaims"] = int(prev.get("reclaims") or 0) + len(mine)
        if mine:
            fields["lastReclaim"] = {"node": mine[0].node, "signal": mine[0].signal,
                                     "pods": [d.pod["metadata"]["name"] for d in mine], "time": _ts(now)}
        elif prev.get("lastReclaim"):
            fields["lastReclaim"] = prev["lastReclaim"]
        out[key] = fields
    return out


@dataclass(frozen=True)
class ScaleInput:
    """What the autoscaler hands one reconcile: the replica target and the figures it decided on."""

    target: int
    metrics: dict[str, Any] | None = None  # status.metrics
    last_scale: dict[str, Any] | None = None  # status.lastScale
    metrics_available: tuple[str, str, str] | None = None  # MetricsAvailable: (status, reason, message)


def _ts(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(previous: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
              generation: int | None, now: datetime) -> dict[str, Any]:
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else _ts(now)
    out: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message,
                           "lastTransitionTime": since}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def _deployment_ready(snapshot: Snapshot, name: str) -> tuple[int, bool]:
    """(ready replicas, rollout finished) of a child Deployment."""
    live = snapshot.children.get(("Deployment", name))
    if live is None:
        return 0, False
    st = live.get("status") or {}
    spec_replicas = (live.get("spec") or {}).get("replicas", 1)
    done = (
        st.get("observedGeneration", 0) >= live["metadata"].get("generation", 0)
        and st.get("updatedReplicas", 0) >= spec_replicas
        and st.get("replicas", 0) <= spec_replicas
        and st.get("availableReplicas", 0) >= spec_replicas
    )
    return int(st.get("readyReplicas", 0) or 0), done


def _pod_pending(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase", "Pending") == "Pending"


def _spot_fallback(obj: LLMDeployment, counts: PoolCounts, late_spot: int) -> tuple[str, str, str]:
    sp = obj.spec.pools.spot
    if not sp.enabled:
        return "False", "SpotDisabled", "pools.spot is disabled; every replica runs on-demand."
    if late_spot == 0:
        return "False", "SpotAvailable", "Spot replicas start within pools.spot.pendingTimeout."
    late = f"{late_spot} spot replica{'s' if late_spot != 1 else ''} not ready after {sp.pending_timeout}"
    if not sp.fallback_to_on_demand:
        return "False", "FallbackDisabled", f"{late}; pools.spot.fallbackToOnDemand is off, so they wait for spot capacity."
    if counts.fallback < late_spot:
        return ("True", "OnDemandAtMax", f"{late}; {counts.fallback} on-demand stand-in(s) run, "
                f"pools.onDemand.maxReplicas ({obj.spec.pools.on_demand.max_replicas}) allows no more.")
    return "True", "SpotCapacityUnavailable", (f"{late}; {counts.fallback} on-demand replica(s) stand in until "
                                               "spot capacity returns.")


def compute_status(obj: LLMDeployment, sizing: Sizing, counts: PoolCounts, snapshot: Snapshot,
                   previous: dict[str, Any], now: datetime, scale: ScaleInput | None = None,
                   late_spot: int = 0, drained: list[Drain] | None = None) -> dict[str, Any]:
    name = obj.metadata.name
    gen = obj.metadata.generation
    prev_conditions = previous.get("conditions") or []
    od_ready, od_done = _deployment_ready(snapshot, f"{name}-engine-ondemand")
    spot_ready, spot_done = _deployment_ready(snapshot, f"{name}-engine-spot")
    if not obj.spec.pools.spot.enabled:
        spot_ready, spot_done = 0, True
    gw_ready, gw_done = _deployment_ready(snapshot, f"{name}-gateway")
    cache_needed = obj.spec.cache.any_enabled and obj.spec.cache.redis.mode == "managed"
    cache_ready, cache_done = _deployment_ready(snapshot, f"{name}-cache") if cache_needed else (1, True)

    live_pods = [p for p in snapshot.engine_pods if not p["metadata"].get("deletionTimestamp")]
    pending = {pool: sum(1 for p in live_pods if p["metadata"].get("labels", {}).get(POOL_LABEL) == pool and _pod_pending(p))
               for pool in ("spot", "on-demand")}
    running = {pool: sum(1 for p in live_pods if p["metadata"].get("labels", {}).get(POOL_LABEL) == pool
                         and not _pod_pending(p)) for pool in ("spot", "on-demand")}
    od_ready, spot_ready = min(od_ready, counts.on_demand), min(spot_ready, counts.spot)
    desired = counts.target
    ready = min(od_ready + spot_ready, desired)

    engines_ok = ready >= desired
    serving = engines_ok and gw_ready >= 1 and cache_ready >= 1
    if desired == 0:
        ready_c = ("True", "ScaledToZero", "No engine replicas are wanted; requests wait for a scale-up.")
    elif serving:
        ready_c = ("True", "AllReplicasReady", f"{ready}/{desired} engine replicas ready; gateway serving.")
    else:
        parts = [f"{ready}/{desired} engine replicas ready"]
        if pending["spot"] or pending["on-demand"]:
            parts.append(f"{pending['spot']} spot and {pending['on-demand']} on-demand pending")
        if gw_ready < 1:
            parts.append("gateway not ready")
        if cache_ready < 1:
            parts.append("cache not ready")
        ready_c = ("False", "ReplicasNotReady", "; ".join(parts) + ".")
    rolling = not (od_done and spot_done and gw_done and cache_done)
    progressing_c = (("True", "RollingOut", "Children are being created or updated.") if rolling
                     else ("False", "Stable", "Every child matches the spec."))

    cost = running["on-demand"] * sizing.on_demand_per_replica_hour + running["spot"] * sizing.spot_per_replica_hour
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": [
            condition(prev_conditions, "Ready", *ready_c, gen, now),
            condition(prev_conditions, "Progressing", *progressing_c, gen, now),
            condition(prev_conditions, "Degraded", "False", "AsExpected", "The spec is valid and applied.", gen, now),
            condition(prev_conditions, "SpotFallback", *_spot_fallback(obj, counts, late_spot), gen, now),
        ],
        "tensorParallelSize": sizing.tensor_parallel_size,
        "replicas": {
            "desired": desired,
            "ready": ready,
            "spot": {"desired": counts.spot, "ready": spot_ready, "pending": pending["spot"]},
            "onDemand": {"desired": counts.on_demand, "ready": od_ready, "pending": pending["on-demand"]},
        },
        "ready": f"{ready}/{desired}",
        "spot": f"{spot_ready}/{counts.spot}",
        "selector": engine_pod_selector(name),
        "endpoint": gateway_endpoint_for(name, obj.metadata.namespace),
        "costPerHour": round(cost, 2),
    }
    reclaims = _reclaims(previous, drained or [], now)
    status["replicas"]["spot"].update(reclaims["spot"])
    status["replicas"]["onDemand"].update(reclaims["onDemand"])
    if drained or any("lastReclaim" in r for r in reclaims.values()):
        # Pending from the drain until every replica is ready again; then Replaced, and it stays so (a later
        # scale-up or rollout is not a reclaim) until the next notice. A reclaimed pod still terminating (draining
        # its streams, or stuck on a node that is gone until pod GC removes it) does not hold it: its replacement
        # serves.
        reclaimed = {pod for r in reclaims.values() for pod in (r.get("lastReclaim") or {}).get("pods", [])}
        terminating = sum(1 for p in snapshot.engine_pods
                          if p["metadata"].get("deletionTimestamp") and p["metadata"]["name"] in reclaimed)
        was_pending = any(c.get("type") == RECLAIM and c.get("status") == "True" for c in prev_conditions)
        if drained or (was_pending and not engines_ok):
            n = len(drained or []) + terminating
            reclaim_c = ("True", REPLACEMENT_PENDING,
                         f"{n} engine pod(s) draining after a reclaim notice; {ready}/{desired} replicas ready while "
                         "replacements start.")
        else:
            reclaim_c = ("False", REPLACED, f"Every reclaimed replica is replaced: {ready}/{desired} ready.")
        status["conditions"].append(condition(prev_conditions, RECLAIM, *reclaim_c, gen, now))
    if scale is not None and scale.metrics_available is not None:
        status["conditions"].append(condition(prev_conditions, "MetricsAvailable", *scale.metrics_available, gen, now))
    elif not obj.spec.autoscaling.enabled:
        status["conditions"].append(condition(prev_conditions, "MetricsAvailable", "False", "AutoscalingDisabled",
                                              "spec.autoscaling.enabled is false; spec.replicas sets the size.", gen, now))
    else:
        status["conditions"].extend(c for c in prev_conditions if c.get("type") == "MetricsAvailable")
    for key, value in (("metrics", scale.metrics if scale else None), ("lastScale", scale.last_scale if scale else None)):
        if value is not None:
            status[key] = value
        elif key in previous:
            status[key] = previous[key]
    return status


def degraded_status(previous: dict[str, Any], generation: int | None, now: datetime, reason: str,
                    message: str) -> dict[str, Any]:
    """Status for a spec the operator cannot act on: Degraded names the field; the rest is kept."""
    prev_conditions = previous.get("conditions") or []
    status = {k: v for k, v in previous.items() if k != "conditions"}
    others = [c for c in prev_conditions if c.get("type") not in ("Degraded",)]
    status["conditions"] = others + [condition(prev_conditions, "Degraded", "True", reason, message, generation, now)]
    status["observedGeneration"] = generation
    return status
