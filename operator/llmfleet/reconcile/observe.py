"""Gather: read the children an LLMDeployment owns (and its engine pods) into a frozen snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.kube.port import KubePort, Obj
from llmfleet.render.common import DEPLOYMENT_LABEL, MANAGED_BY, MANAGER

# Every kind a CR can own, in (apiVersion, kind) form: what prune looks at.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
)


@dataclass(frozen=True)
class Snapshot:
    children: dict[tuple[str, str], Obj]  # (kind, name) -> live object
    engine_pods: tuple[Obj, ...]


def child_selector(name: str) -> str:
    return f"{MANAGED_BY}={MANAGER},{DEPLOYMENT_LABEL}={name}"


def observe(port: KubePort, namespace: str, name: str) -> Snapshot:
    children: dict[tuple[str, str], Obj] = {}
    selector = child_selector(name)
    for api_version, kind in CHILD_KINDS:
        for obj in port.list(api_version, kind, namespace, selector):
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            children[(kind, obj["metadata"]["name"])] = obj
    pods = port.list("v1", "Pod", namespace, f"{DEPLOYMENT_LABEL}={name},app.kubernetes.io/component=engine")
    return Snapshot(children=children, engine_pods=tuple(pods))
