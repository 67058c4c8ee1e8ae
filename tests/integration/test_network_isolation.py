"""Nobody in the cluster gets around the gateway: the rendered NetworkPolicies, evaluated without a CNI.

The local control plane has no network plugin, so IBM's NetworkPolicy analyser (network-config-analyzer, installed
by hack/nca-venv.sh) computes who can reach whom from the policies, the pods' labels and the namespaces' labels.
Beside every example CR's pods the world holds an intruder pod in the same namespace, a client in another
namespace, Prometheus in `monitoring`, CoreDNS in `kube-system` and the addresses outside the cluster; the
report must match the table of the README's security model exactly, both what is allowed and what is denied.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmfleet.api.load import parse_object
from llmfleet.api.sizing import size
from llmfleet.fleet.names import COMPONENT_LABEL
from llmfleet.render import render_all
from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.integration
CACHE = Path(os.environ.get("LLMFLEET_CACHE", Path.home() / ".cache" / "llmfleet"))
NCA = CACHE / "nca-venv" / "2.1.0" / "bin" / "nca"
OUTSIDE = ("0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
ALL = "All connections"
NAMESPACES = ("monitoring", "kube-system", "other")
PROBES = {  # (namespace or None for the CR's) / name -> labels
    (None, "intruder"): {"app": "intruder"},
    ("other", "client"): {"app": "client"},
    ("monitoring", "prometheus"): {"app.kubernetes.io/name": "prometheus"},
    ("kube-system", "coredns"): {"k8s-app": "kube-dns"},
}


def tcp(*ports: int) -> str:
    return "{protocols:TCP,dst_ports:" + ",".join(str(p) for p in sorted(ports)) + "}"


DNS = "{protocols:TCP, UDP,dst_ports:53}"


def _pod(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"podIP": "10.0.0.1"},
    }


def connectivity(policies: list[dict], pods: list[dict], namespaces: list[str]) -> dict[tuple[str, str], str]:
    """nca's report: (source, destination) -> the connections allowed (absent: none)."""
    if not NCA.exists():
        pytest.fail(f"{NCA} is missing: run hack/nca-venv.sh (hack/components.sh runs it)")
    d = Path(tempfile.mkdtemp(prefix="llmfleet-nca-"))
    (d / "policies.yaml").write_text(yaml.safe_dump_all(policies or [{"apiVersion": "v1", "kind": "List"}]))
    (d / "pods.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "PodList", "items": pods}))
    ns = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}},
        }
        for n in namespaces
    ]
    (d / "ns.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "NamespaceList", "items": ns}))
    args = [
        "--pod_list",
        str(d / "pods.yaml"),
        "--ns_list",
        str(d / "ns.yaml"),
        "--output_format",
        "txt_no_fw_rules",
    ]
    r = subprocess.run(
        [str(NCA), "--connectivity", str(d / "policies.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out: dict[tuple[str, str], str] = {}
    for line in r.stdout.splitlines():
        if " => " in line and " : " in line:
            pair, conns = line.split(" : ", 1)
            src, dst = pair.split(" => ")
            out[(src.removesuffix("[Pod]"), dst.removesuffix("[Pod]"))] = conns
    assert out, r.stdout + r.stderr
    return out


def world(obj: Any) -> tuple[list[dict], list[dict], list[str], dict[str, list[str]]]:
    """The CR's policies and pods (one per Deployment), the probe pods, the namespaces, and pod names by role."""
    manifests = render_all(obj, size(obj.spec), cache_password="p")
    ns = obj.metadata.namespace
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    pods, roles = [], {"engine": [], "gateway": [], "cache": []}
    for m in manifests:
        if m["kind"] == "Deployment":
            labels = m["spec"]["template"]["metadata"]["labels"]
            pods.append(_pod(ns, m["metadata"]["name"], labels))
            roles[labels[COMPONENT_LABEL]].append(f"{ns}/{m['metadata']['name']}")
    for (pns, name), labels in PROBES.items():
        pods.append(_pod(pns or ns, name, labels))
        roles[name] = [f"{pns or ns}/{name}"]
    return policies, pods, [ns, *NAMESPACES], roles


def examples() -> list[Any]:
    return [parse_object(yaml.safe_load(p.read_text())) for p in EXAMPLES]


@pytest.mark.parametrize("obj", examples(), ids=lambda o: o.metadata.name)
def test_every_example_isolates_its_engines_and_cache_behind_the_gateway(obj) -> None:
    policies, pods, namespaces, roles = world(obj)
    report = connectivity(policies, pods, namespaces)
    everyone = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods] + list(OUTSIDE)
    (gateway,) = roles["gateway"]
    (prometheus,), (dns,) = roles["prometheus"], roles["coredns"]
    for engine in roles["engine"]:
        # Engines: the gateway and monitoring, on the engine port; nobody else, not even their own namespace.
        allowed = {src: conns for (src, dst), conns in report.items() if dst == engine}
        assert allowed == {gateway: tcp(8000), prometheus: tcp(8000)}, (engine, allowed)
    for cache in roles["cache"]:
        assert {src: c for (src, dst), c in report.items() if dst == cache} == {gateway: tcp(6379)}
        assert not [dst for (src, dst) in report if src == cache]  # the cache opens no connection
    # The gateway is the front door: anyone reaches it, on its port only (but the cache, which opens nothing).
    for src in everyone:
        if src != gateway and src not in roles["cache"]:
            assert report.get((src, gateway)) == tcp(8080), src
    # Its egress: engines, cache, DNS, and outside the cluster the API server and the providers, by port.
    out = {dst: c for (src, dst), c in report.items() if src == gateway}
    ext = obj.spec.gateway.external
    outside_ports = {443, 6443}
    if ext.use != "never" and ext.base_url:
        outside_ports.add(443 if ext.base_url.startswith("https") else 80)
    if obj.spec.cache.any_enabled and obj.spec.cache.redis.mode == "external":
        outside_ports.add(6379)
    expected = {e: tcp(8000) for e in roles["engine"]} | {c: tcp(6379) for c in roles["cache"]}
    expected |= {dns: DNS} | dict.fromkeys(OUTSIDE, tcp(*outside_ports))
    assert out == expected
    # Whatever the policies do not select keeps its connectivity: the probes still reach each other.
    assert report.get((roles["intruder"][0], roles["client"][0])) == ALL


def test_gateway_from_narrows_the_front_door_and_isolation_false_renders_nothing(minimal_obj: dict) -> None:
    minimal_obj["spec"]["network"] = {
        "gatewayFrom": [{"namespaceSelector": {"kubernetes.io/metadata.name": "other"}}]
    }
    policies, pods, namespaces, roles = world(parse_object(minimal_obj))
    report = connectivity(policies, pods, namespaces)
    (gateway,) = roles["gateway"]
    froms = {src for (src, dst) in report if dst == gateway}
    assert froms == {roles["client"][0], roles["prometheus"][0]}  # the allowed namespace, and monitoring
    minimal_obj["spec"]["network"] = {"isolation": False}
    policies, *_ = world(parse_object(minimal_obj))
    assert policies == []


def test_the_charts_operator_policy_opens_health_and_metrics_to_prometheus_and_reaches_api_dns_prometheus() -> (
    None
):
    helm = CACHE / "bin" / os.environ.get("K8S_VERSION", "v1.36.3") / "helm"
    docs = [
        d
        for d in yaml.safe_load_all(
            subprocess.run(
                [str(helm), "template", "llmfleet", str(ROOT / "charts/llmfleet"), "-n", "llmfleet-system"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        if d
    ]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    operator = "llmfleet-system/llmfleet"
    pods = [_pod("llmfleet-system", "llmfleet", deployment["spec"]["template"]["metadata"]["labels"])]
    pods += [_pod(ns or "other", name, labels) for (ns, name), labels in PROBES.items()]
    report = connectivity(policies, pods, ["llmfleet-system", *NAMESPACES])
    into = {src: c for (src, dst), c in report.items() if dst == operator}
    assert (
        into.pop("monitoring/prometheus") == "{protocols:TCP,dst_ports:8080-8081}"
    )  # /metrics: Prometheus only
    assert {src for src, c in into.items() if c != tcp(8081)} == set()
    assert {dst: c for (src, dst), c in report.items() if src == operator} == {
        "kube-system/coredns": DNS,
        "monitoring/prometheus": tcp(9090),
        **dict.fromkeys(OUTSIDE, tcp(443, 6443)),
    }


def test_a_route_opens_the_member_engines_to_the_front_gateway_and_to_nobody_else() -> None:
    """routed.yaml's gateway routes to llama3-8b's engines (llama3-8b.yaml): rendered together, the member's
    engines admit their own gateway, the front gateway and monitoring; the front gateway reaches both fleets."""
    front, member = (
        parse_object(yaml.safe_load((ROOT / "manifests/examples" / f).read_text()))
        for f in ("routed.yaml", "llama3-8b.yaml")
    )
    policies, pods, namespaces, roles = world(front)
    m_policies, m_pods, _, m_roles = world(member)
    probes = {p["metadata"]["name"] for p in pods if p["metadata"]["name"] in {n for _, n in PROBES}}
    pods += [p for p in m_pods if p["metadata"]["name"] not in probes]
    report = connectivity(policies + m_policies, pods, namespaces)
    (front_gw,), (member_gw,) = roles["gateway"], m_roles["gateway"]
    prometheus = roles["prometheus"][0]
    for engine in m_roles["engine"]:
        allowed = {src: c for (src, dst), c in report.items() if dst == engine}
        assert allowed == {member_gw: tcp(8000), front_gw: tcp(8000), prometheus: tcp(8000)}, allowed
    for engine in roles[
        "engine"
    ]:  # the route is one way: the member's gateway does not reach the front's engines
        allowed = {src: c for (src, dst), c in report.items() if dst == engine}
        assert allowed == {front_gw: tcp(8000), prometheus: tcp(8000)}, allowed
