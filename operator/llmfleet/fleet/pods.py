"""What a pod's fields say, read one way for the operator, the gateway's pod discovery and the dev pod runner."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmfleet.fleet.names import POOL_LABEL, Pool

Obj = dict[str, Any]  # a Kubernetes object as JSON (the same shape llmfleet.kube.port.Obj names)


def terminating(obj: Obj) -> bool:
    """Being deleted: it has a deletionTimestamp (it may still run while it drains)."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def ready(pod: Obj) -> bool:
    """Its Ready condition is True."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def serving(pod: Obj) -> bool:
    """Ready, with an IP, and not terminating: a pod that should get requests."""
    return ready(pod) and bool((pod.get("status") or {}).get("podIP")) and not terminating(pod)


def running(pod: Obj) -> bool:
    """Phase Running with an IP (ready or not)."""
    st = pod.get("status") or {}
    return bool(st.get("phase") == "Running" and st.get("podIP"))


def pending(pod: Obj) -> bool:
    """Not scheduled or not started yet (phase Pending; a pod with no status yet counts)."""
    return bool((pod.get("status") or {}).get("phase", "Pending") == "Pending")


def pool(pod: Obj) -> Pool:
    """The engine pool a pod belongs to (its pool label; on-demand when it has none)."""
    return (
        "spot" if ((pod.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL) == "spot" else "on-demand"
    )


def node(pod: Obj) -> str | None:
    return (pod.get("spec") or {}).get("nodeName") or None


def created_at(obj: Obj) -> datetime | None:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None


def age_seconds(obj: Obj, now: datetime) -> float | None:
    created = created_at(obj)
    return (now - created).total_seconds() if created is not None else None
