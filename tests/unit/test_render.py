"""Renderers: the children of an LLMDeployment, checked field by field and against the Kubernetes schema."""

from __future__ import annotations

import kubernetes_validate
import pytest

from llmfleet.api.load import load_documents, parse_object
from llmfleet.api.sizing import size
from llmfleet.fleet.names import DEPLOYMENT_LABEL, MANAGED_BY
from llmfleet.fleet.pools import PoolCounts, split_replicas
from llmfleet.render import RenderOptions, render_all
from tests.conftest import EXAMPLES

K8S_SCHEMA_VERSION = "1.36"


def by_name(manifests: list[dict]) -> dict[str, dict]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def render(obj: dict, counts: PoolCounts | None = None) -> dict[str, dict]:
    parsed = parse_object(obj)
    return by_name(render_all(parsed, size(parsed.spec), counts))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_renders_schema_valid_objects(path) -> None:
    for obj in load_documents(path.read_text(), str(path)):
        manifests = render_all(obj, size(obj.spec))
        assert len(manifests) >= 10
        for m in manifests:
            kubernetes_validate.validate(m, K8S_SCHEMA_VERSION, strict=True)
            assert m["metadata"]["labels"][MANAGED_BY] == "llmfleet"
            assert m["metadata"]["labels"][DEPLOYMENT_LABEL] == obj.metadata.name


def test_engine_deployments_carry_vllm_args_gpus_probes_and_drain(minimal_obj: dict) -> None:
    minimal_obj["spec"]["model"].update(name="meta-llama/Meta-Llama-3-70B-Instruct", servedName="l70")
    minimal_obj["spec"]["engine"] = {"extraArgs": ["--max-num-seqs=64"]}
    out = render(minimal_obj, PoolCounts(on_demand=1, spot=3))
    od, spot = out["Deployment/demo-engine-ondemand"], out["Deployment/demo-engine-spot"]
    assert (od["spec"]["replicas"], spot["spec"]["replicas"]) == (1, 3)
    c = od["spec"]["template"]["spec"]["containers"][0]
    assert "--model=meta-llama/Meta-Llama-3-70B-Instruct" in c["args"]
    assert "--served-model-name=l70" in c["args"]
    assert "--tensor-parallel-size=4" in c["args"]
    assert "--enable-prefix-caching" in c["args"]
    assert "--shutdown-timeout=45" in c["args"]
    assert c["args"][-1] == "--max-num-seqs=64"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == 15
    pod = od["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 15 + 45
    assert pod["terminationGracePeriodSeconds"] <= 120
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in pod["volumes"]
    assert od["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_spot_pool_tolerates_spot_taints_and_on_demand_avoids_spot_nodes(minimal_obj: dict) -> None:
    minimal_obj["spec"]["pools"] = {"spot": {"nodeSelector": {"pool": "gpu-spot"}}}
    out = render(minimal_obj)
    spot = out["Deployment/demo-engine-spot"]["spec"]["template"]["spec"]
    od = out["Deployment/demo-engine-ondemand"]["spec"]["template"]["spec"]
    assert {
        "key": "llmfleet.io/capacity-type",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    } in spot["tolerations"]
    assert spot["nodeSelector"] == {"pool": "gpu-spot"}
    assert "nodeAffinity" not in spot["affinity"]  # the user's spot nodeSelector says where spot is
    assert not any(t.get("value") == "spot" for t in od["tolerations"])
    required = od["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert {"key": "llmfleet.io/capacity-type", "operator": "NotIn", "values": ["spot"]} in required[
        "nodeSelectorTerms"
    ][0]["matchExpressions"]


def test_spot_replicas_need_a_spot_node_by_any_providers_label(minimal_obj: dict) -> None:
    spot = render(minimal_obj)["Deployment/demo-engine-spot"]["spec"]["template"]["spec"]
    terms = spot["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    # Terms are ORed: a node with any one provider's spot label will do; no on-demand node will.
    assert {"key": "llmfleet.io/capacity-type", "operator": "In", "values": ["spot"]} in [
        t["matchExpressions"][0] for t in terms
    ]
    assert {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]} in [
        t["matchExpressions"][0] for t in terms
    ]
    assert all(len(t["matchExpressions"]) == 1 for t in terms)


def test_spot_disabled_renders_no_spot_deployment(minimal_obj: dict) -> None:
    minimal_obj["spec"]["pools"] = {"spot": {"enabled": False}}
    assert "Deployment/demo-engine-spot" not in render(minimal_obj)


def test_owner_reference_points_at_the_cr(minimal_obj: dict) -> None:
    for m in render(minimal_obj).values():
        (ref,) = m["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "LLMDeployment",
            "demo",
            "1234",
            True,
        )


def test_every_replicated_workload_has_a_budget_that_never_blocks_a_drain(minimal_obj: dict) -> None:
    objs = list(render(minimal_obj).values())
    pdbs = [m for m in objs if m["kind"] == "PodDisruptionBudget"]
    for d in (m for m in objs if m["kind"] == "Deployment" and "cache" not in m["metadata"]["name"]):
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()]
        assert len(covering) == 1, (d["metadata"]["name"], covering)
        # a pod that is not Ready may be evicted whatever the budget says (a stuck pod cannot block a drain)
        assert covering[0]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        assert covering[0]["spec"]["maxUnavailable"] == 1


def test_managed_cache_is_redis_with_lru_and_external_renders_none(minimal_obj: dict) -> None:
    out = render(minimal_obj)
    redis = out["Deployment/demo-cache"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["image"] == "redis:8"
    assert redis["args"][redis["args"].index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert "Service/demo-cache" in out
    minimal_obj["spec"]["cache"] = {"redis": {"mode": "external", "url": "redis://r:6379"}}
    out = render(minimal_obj)
    assert "Deployment/demo-cache" not in out and "Service/demo-cache" not in out
    assert '"redisURL": "redis://r:6379"' in out["ConfigMap/demo-gateway"]["data"]["gateway.json"]


def test_gateway_gets_config_keys_secret_and_endpointslice_rbac(minimal_obj: dict) -> None:
    minimal_obj["spec"]["gateway"] = {
        "auth": {"apiKeysSecretRef": "keys"},
        "external": {
            "baseURL": "https://api.example/v1",
            "model": "m",
            "apiKeySecretRef": "ext",
            "use": "overflow",
        },
    }
    out = render(minimal_obj)
    dep = out["Deployment/demo-gateway"]["spec"]["template"]
    assert {"name": "keys", "secret": {"secretName": "keys"}} in dep["spec"]["volumes"]
    env = {e["name"]: e for e in dep["spec"]["containers"][0]["env"]}
    assert env["LLMFLEET_EXTERNAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "ext", "key": "apiKey"}
    assert out["Role/demo-gateway"]["rules"][0]["resources"] == ["endpointslices"]
    assert out["RoleBinding/demo-gateway"]["subjects"][0]["name"] == "demo-gateway"
    # A rollout adds one gateway, waits until it has been ready a while, then retires one: never fewer.
    spec = out["Deployment/demo-gateway"]["spec"]
    assert (
        spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        and spec["minReadySeconds"] == 5
    )


def test_config_change_changes_gateway_pod_template(minimal_obj: dict) -> None:
    a = render(minimal_obj)["Deployment/demo-gateway"]["spec"]["template"]["metadata"]["annotations"]
    minimal_obj["spec"]["gateway"] = {"limits": {"requestsPerMinute": 5}}
    b = render(minimal_obj)["Deployment/demo-gateway"]["spec"]["template"]["metadata"]["annotations"]
    assert a != b


def test_rendering_is_deterministic(minimal_obj: dict) -> None:
    assert render(minimal_obj) == render(minimal_obj)


def test_options_override_images_and_engine_command(minimal_obj: dict) -> None:
    parsed = parse_object(minimal_obj)
    out = by_name(
        render_all(
            parsed,
            size(parsed.spec),
            options=RenderOptions(
                llmfleet_image="local/llmfleet:dev",
                engine_image="local/llmfleet:dev",
                engine_command=("llmfleet", "engine-sim"),
            ),
        )
    )
    eng = out["Deployment/demo-engine-ondemand"]["spec"]["template"]["spec"]["containers"][0]
    assert eng["image"] == "local/llmfleet:dev" and eng["command"] == ["llmfleet", "engine-sim"]
    assert (
        out["Deployment/demo-gateway"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "local/llmfleet:dev"
    )


@pytest.mark.parametrize(
    ("od_min", "od_max", "spot_max", "spot_on", "total", "expected"),
    [
        (1, 4, 8, True, 1, (1, 0)),
        (1, 4, 8, True, 5, (1, 4)),
        (1, 4, 8, True, 12, (4, 8)),
        (1, 4, 8, True, 20, (4, 8)),  # clamped to capacity
        (2, 4, 8, True, 1, (1, 0)),
        (1, 4, 2, True, 5, (3, 2)),  # spot first, on-demand takes the rest
        (1, 4, 8, False, 3, (3, 0)),
        (0, 4, 8, True, 0, (0, 0)),
    ],
)
def test_split_replicas_puts_baseline_on_demand_then_spot_first(
    od_min, od_max, spot_max, spot_on, total, expected, minimal_obj
) -> None:
    minimal_obj["spec"]["pools"] = {
        "onDemand": {"minReplicas": od_min, "maxReplicas": od_max},
        "spot": {"enabled": spot_on, "maxReplicas": spot_max},
    }
    counts = split_replicas(parse_object(minimal_obj).spec, total)
    assert (counts.on_demand, counts.spot) == expected


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_rendered_gateway_config_round_trips_through_the_gateways_own_model(path) -> None:
    """The gateway refuses unknown keys: what the operator renders must be exactly what the gateway reads."""
    import json

    from llmfleet.gateway.config import GatewayConfig
    from llmfleet.render.gateway import CONFIG_KEY

    for obj in load_documents(path.read_text(), str(path)):
        cm = by_name(render_all(obj, size(obj.spec)))[f"ConfigMap/{obj.metadata.name}-gateway"]
        rendered = json.loads(cm["data"][CONFIG_KEY])
        cfg = GatewayConfig.model_validate(rendered)
        assert cfg.model_dump(by_alias=True, exclude_unset=True) == rendered
        assert cfg.sensitivity.key_policy == dict(obj.spec.gateway.sensitivity.key_policy)
        assert cfg.cache.semantic.max_false_hit_rate == obj.spec.cache.semantic.max_false_hit_rate


def test_gateway_config_refuses_unknown_keys() -> None:
    from pydantic import ValidationError

    from llmfleet.gateway.config import GatewayConfig

    with pytest.raises(ValidationError, match="sensitivty"):
        GatewayConfig.model_validate({"model": "m", "sensitivty": {"default": "general"}})


def test_every_probe_waits_longer_than_kubernetes_one_second_default(minimal_obj: dict) -> None:
    """A loaded vLLM answers /health slower than 1 s: a default timeout flaps readiness and restarts engines."""
    probes = [
        (f"{key} {c['name']} {kind}", probe)
        for key, m in render(minimal_obj).items()
        if m["kind"] == "Deployment"
        for c in m["spec"]["template"]["spec"]["containers"]
        for kind, probe in c.items()
        if kind.endswith("Probe")
    ]
    assert len(probes) >= 8  # engine (3 probes x 2 pools), gateway and cache
    assert all(probe.get("timeoutSeconds", 1) >= 3 for _, probe in probes), probes


def test_a_t4_deployment_renders_float16(minimal_obj: dict) -> None:
    """T4 has no bfloat16 (compute capability 7.5): the default dtype (auto) renders what vLLM accepts there."""
    minimal_obj["spec"]["accelerator"] = {"type": "T4-16GB"}
    minimal_obj["spec"]["model"] = {"name": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 4096}
    args = render(minimal_obj)["Deployment/demo-engine-ondemand"]["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert "--dtype=float16" in args and "--dtype=bfloat16" not in args


def test_the_default_engine_image_is_chosen_when_rendering_not_stored_in_the_cr(minimal_obj: dict) -> None:
    """A schema default would freeze the image into every CR at creation; an operator upgrade must move them."""
    from llmfleet.api.crd import crd
    from llmfleet.api.v1alpha1 import DEFAULT_ENGINE_IMAGE, TESTED_VLLM_VERSION

    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "default" not in schema["properties"]["spec"]["properties"]["engine"]["properties"]["image"]
    c = render(minimal_obj)["Deployment/demo-engine-ondemand"]["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == DEFAULT_ENGINE_IMAGE == f"vllm/vllm-openai:v{TESTED_VLLM_VERSION}"
    minimal_obj["spec"]["engine"] = {"image": "vllm/vllm-openai:v0.30.0"}
    c = render(minimal_obj)["Deployment/demo-engine-ondemand"]["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "vllm/vllm-openai:v0.30.0"


def test_gateway_autoscaling_renders_a_cpu_hpa_and_leaves_the_replica_count_to_it(minimal_obj: dict) -> None:
    fixed = render(minimal_obj)
    assert fixed["Deployment/demo-gateway"]["spec"]["replicas"] == 2
    assert "HorizontalPodAutoscaler/demo-gateway" not in fixed
    minimal_obj["spec"]["gateway"] = {"autoscaling": {"minReplicas": 3, "maxReplicas": 12}}
    out = render(minimal_obj)
    hpa = out["HorizontalPodAutoscaler/demo-gateway"]
    kubernetes_validate.validate(hpa, K8S_SCHEMA_VERSION, strict=True)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "demo-gateway"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 70,
    }
    assert "replicas" not in out["Deployment/demo-gateway"]["spec"]
    assert "PodDisruptionBudget/demo-gateway" in out
    minimal_obj["spec"]["gateway"] = {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}
    with pytest.raises(Exception, match="minReplicas must be <= maxReplicas"):
        render(minimal_obj)


def test_engines_track_their_server_load_and_gateways_poll_it(minimal_obj: dict) -> None:
    import json

    out = render(minimal_obj)
    args = out["Deployment/demo-engine-ondemand"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable-server-load-tracking" in args
    cfg = json.loads(out["ConfigMap/demo-gateway"]["data"]["gateway.json"])
    assert cfg["engines"]["loadPollSeconds"] == 0.25
