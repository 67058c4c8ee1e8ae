"""Network isolation children: one NetworkPolicy each for the engines, the managed cache and the gateways.

Nobody in the cluster gets around the gateway: the engines take connections only from this deployment's
gateway pods (and the monitoring peers, for /metrics: a NetworkPolicy cannot tell paths apart, so those peers
reach the engine port), the managed cache only from the gateways, and the gateways may connect only to their
engines, their cache, the Kubernetes API (endpoint discovery), DNS and the external provider, external Redis and
the OpenTelemetry collector (by port: a NetworkPolicy cannot name a host). `spec.network.isolation: false` renders none (pruned by label).

Checked without a CNI by IBM's NetworkPolicy analyser (network-config-analyzer, hack/nca-venv.sh):
tests/integration/test_network_isolation.py asserts its connectivity report, the allowed and denied pairs, for
every example CR.
"""

from __future__ import annotations

from typing import Any

from llmfleet.fleet import names
from llmfleet.fleet.names import ENGINE_PORT, GATEWAY_PORT, REDIS_PORT, selector_labels
from llmfleet.render.cache import managed
from llmfleet.render.common import Manifest, RenderInput, metadata

COMPONENT = "network"
DNS_PORT = 53
API_SERVER_PORTS = (443, 6443)
DEFAULT_PORTS = {"https": 443, "http": 80, "redis": 6379, "rediss": 6379}
ANYWHERE = ({"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}})


def _pods(inp: RenderInput, component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": selector_labels(inp.name, component)}}


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _policy(inp: RenderInput, name: str, component: str, spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(inp, name, COMPONENT),
        "spec": {"podSelector": {"matchLabels": selector_labels(inp.name, component)}, **spec},
    }


def _monitoring(inp: RenderInput) -> list[dict[str, Any]]:
    return [p.as_policy_peer() for p in inp.obj.spec.network.monitoring]


def engine_policy(inp: RenderInput) -> Manifest:
    """Engines: ingress from this deployment's gateways and from monitoring, on the engine port; no rule on
    egress (vLLM fetches weights from wherever the model source says)."""
    return _policy(
        inp,
        names.engine_service(inp.name),
        names.ENGINE,
        {
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [_pods(inp, names.GATEWAY), *_routing_gateways(inp), *_monitoring(inp)],
                    "ports": _tcp(ENGINE_PORT),
                }
            ],
        },
    )


def _routing_gateways(inp: RenderInput) -> list[dict[str, Any]]:
    """The gateways of deployments in this namespace whose spec.routing names this one as a member (their pods
    carry its routes-to label)."""
    label = names.routes_to_label(inp.name)
    if label is None:
        return []
    return [{"podSelector": {"matchLabels": {label: "true", names.COMPONENT_LABEL: names.GATEWAY}}}]


def cache_policy(inp: RenderInput) -> Manifest:
    """The managed Redis: ingress from this deployment's gateways only; it opens no connection itself."""
    return _policy(
        inp,
        names.cache(inp.name),
        names.CACHE,
        {
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [_pods(inp, names.GATEWAY)], "ports": _tcp(REDIS_PORT)}],
            "egress": [],
        },
    )


def port_of(url: str) -> int:
    """The TCP port a URL names, else its scheme's (render is pure: no urllib, by the import contract)."""
    scheme, _, rest = url.partition("://")
    host_port = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    _, sep, port = host_port.rpartition(":")
    if sep and port.isdigit():
        return int(port)
    return DEFAULT_PORTS.get(scheme.lower(), 443)


def gateway_policy(inp: RenderInput) -> Manifest:
    """Gateways: ingress from `spec.network.gatewayFrom` (default anyone) and monitoring on the gateway port;
    egress to their engines, their managed cache, DNS, the API server and, by port, the external provider and
    an external Redis."""
    net = inp.obj.spec.network
    spec = inp.obj.spec
    ingress: dict[str, Any] = {"ports": _tcp(GATEWAY_PORT)}
    if net.gateway_from is not None:
        ingress["from"] = [p.as_policy_peer() for p in net.gateway_from] + _monitoring(inp)
    egress: list[dict[str, Any]] = [
        {
            "to": [_pods(inp, names.ENGINE)]
            + [
                {"podSelector": {"matchLabels": selector_labels(m.deployment, names.ENGINE)}}
                for m in spec.routing.members
            ],
            "ports": _tcp(ENGINE_PORT),
        },
        {
            "to": [p.as_policy_peer() for p in net.dns],
            "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
        },
        {"to": [{"ipBlock": {"cidr": c}} for c in net.api_server_cidrs], "ports": _tcp(*API_SERVER_PORTS)},
    ]
    if managed(inp):
        egress.append({"to": [_pods(inp, names.CACHE)], "ports": _tcp(REDIS_PORT)})
    outside: set[int] = set()
    if spec.gateway.external.use != "never" and spec.gateway.external.base_url:
        outside.add(port_of(spec.gateway.external.base_url))
    if spec.gateway.tracing.endpoint:  # the OpenTelemetry collector
        outside.add(port_of(spec.gateway.tracing.endpoint))
    redis = spec.cache.redis
    if spec.cache.any_enabled and redis.mode == "external":
        outside.add(port_of(redis.url) if redis.url else REDIS_PORT)
    if outside:
        egress.append({"to": list(ANYWHERE), "ports": _tcp(*sorted(outside))})
    return _policy(
        inp,
        names.gateway(inp.name),
        names.GATEWAY,
        {"policyTypes": ["Ingress", "Egress"], "ingress": [ingress], "egress": egress},
    )


def network_policies(inp: RenderInput) -> list[Manifest]:
    if not inp.obj.spec.network.isolation:
        return []
    out = [engine_policy(inp), gateway_policy(inp)]
    if managed(inp):
        out.insert(1, cache_policy(inp))
    return out
