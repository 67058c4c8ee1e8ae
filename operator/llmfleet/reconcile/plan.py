"""Decide: a pure function from (CR, snapshot, clock) to what to apply, what to prune and the new status.

A child is re-applied only when it is missing, its applied-hash annotation differs from the rendered
one, or a field we set has drifted in the live object; so an unchanged CR plans zero writes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmfleet.api.conditions import EventReason, Reason
from llmfleet.api.load import FieldError, SpecError, parse_spec
from llmfleet.api.sizing import Sizing, SizingError, size
from llmfleet.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec, ObjectMeta
from llmfleet.fleet import pods
from llmfleet.fleet.pools import initial_replicas, late_spot, split_replicas
from llmfleet.fleet.reclaim import drains
from llmfleet.fleet.scale import ScaleInput
from llmfleet.kube.port import Obj, Ref
from llmfleet.reconcile.observe import Snapshot
from llmfleet.reconcile.status import as_json, compute_status, degraded_status, parse_previous
from llmfleet.render import Manifest, RenderOptions, render_all
from llmfleet.render.cache import PASSWORD_KEY
from llmfleet.render.common import stable_hash

APPLIED_HASH = "llmfleet.io/applied-hash"


@dataclass(frozen=True)
class Plan:
    to_apply: list[Manifest] = field(default_factory=list)
    to_delete: list[tuple[Ref, str]] = field(default_factory=list)  # (ref, uid)
    status: dict[str, Any] | None = None  # None: unchanged
    details: list[str] = field(default_factory=list)  # human-readable, become Events
    # (type, reason, message): Events of their own
    events: list[tuple[str, EventReason, str]] = field(default_factory=list)
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
    meta = {
        **manifest["metadata"],
        "annotations": {**manifest["metadata"].get("annotations", {}), APPLIED_HASH: h},
    }
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
    """The autoscaler's target when it runs; else the fleet's initial size (``fleet.pools.initial_replicas``)."""
    if scale is not None and spec.autoscaling.enabled:
        return scale.target
    return initial_replicas(spec)


def spot_shortfall(spec: LLMDeploymentSpec, engine_pods: tuple[Obj, ...], now: datetime) -> int:
    """Spot engine pods past pools.spot.pendingTimeout that are not ready (``fleet.pools.late_spot``)."""
    return late_spot(
        spec,
        (
            pods.age_seconds(p, now)
            for p in engine_pods
            if pods.pool(p) == "spot" and not pods.terminating(p) and not pods.ready(p)
        ),
    )


def live_password(secret: Obj | None) -> str | None:
    """The managed Redis's password in its live Secret, if it has a usable one."""
    raw = ((secret or {}).get("data") or {}).get(PASSWORD_KEY)
    if not raw:
        return None
    try:
        password = base64.b64decode(raw, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None  # not base64 text: replaced by a fresh one, as if deleted
    return password if password.strip() else None


def plan(
    raw: Obj,
    snapshot: Snapshot,
    now: datetime,
    options: RenderOptions | None = None,
    scale: ScaleInput | None = None,
    new_password: str | None = None,
) -> Plan:
    """``new_password``: a fresh random password the caller drew, used when the managed cache has no credentials
    Secret yet (the live Secret's password wins, so a re-plan never rotates it)."""
    meta = raw["metadata"]
    previous_json = raw.get("status") or {}
    previous = parse_previous(previous_json)
    generation = meta.get("generation")
    try:
        spec = parse_spec(raw.get("spec") or {})
        obj = LLMDeployment.model_validate(
            {
                "apiVersion": raw["apiVersion"],
                "kind": raw["kind"],
                "metadata": ObjectMeta(
                    name=meta["name"],
                    namespace=meta.get("namespace", "default"),
                    uid=meta.get("uid"),
                    generation=generation,
                ),
                "spec": spec,
            }
        )
        sizing: Sizing = size(spec)
    except SpecError as exc:
        err = exc.errors[0]
        return _invalid(previous_json, generation, now, Reason.INVALID_SPEC, err)
    except SizingError as exc:
        return _invalid(previous_json, generation, now, Reason.SIZING_FAILED, FieldError(exc.field, str(exc)))

    late = spot_shortfall(spec, snapshot.engine_pods, now)
    counts = split_replicas(spec, desired_total(spec, scale), late)
    children = dict(snapshot.children)
    if snapshot.cache_auth is not None:
        children[("Secret", snapshot.cache_auth["metadata"]["name"])] = snapshot.cache_auth
    password = live_password(snapshot.cache_auth) or new_password
    desired = [
        with_hash(m) for m in render_all(obj, sizing, counts, options, password, snapshot.redis_url_hash)
    ]
    to_apply, details = [], []
    for m in desired:
        live = children.get((m["kind"], m["metadata"]["name"]))
        reason = needs_apply(m, live)
        if reason:
            to_apply.append(m)
            details.append(f"{m['kind']} {m['metadata']['name']}: {reason}")
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    to_delete = []
    uid = meta.get("uid")
    for key, live in sorted(children.items()):
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
            to_delete.append(
                (
                    Ref(
                        "v1",
                        "Pod",
                        d.pod["metadata"].get("namespace", meta.get("namespace", "")),
                        d.pod["metadata"]["name"],
                    ),
                    d.pod["metadata"]["uid"],
                )
            )
        pods = ", ".join(d.pod["metadata"]["name"] for d in on_node)
        events.append(
            (
                "Warning",
                EventReason.RECLAIM_NOTICE,
                f"Node {node} is going ({on_node[0].signal}): draining {pods}; replacements requested "
                f"({', '.join(sorted({d.pool for d in on_node}))} pool).",
            )
        )
    if scale is not None and scale.scaled is not None and spec.autoscaling.enabled:
        s = scale.scaled
        events.append(
            (
                "Normal",
                EventReason.SCALED,
                f"{s.from_} → {s.to} replicas ({s.spot} spot, {s.on_demand} on-demand): {s.reason}: {s.message}",
            )
        )
    status = as_json(compute_status(obj, sizing, counts, snapshot, previous, now, scale, late, drained))
    return Plan(
        to_apply=to_apply,
        to_delete=to_delete,
        status=None if status == previous_json else status,
        details=details,
        desired=desired,
        events=events,
    )


def _invalid(
    previous: dict[str, Any], generation: int | None, now: datetime, reason: Reason, err: FieldError
) -> Plan:
    status = as_json(degraded_status(parse_previous(previous), generation, now, reason, str(err)))
    return Plan(status=None if status == previous else status, error=err, details=[f"{reason}: {err}"])
