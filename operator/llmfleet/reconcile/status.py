"""Status as a pure function of the CR, its sizing, the planned pool counts and the observed children.

Each condition is computed by a named function returning a ``ConditionResult`` (status, ``Reason``, message);
the status is assembled as the typed ``LLMDeploymentStatus`` (the model the CRD schema is generated from) and
serialised from it (``as_json``), so what the operator writes is what the schema says. Conditions follow
metav1.Condition; a condition's lastTransitionTime only moves when its status does, so an unchanged world
computes an identical status and the operator writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from pydantic import ValidationError

from llmfleet.api.conditions import ConditionResult, ConditionType, Reason
from llmfleet.api.sizing import Sizing
from llmfleet.api.v1alpha1 import (
    AutoscalingStatus,
    Condition,
    LLMDeployment,
    LLMDeploymentStatus,
    PoolReplicas,
    Reclaim,
    ReplicaStatus,
)
from llmfleet.fleet import names, pods
from llmfleet.fleet.names import POOLS, Pool
from llmfleet.fleet.pools import PoolCounts
from llmfleet.fleet.reclaim import Drain
from llmfleet.fleet.scale import ScaleInput
from llmfleet.reconcile.observe import Snapshot


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def as_json(status: LLMDeploymentStatus) -> dict[str, Any]:
    """The status as the API server stores it (camelCase, unset fields left out)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_previous(previous: dict[str, Any]) -> LLMDeploymentStatus:
    """The status last written, typed; one that does not fit the schema (hand-edited) counts as empty."""
    try:
        return LLMDeploymentStatus.model_validate(previous)
    except ValidationError:
        return LLMDeploymentStatus()


def condition(
    previous: Sequence[Condition],
    type_: ConditionType,
    result: ConditionResult,
    generation: int | None,
    now: datetime,
) -> Condition:
    """A condition from a rule's result; its lastTransitionTime is kept while its status stays the same."""
    old = next((c for c in previous if c.type == type_), None)
    since = (
        old.last_transition_time if old and old.status == result.status and old.last_transition_time else None
    )
    return Condition(
        type=type_,
        status=result.status,
        reason=result.reason,
        message=result.message,
        last_transition_time=since or timestamp(now),
        observed_generation=generation,
    )


# ---------------------------------------------------------------- what the children say


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


class _Children:
    """The figures the conditions are computed from, read once from the snapshot."""

    def __init__(self, obj: LLMDeployment, counts: PoolCounts, snapshot: Snapshot) -> None:
        name = obj.metadata.name
        od_ready, self.od_done = _deployment_ready(snapshot, names.engine_deployment(name, "on-demand"))
        spot_ready, self.spot_done = _deployment_ready(snapshot, names.engine_deployment(name, "spot"))
        if not obj.spec.pools.spot.enabled:
            spot_ready, self.spot_done = 0, True
        self.gw_ready, self.gw_done = _deployment_ready(snapshot, names.gateway(name))
        cache_needed = obj.spec.cache.any_enabled and obj.spec.cache.redis.mode == "managed"
        self.cache_ready, self.cache_done = (
            _deployment_ready(snapshot, names.cache(name)) if cache_needed else (1, True)
        )
        live = [p for p in snapshot.engine_pods if not pods.terminating(p)]
        self.pending: dict[Pool, int] = {
            p: sum(1 for x in live if pods.pool(x) == p and pods.pending(x)) for p in POOLS
        }
        self.running: dict[Pool, int] = {
            p: sum(1 for x in live if pods.pool(x) == p and not pods.pending(x)) for p in POOLS
        }
        self.od_ready, self.spot_ready = min(od_ready, counts.on_demand), min(spot_ready, counts.spot)
        self.desired = counts.target
        self.ready = min(self.od_ready + self.spot_ready, self.desired)

    @property
    def engines_ok(self) -> bool:
        return self.ready >= self.desired

    @property
    def rolling(self) -> bool:
        return not (self.od_done and self.spot_done and self.gw_done and self.cache_done)


# ---------------------------------------------------------------- one function per condition


def ready_condition(c: _Children) -> ConditionResult:
    if c.desired == 0:
        return ConditionResult(
            "True", Reason.SCALED_TO_ZERO, "No engine replicas are wanted; requests wait for a scale-up."
        )
    if c.engines_ok and c.gw_ready >= 1 and c.cache_ready >= 1:
        return ConditionResult(
            "True",
            Reason.ALL_REPLICAS_READY,
            f"{c.ready}/{c.desired} engine replicas ready; gateway serving.",
        )
    parts = [f"{c.ready}/{c.desired} engine replicas ready"]
    if c.pending["spot"] or c.pending["on-demand"]:
        parts.append(f"{c.pending['spot']} spot and {c.pending['on-demand']} on-demand pending")
    if c.gw_ready < 1:
        parts.append("gateway not ready")
    if c.cache_ready < 1:
        parts.append("cache not ready")
    return ConditionResult("False", Reason.REPLICAS_NOT_READY, "; ".join(parts) + ".")


def progressing_condition(c: _Children) -> ConditionResult:
    if c.rolling:
        return ConditionResult("True", Reason.ROLLING_OUT, "Children are being created or updated.")
    return ConditionResult("False", Reason.STABLE, "Every child matches the spec.")


def kstatus_conditions(
    ready: ConditionResult, progressing: ConditionResult, degraded: ConditionResult
) -> tuple[ConditionResult, ConditionResult]:
    """Reconciling and Stalled from Ready, Progressing and Degraded, so kstatus (Flux, kpt) computes the same
    health as ``kubectl get llmd``: Stalled (kstatus Failed) while Degraded; else Reconciling (InProgress) while
    children roll out or replicas are not ready; else neither (Current)."""
    if degraded.status == "True":
        return (
            ConditionResult("False", degraded.reason, "Stalled: the spec cannot be applied."),
            ConditionResult("True", degraded.reason, degraded.message),
        )
    stalled = ConditionResult("False", Reason.AS_EXPECTED, "The spec is applied.")
    if progressing.status == "True":
        return ConditionResult("True", progressing.reason, progressing.message), stalled
    if ready.status != "True":
        return ConditionResult("True", ready.reason, ready.message), stalled
    return ConditionResult("False", ready.reason, ready.message), stalled


def with_kstatus(
    previous: Sequence[Condition], conditions: list[Condition], generation: int | None, now: datetime
) -> list[Condition]:
    """``conditions`` with Reconciling and Stalled (re)computed from their Ready, Progressing and Degraded."""
    by = {c.type: ConditionResult(c.status, cast(Reason, c.reason), c.message) for c in conditions}
    unknown = ConditionResult("Unknown", Reason.REPLICAS_NOT_READY, "Not observed yet.")
    reconciling, stalled = kstatus_conditions(
        by.get(ConditionType.READY, unknown),
        by.get(ConditionType.PROGRESSING, unknown),
        by.get(ConditionType.DEGRADED, ConditionResult("False", Reason.AS_EXPECTED, "")),
    )
    rest = [c for c in conditions if c.type not in (ConditionType.RECONCILING, ConditionType.STALLED)]
    return [
        *rest,
        condition(previous, ConditionType.RECONCILING, reconciling, generation, now),
        condition(previous, ConditionType.STALLED, stalled, generation, now),
    ]


def degraded_condition(reason: Reason | None = None, message: str = "") -> ConditionResult:
    """Degraded=False while the spec is applied; True with the field at fault when it cannot be."""
    if reason is None:
        return ConditionResult("False", Reason.AS_EXPECTED, "The spec is valid and applied.")
    return ConditionResult("True", reason, message)


def spot_fallback_condition(obj: LLMDeployment, counts: PoolCounts, late_spot: int) -> ConditionResult:
    sp = obj.spec.pools.spot
    if not sp.enabled:
        return ConditionResult(
            "False", Reason.SPOT_DISABLED, "pools.spot is disabled; every replica runs on-demand."
        )
    if late_spot == 0:
        return ConditionResult(
            "False", Reason.SPOT_AVAILABLE, "Spot replicas start within pools.spot.pendingTimeout."
        )
    late = f"{late_spot} spot replica{'s' if late_spot != 1 else ''} not ready after {sp.pending_timeout}"
    if not sp.fallback_to_on_demand:
        return ConditionResult(
            "False",
            Reason.FALLBACK_DISABLED,
            f"{late}; pools.spot.fallbackToOnDemand is off, so they wait for spot capacity.",
        )
    if counts.fallback < late_spot:
        return ConditionResult(
            "True",
            Reason.ON_DEMAND_AT_MAX,
            f"{late}; {counts.fallback} on-demand stand-in(s) run, pools.onDemand.maxReplicas "
            f"({obj.spec.pools.on_demand.max_replicas}) allows no more.",
        )
    return ConditionResult(
        "True",
        Reason.SPOT_CAPACITY_UNAVAILABLE,
        f"{late}; {counts.fallback} on-demand replica(s) stand in until spot capacity returns.",
    )


def reclaim_condition(
    c: _Children, snapshot: Snapshot, drained: Sequence[Drain], reclaimed: set[str], was_pending: bool
) -> ConditionResult:
    """Pending from the drain until every replica is ready again; then Replaced, and it stays so (a later
    scale-up or rollout is not a reclaim) until the next notice. A reclaimed pod still terminating (draining
    its streams, or stuck on a node that is gone until pod GC removes it) does not hold it: its replacement
    serves."""
    if drained or (was_pending and not c.engines_ok):
        terminating = sum(
            1 for p in snapshot.engine_pods if pods.terminating(p) and p["metadata"]["name"] in reclaimed
        )
        return ConditionResult(
            "True",
            Reason.REPLACEMENT_PENDING,
            f"{len(drained) + terminating} engine pod(s) draining after a reclaim notice; "
            f"{c.ready}/{c.desired} replicas ready while replacements start.",
        )
    return ConditionResult(
        "False", Reason.REPLACED, f"Every reclaimed replica is replaced: {c.ready}/{c.desired} ready."
    )


def metrics_available_condition(obj: LLMDeployment, scale: ScaleInput | None) -> ConditionResult | None:
    """From the autoscaler's last read; None: keep the condition last written (no read this reconcile)."""
    if scale is not None and scale.metrics_available is not None:
        return scale.metrics_available
    if not obj.spec.autoscaling.enabled:
        return ConditionResult(
            "False",
            Reason.AUTOSCALING_DISABLED,
            "spec.autoscaling.enabled is false; spec.replicas sets the size.",
        )
    return None


# ---------------------------------------------------------------- assembly


def _pool_replicas(
    pool: Pool,
    desired: int,
    ready: int,
    pending: int,
    previous: PoolReplicas | None,
    drained: Sequence[Drain],
    now: datetime,
) -> PoolReplicas:
    """One pool's counts, with its reclaim count and latest reclaim carried over and bumped."""
    mine = [d for d in drained if d.pool == pool]
    prev_count = previous.reclaims if previous else None
    reclaims = (prev_count or 0) + len(mine) if (prev_count or mine) else None
    last = (
        Reclaim(
            node=mine[0].node,
            signal=mine[0].signal,
            pods=[d.pod["metadata"]["name"] for d in mine],
            time=timestamp(now),
        )
        if mine
        else previous.last_reclaim
        if previous
        else None
    )
    return PoolReplicas(desired=desired, ready=ready, pending=pending, reclaims=reclaims, last_reclaim=last)


def compute_status(
    obj: LLMDeployment,
    sizing: Sizing,
    counts: PoolCounts,
    snapshot: Snapshot,
    previous: LLMDeploymentStatus,
    now: datetime,
    scale: ScaleInput | None = None,
    late_spot: int = 0,
    drained: Sequence[Drain] = (),
) -> LLMDeploymentStatus:
    name, gen = obj.metadata.name, obj.metadata.generation
    prev = previous.conditions
    c = _Children(obj, counts, snapshot)
    prev_replicas = previous.replicas
    spot = _pool_replicas(
        "spot",
        counts.spot,
        c.spot_ready,
        c.pending["spot"],
        prev_replicas.spot if prev_replicas else None,
        drained,
        now,
    )
    on_demand = _pool_replicas(
        "on-demand",
        counts.on_demand,
        c.od_ready,
        c.pending["on-demand"],
        prev_replicas.on_demand if prev_replicas else None,
        drained,
        now,
    )

    conditions = [
        condition(prev, ConditionType.READY, ready_condition(c), gen, now),
        condition(prev, ConditionType.PROGRESSING, progressing_condition(c), gen, now),
        condition(prev, ConditionType.DEGRADED, degraded_condition(), gen, now),
        condition(
            prev, ConditionType.SPOT_FALLBACK, spot_fallback_condition(obj, counts, late_spot), gen, now
        ),
    ]
    if drained or spot.last_reclaim or on_demand.last_reclaim:
        reclaimed = {p for r in (spot.last_reclaim, on_demand.last_reclaim) if r for p in r.pods}
        was_pending = any(x.type == ConditionType.RECLAIM and x.status == "True" for x in prev)
        conditions.append(
            condition(
                prev,
                ConditionType.RECLAIM,
                reclaim_condition(c, snapshot, drained, reclaimed, was_pending),
                gen,
                now,
            )
        )
    metrics_c = metrics_available_condition(obj, scale)
    if metrics_c is not None:
        conditions.append(condition(prev, ConditionType.METRICS_AVAILABLE, metrics_c, gen, now))
    else:
        conditions.extend(x for x in prev if x.type == ConditionType.METRICS_AVAILABLE)

    cost = (
        c.running["on-demand"] * sizing.on_demand_per_replica_hour
        + c.running["spot"] * sizing.spot_per_replica_hour
    )
    return LLMDeploymentStatus(
        observed_generation=gen,
        conditions=with_kstatus(prev, conditions, gen, now),
        tensor_parallel_size=sizing.tensor_parallel_size,
        replicas=ReplicaStatus(desired=c.desired, ready=c.ready, spot=spot, on_demand=on_demand),
        ready=f"{c.ready}/{c.desired}",
        spot=f"{c.spot_ready}/{counts.spot}",
        selector=names.engine_pod_selector(name),
        endpoint=names.gateway_endpoint(name, obj.metadata.namespace),
        cost_per_hour=round(cost, 2),
        metrics=scale.metrics if scale and scale.metrics is not None else previous.metrics,
        last_scale=scale.last_scale if scale and scale.last_scale is not None else previous.last_scale,
        autoscaling=AutoscalingStatus(history=list(scale.history))
        if scale and scale.history
        else previous.autoscaling,
    )


def degraded_status(
    previous: LLMDeploymentStatus, generation: int | None, now: datetime, reason: Reason, message: str
) -> LLMDeploymentStatus:
    """Status for a spec the operator cannot act on: Degraded names the field; the rest is kept."""
    others = [c for c in previous.conditions if c.type != ConditionType.DEGRADED]
    degraded = condition(
        previous.conditions, ConditionType.DEGRADED, degraded_condition(reason, message), generation, now
    )
    conditions = with_kstatus(previous.conditions, [*others, degraded], generation, now)
    return previous.model_copy(update={"conditions": conditions, "observed_generation": generation})
