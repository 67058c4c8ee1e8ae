"""Pure renderers: an LLMDeployment plus its sizing and pool counts → the child manifests it owns.

No I/O and no Kubernetes client objects: manifests are plain dicts, ready for server-side apply.
"""

from __future__ import annotations

from llmfleet.api.sizing import Sizing
from llmfleet.api.v1alpha1 import LLMDeployment
from llmfleet.fleet.pools import PoolCounts, split_replicas
from llmfleet.render.cache import cache_auth_secret, cache_deployment, cache_service
from llmfleet.render.common import Manifest, RenderInput, RenderOptions
from llmfleet.render.engine import engine_deployments, engine_pdb, engine_service
from llmfleet.render.gateway import (
    gateway_configmap,
    gateway_deployment,
    gateway_hpa,
    gateway_pdb,
    gateway_role,
    gateway_role_binding,
    gateway_service,
    gateway_service_account,
)
from llmfleet.render.network import network_policies

__all__ = ["Manifest", "RenderInput", "RenderOptions", "render_all"]


def render_all(
    obj: LLMDeployment,
    sizing: Sizing,
    counts: PoolCounts | None = None,
    options: RenderOptions | None = None,
    cache_password: str | None = None,
    redis_url_hash: str | None = None,
) -> list[Manifest]:
    """Every child the LLMDeployment should own, in apply order (config before workloads)."""
    inp = RenderInput(
        obj,
        sizing,
        counts or split_replicas(obj.spec),
        options or RenderOptions(),
        cache_password,
        redis_url_hash,
    )
    builders = [
        *network_policies(inp),  # isolation first: no pod starts reachable from the whole cluster
        gateway_service_account(inp),
        gateway_role(inp),
        gateway_role_binding(inp),
        gateway_configmap(inp),
        cache_auth_secret(inp),
        cache_service(inp),
        cache_deployment(inp),
        engine_service(inp),
        engine_pdb(inp),
        *engine_deployments(inp),
        gateway_service(inp),
        gateway_pdb(inp),
        gateway_deployment(inp),
        gateway_hpa(inp),  # after its Deployment: it scales an object that exists
    ]
    return [m for m in builders if m is not None]
