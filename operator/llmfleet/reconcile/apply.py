"""Act: the one place that writes. Applies the plan with server-side apply, prunes, writes status, emits events."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from llmfleet.api.conditions import EventReason
from llmfleet.api.v1alpha1 import API_VERSION, KIND
from llmfleet.kube.port import KubePort, Obj
from llmfleet.reconcile.plan import Plan

log = logging.getLogger("llmfleet.reconcile")


def execute(port: KubePort, raw: Obj, plan: Plan, pool: ThreadPoolExecutor | None = None) -> None:
    """Carry out a plan. Children first (in parallel when a pool is given: they do not depend on each other),
    then prune, then status (so status describes what was applied)."""
    meta = raw["metadata"]
    if pool is not None and len(plan.to_apply) > 1:
        for future in [pool.submit(port.apply, m) for m in plan.to_apply]:
            future.result()  # re-raises the first failure; the next reconcile converges
    else:
        for manifest in plan.to_apply:
            port.apply(manifest)
    for ref, uid in plan.to_delete:
        port.delete(ref, uid=uid)
    if plan.status is not None:
        port.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], plan.status)
    for type_, reason, message in plan.events:
        log.log(
            logging.WARNING if type_ == "Warning" else logging.INFO,
            "%s/%s: %s",
            meta["namespace"],
            meta["name"],
            message,
        )
        port.event(raw, type_, reason, message)
    if plan.details:
        for line in plan.details:
            log.info("%s/%s: %s", meta["namespace"], meta["name"], line)
        if plan.error is not None:
            port.event(raw, "Warning", EventReason.INVALID_SPEC, str(plan.error))
        else:
            created = sum(1 for d in plan.details if d.endswith(": missing"))
            summary = (
                f"Applied {len(plan.to_apply)} children ({created} created), pruned {len(plan.to_delete)}"
            )
            port.event(raw, "Normal", EventReason.RECONCILED, summary + ": " + "; ".join(plan.details)[:900])
