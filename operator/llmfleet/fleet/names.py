"""Labels, components and child names: what every child of an LLMDeployment is called and how it is found."""

from __future__ import annotations

from typing import Final, Literal

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGER: Final = "llmfleet"
DEPLOYMENT_LABEL: Final = "llmfleet.io/deployment"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
POOL_LABEL: Final = "llmfleet.io/pool"
SPEC_HASH_ANNOTATION: Final = "llmfleet.io/spec-hash"
CAPACITY_TYPE_LABEL: Final = "llmfleet.io/capacity-type"

ENGINE: Final = "engine"
GATEWAY: Final = "gateway"
CACHE: Final = "cache"

ENGINE_PORT: Final = 8000
GATEWAY_PORT: Final = 8080
REDIS_PORT: Final = 6379

Pool = Literal["spot", "on-demand"]
POOLS: Final[tuple[Pool, ...]] = ("on-demand", "spot")
STATUS_KEY: Final[dict[Pool, str]] = {"spot": "spot", "on-demand": "onDemand"}  # status.replicas.<key>


def selector_labels(name: str, component: str) -> dict[str, str]:
    """The labels that select one component's pods of a deployment."""
    return {DEPLOYMENT_LABEL: name, COMPONENT_LABEL: component}


def label_selector(name: str, component: str) -> str:
    """``selector_labels`` as a Kubernetes label selector string."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name, component).items())


def child_selector(name: str) -> str:
    """Every child the operator manages for a deployment (what prune lists)."""
    return f"{MANAGED_BY}={MANAGER},{DEPLOYMENT_LABEL}={name}"


def engine_pod_selector(name: str) -> str:
    """The label selector of a CR's engine pods (gateway discovery, status.selector, the operator's pod reads)."""
    return label_selector(name, ENGINE)


def engine_deployment(name: str, pool: Pool) -> str:
    return f"{name}-engine-{pool.replace('-', '')}"


def engine_service(name: str) -> str:
    """The engine Service (and its PodDisruptionBudget)."""
    return f"{name}-engine"


def gateway(name: str) -> str:
    """The gateway's Deployment, Service, ConfigMap, ServiceAccount, Role, RoleBinding and PodDisruptionBudget (also the `service` label
    its metrics carry in Prometheus)."""
    return f"{name}-gateway"


def cache(name: str) -> str:
    """The managed Redis Deployment and Service."""
    return f"{name}-cache"


def cache_auth(name: str) -> str:
    """The managed Redis's credentials: the gateway's password and Redis's ACL file (a Secret)."""
    return f"{name}-cache-auth"


def gateway_endpoint(name: str, namespace: str) -> str:
    """The in-cluster OpenAI base URL of a deployment's gateway."""
    return f"http://{gateway(name)}.{namespace}.svc:{GATEWAY_PORT}/v1"


ROUTES_TO_PREFIX = "routes-to.llmfleet.io/"  # a gateway pod label per member deployment it routes to


def routes_to_label(name: str) -> str | None:
    """The label a gateway pod carries when it may reach ``name``'s engines (None: the name is too long for a
    label key's name part, 63 characters)."""
    return ROUTES_TO_PREFIX + name if len(name) <= 63 else None
