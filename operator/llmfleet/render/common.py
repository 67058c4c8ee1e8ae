"""What every rendered child shares: labels, owner references, the render inputs, a stable hash (the names and
labels themselves are the fleet's: ``llmfleet.fleet.names``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from llmfleet.api.sizing import Sizing
from llmfleet.api.v1alpha1 import API_VERSION, KIND, LLMDeployment
from llmfleet.fleet.names import MANAGED_BY, MANAGER, selector_labels
from llmfleet.fleet.pools import PoolCounts

Manifest = dict[str, Any]


@dataclass(frozen=True)
class RenderOptions:
    """Install-level choices that are not part of a CR (the operator's settings supply them)."""

    llmfleet_image: str | None = None  # overrides spec.gateway.image
    engine_image: str | None = None  # overrides spec.engine.image (e.g. engine-sim in a dev cluster)
    engine_command: tuple[str, ...] | None = None  # e.g. ("llmfleet", "engine-sim") instead of vLLM
    # "pods" lets gateways list engine pods instead of EndpointSlices (dev clusters whose pod IPs are loopback
    # addresses, which EndpointSlices refuse).
    engine_discovery: str = "endpointslices"
    extra_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderInput:
    obj: LLMDeployment
    sizing: Sizing
    counts: PoolCounts
    options: RenderOptions = RenderOptions()
    # The managed Redis's password: the live Secret's, or a fresh one the reconciler drew (render stays pure);
    # None when unknown (`llmfleet render` without a cluster): the Secret is then not rendered.
    cache_password: str | None = None
    # A hash of the external Redis URL in the user's Secret (cache.redis.secretRef), as last read: on the
    # gateway pod template, so a change to that Secret rolls the gateways. None when unknown or unused.
    redis_url_hash: str | None = None

    @property
    def name(self) -> str:
        return self.obj.metadata.name

    @property
    def namespace(self) -> str:
        return self.obj.metadata.namespace


def labels(inp: RenderInput, component: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {
        MANAGED_BY: MANAGER,
        "app.kubernetes.io/name": "llmfleet",
        "app.kubernetes.io/instance": inp.name,
        **selector_labels(inp.name, component),
        **inp.options.extra_labels,
    }
    if extra:
        out.update(extra)
    return out


def owner_references(obj: LLMDeployment) -> list[dict[str, Any]]:
    if not obj.metadata.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": obj.metadata.name,
            "uid": obj.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def scrape_annotations(port: int) -> dict[str, str]:
    """The conventional prometheus.io annotations, for Prometheus set-ups without the Prometheus Operator (its
    PodMonitor, which the chart installs where the CRD exists, ignores them)."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def metadata(
    inp: RenderInput, name: str, component: str, extra_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": inp.namespace,
        "labels": labels(inp, component, extra_labels),
    }
    owners = owner_references(inp.obj)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def restricted_pod(uid: int) -> dict[str, Any]:
    """A pod securityContext the `restricted` Pod Security Standard admits: non-root with a fixed uid (none of
    our images needs root), the runtime's default seccomp profile, volumes group-owned by that uid."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container(read_only_root: bool = True) -> dict[str, Any]:
    """A container securityContext the `restricted` standard admits: no privilege escalation, no capability."""
    out: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    if read_only_root:
        out["readOnlyRootFilesystem"] = True
    return out


def stable_hash(value: Any) -> str:
    """A short hash of a JSON-able value, stable across runs (for 'is this child out of date?')."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def disruption_budget(inp: RenderInput, name: str, component: str) -> Manifest:
    """At most one of a component's pods evicted at a time (node drains, spot reclaims by a drain). Pods that
    are not Ready may always be evicted (``AlwaysAllow``): a crash-looping or never-started pod must not
    block a node drain, which is what the default policy (``IfHealthyBudget``) does when the budget is spent."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(inp, name, component),
        "spec": {
            "maxUnavailable": 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector_labels(inp.name, component)},
        },
    }
