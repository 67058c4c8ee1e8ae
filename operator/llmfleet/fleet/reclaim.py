"""Reclaim notices: which signal on a node says it is about to go, which engine pods to drain for it, and how
many lost replicas are still being replaced.

Pure. The signals real clusters give, configurable (``OperatorSettings.reclaim_taints`` and
``reclaim_conditions``), with these defaults:

- taints of AWS node termination handler (spot interruption, ASG termination, scheduled maintenance),
  Karpenter's disruption taint, GKE's impending-termination taint, the out-of-service taint and the
  cluster autoscaler's scale-down taint;
- node conditions set by node-problem-detector style agents (AKS: ``VMEventScheduled``, which covers spot
  eviction) when their status is ``True``;
- the node's deletion.

On a notice the operator deletes the engine pods on that node (each with its own grace period, sized to
finish in-flight streams within the notice window: preStop plus vLLM's ``--shutdown-timeout``). A deleted
pod is terminating at once, so its EndpointSlice endpoint stops being ready and every gateway, watching,
sends it nothing new; its ReplicaSet creates the replacement at once, scheduled off the tainted node
(spot elsewhere, or on-demand stand-ins through the spot ``pendingTimeout`` fallback). The Deployment's
replica count does not change: a reclaim is lost capacity to replace, never a scale-down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmfleet.fleet import pods
from llmfleet.fleet.names import Pool
from llmfleet.fleet.pods import Obj

DEFAULT_TAINTS: tuple[str, ...] = (
    "aws-node-termination-handler/spot-itn",
    "aws-node-termination-handler/asg-lifecycle-termination",
    "aws-node-termination-handler/scheduled-maintenance",
    "karpenter.sh/disrupted",
    "cloud.google.com/impending-node-termination",
    "node.kubernetes.io/out-of-service",
    "ToBeDeletedByClusterAutoscaler",
)
DEFAULT_CONDITIONS: tuple[str, ...] = ("VMEventScheduled",)
NODE_DELETED = "node deleted"


@dataclass(frozen=True)
class Drain:
    """One engine pod to drain because its node got a notice."""

    pod: Obj
    node: str
    signal: str

    @property
    def pool(self) -> Pool:
        return pods.pool(self.pod)


def notice(
    node: Obj, taints: tuple[str, ...] = DEFAULT_TAINTS, conditions: tuple[str, ...] = DEFAULT_CONDITIONS
) -> str | None:
    """The signal that says this node is going (``"taint KEY"``, ``"condition TYPE"``), or None."""
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("key") in taints:
            return f"taint {t['key']}"
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") in conditions and c.get("status") == "True":
            return f"condition {c['type']}"
    if (node.get("metadata") or {}).get("deletionTimestamp"):
        return NODE_DELETED
    return None


def drains(engine_pods: tuple[Obj, ...] | list[Obj], notices: Mapping[str, str]) -> list[Drain]:
    """Engine pods on a node with a notice that are not terminating yet, in name order."""
    out = []
    for pod in engine_pods:
        node = pods.node(pod)
        if node and node in notices and not pods.terminating(pod):
            out.append(Drain(pod, node, notices[node]))
    return sorted(out, key=lambda d: str(d.pod["metadata"]["name"]))


def replacing(lost: int, desired: int, ready: int) -> int:
    """Replicas lost to reclaims that are not serving again yet: of the ``lost`` ones (drained since the fleet
    was last whole), as many as the fleet is short. A shortfall beyond them (a scale-up or a rollout starting)
    is not lost capacity and holds nothing. The autoscaler never lowers its target while this is above zero
    (``autoscale.policy``); the operator feeds it from its Reclaim condition, the fleet simulator from its own
    reclaims."""
    return max(0, min(lost, desired - ready))
