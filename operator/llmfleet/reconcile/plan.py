"""Decide: a pure function from (CR, snapshot, clock) to what to apply, what to prune and the new status.

A child is re-applied only when it is missing, its applied-hash annotation differs from the rendered
one, or a field we set has drifted in the live object; so an unchanged CR plans zero writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmfleet.api.load import FieldError, SpecError, parse_spec
from llmfleet.api.quantity import parse_duration
from llmfleet.api.sizing import Sizing, SizingError, size
from llmfleet.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec, ObjectMeta
from llmfleet.kube.port import Obj, Ref
from llmfleet.reconcile.observe import Snapshot
from llmfleet.reconcile.reclaim import drains
from llmfleet.reconcile.status import ScaleInput, compute_status, degraded_status
from llmfleet.render import Manifest, RenderOptions, render_all, split_replicas
from llmfleet.render.common import POOL_LABEL, stable_hash

APPLIED_HASH = "llmfleet.io/applied-hash"
RECLAIM_NOTICE = "ReclaimNotice"  # Event reason: engine pods drained because their node is going


@dataclass(frozen=True)
class Plan:
    to_apply: list[Manifest] = field(default_factory=list)
    to_delete: list[tuple[Ref, str]] = field(default_factory=list)  # (ref, uid)
    status: dict[str, Any] | None = None  # None: unchanged
    details: list[str] = field(default_factory=list)  # human-readable, become Events
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message) Events of their own
    error: FieldError | None = None  # invalid spec: nothing is applied or deleted
    desired: list[Manifest] = field(default_factory=list)


def _empty(value: Any) -> bool:
    return value in (None, "", [], {})


def is_subset(desired: Any, live: Any) -> bool:
    """Every field we set has the same value live (server defaults may add more)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(
            (k not in live and _empty(v)) or (k in live and is_subset(v, live[k])) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_subset, desired, live))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return float(desired) == float(live)
    return bool(desired == live)


def with_hash(manifest: Manifest) -> Manifest:
    h = stable_hash(manifest)
    meta = {**manifest["metadata"], "annotations": {**manifest["metadata"].get("annotations", {}), APPLIED_HASH: h}}
    return {**manifest, "metadata": meta}


def needs_apply(desired: Manifest, live: Obj | None) -> str | None:
    """Why this child must be applied, or None when the live object already matches."""
    if live is None:
        return "missing"
    if live["metadata"].get("deletionTimestamp"):
        return "being deleted"
    live_hash = (live["metadata"].get("annotations") or {}).get(APPLIED_HASH)
    if live_hash != desired["metadata"]["annotations"][APPLIED_HASH]:
        return "out of date"
    if not is_subset({k: v for k, v in desired.items() if k != "metadata"}, live):
        return "drifted"
    if not is_subset(desired["metadata"].get("labels", {}), live["metadata"].get("labels") or {}):
        return "labels drifted"
    return None


def desired_total(spec: LLMDeploymentSpec, scale: ScaleInput | None = None) -> int:
    """The autoscaler's target when it runs; else spec.replicas (clamped to the autoscaling range), else the minimum."""
    a = spec.autoscaling
    if scale is not None and a.enabled:
        return scale.target
    if spec.replicas is not None:
        return min(max(spec.replicas, a.min_replicas), a.max_replicas) if a.enabled else spec.replicas
    return a.min_replicas if a.enabled else spec.pools.on_demand.min_replicas


def created_at(obj: Obj) -> datetime | None:
    stamp = obj["metadata"].get("creationTimestamp")
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None


def _pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def spot_shortfall(spec: LLMDeploymentSpec, pods: tuple[Obj, ...], now: datetime) -> int:
    """Spot engine pods that have not become ready within pools.spot.pendingTimeout of their creation.

    Unscheduled (no spot capacity) and scheduled-but-starting pods count alike once past the timeout: the
    on-demand stand-ins stay until spot replicas actually serve, so a spot pod that just got a node does not
    pull its stand-in away minutes before it is ready.
    """
    if not spec.pools.spot.enabled:
        return 0
    timeout = parse_duration(spec.pools.spot.pending_timeout)
    late = 0
    for pod in pods:
        meta = pod["metadata"]
        if meta.get("labels", {}).get(POOL_LABEL) != "spot" or meta.get("deletionTimestamp") or _pod_ready(pod):
            continue
        created = created_at(pod)
        if created is not None and (now - created).total_seconds() >= timeout:
            late += 1
    return late


def plan(raw: Obj, snapshot: Snapshot, now: datetime, options: RenderOptions | None = None,
         scale: ScaleInput | None = None) -> Plan:
    meta = raw["metadata"]
    previous = raw.get("status") or {}
    generation = meta.get("generation")
    try:
        spec = parse_spec(raw.get("spec") or {})
        obj = LLMDeployment(
            apiVersion=raw["apiVersion"], kind=raw["kind"],
            metadata=ObjectMeta(name=meta["name"], namespace=meta.get("namespace", "default"),
                                uid=meta.get("uid"), generation=generation),
            spec=spec,
        )
        sizing: Sizing = size(spec)
    except SpecError as exc:
        err = exc.errors[0]
        return _invalid(previous, generation, now, "InvalidSpec", err)
    except SizingError as exc:
        return _invalid(previous, generation, now, "SizingFailed", FieldError(exc.field, str(exc)))

    late_spot = spot_shortfall(spec, snapshot.engine_pods, now)
    counts = split_replicas(spec, desired_total(spec, scale), late_spot)
    desired = [with_hash(m) for m in render_all(obj, sizing, counts, options)]
    to_apply, details = [], []
    for m in desired:
        live = snapshot.children.get((m["kind"], m["metadata"]["name"]))
        reason = needs_apply(m, live)
        if reason:
            to_apply.append(m)
            details.append(f"{m['kind']} {m['metadata']['name']}: {reason}")
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    to_delete = []
    uid = meta.get("uid")
    for key, live in sorted(snapshot.children.items()):
        owners = live["metadata"].get("ownerReferences") or []
        ours = any(o.get("uid") == uid for o in owners)
        if key not in wanted and ours and not live["metadata"].get("deletionTimestamp"):
            to_delete.append((Ref.of(live), live["metadata"]["uid"]))
            details.append(f"{key[0]} {key[1]}: no longer wanted, pruning")
    # Engine pods on a node that is going: deleted now (each drains within its grace period) and replaced by
    # their ReplicaSet at once; the pool's replica count is not touched (lost capacity, not a scale-down).
    drained = drains(snapshot.engine_pods, snapshot.notices)
    events = []
    for node in sorted({d.node for d in drained}):
        on_node = [d for d in drained if d.node == node]
        for d in on_node:
            to_delete.append((Ref("v1", "Pod", d.pod["metadata"].get("namespace", meta.get("namespace", "")),
                                  d.pod["metadata"]["name"]), d.pod["metadata"]["uid"]))
        pods = ", ".join(d.pod["metadata"]["name"] for d in on_node)
        events.append(("Warning", RECLAIM_NOTICE,
                       f"Node {node} is going ({on_node[0].signal}): draining {pods}; replacements requested "
                       f"({', '.join(sorted({d.pool for d in on_node}))} pool)."))
    status = compute_status(obj, sizing, counts, snapshot, previous, now, scale, late_spot, drained)
    return Plan(
        to_apply=to_apply, to_delete=to_delete, status=None if status == previous else status,
        details=details, desired=desired, events=events,
    )


def _invalid(previous: dict[str, Any], generation: int | None, now: datetime, reason: str, err: FieldError) -> Plan:
    status = degraded_status(previous, generation, now, reason, str(err))
    return Plan(status=None if status == previous else status, error=err,
                details=[f"{reason}: {err}"])
