"""Engine children: the spot and on-demand vLLM Deployments, the engine Service and its PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from llmfleet.api.quantity import parse_duration
from llmfleet.api.v1alpha1 import DEFAULT_ENGINE_IMAGE, Toleration
from llmfleet.fleet import names
from llmfleet.fleet.names import (
    CAPACITY_TYPE_LABEL,
    ENGINE_PORT,
    POOL_LABEL,
    SPEC_HASH_ANNOTATION,
    Pool,
    selector_labels,
)
from llmfleet.render.common import (
    Manifest,
    RenderInput,
    disruption_budget,
    metadata,
    restricted_container,
    restricted_pod,
    scrape_annotations,
    stable_hash,
)

COMPONENT = names.ENGINE

# vLLM's image runs as root; the engines run as this uid instead (restricted Pod Security), with every cache
# vLLM, Hugging Face, torch and Triton write under one emptyDir.
ENGINE_UID = 1000
ENGINE_CACHE_DIR = "/cache"
ENGINE_CACHE_ENV = (
    ("HOME", ENGINE_CACHE_DIR),
    ("XDG_CACHE_HOME", ENGINE_CACHE_DIR),
    ("HF_HOME", f"{ENGINE_CACHE_DIR}/huggingface"),
    ("VLLM_CACHE_ROOT", f"{ENGINE_CACHE_DIR}/vllm"),
    ("TRITON_CACHE_DIR", f"{ENGINE_CACHE_DIR}/triton"),
    ("USER", "vllm"),
)

PROBE_TIMEOUT_SECONDS = 5  # per /health probe of an engine (Kubernetes' default is 1 s)

# Taints cloud providers (and our dev cluster) put on spot nodes; the spot pool tolerates them all.
SPOT_TAINTS = (
    (CAPACITY_TYPE_LABEL, "spot"),
    ("cloud.google.com/gke-spot", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
)
# Labels that mark spot nodes on the common providers; spot replicas need one of them (or a spot nodeSelector).
SPOT_NODE_LABELS = (
    (CAPACITY_TYPE_LABEL, "spot"),
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
)


def vllm_options(inp: RenderInput) -> dict[str, Any]:
    """What the engine is told, by vLLM's own option names (argparse dests) and the values vLLM's parser
    should read from our flags; tests/integration/test_vllm_conformance.py parses the rendered flags with vLLM's
    own parser and compares the two."""
    spec = inp.obj.spec
    opts: dict[str, Any] = {
        "model": spec.model.name,
        "served_model_name": [inp.obj.served_name],
        "tensor_parallel_size": inp.sizing.tensor_parallel_size,
        "max_model_len": spec.model.max_model_len,
        "gpu_memory_utilization": float(f"{spec.engine.gpu_memory_utilization:g}"),
        "host": "0.0.0.0",
        "port": ENGINE_PORT,
        "shutdown_timeout": int(parse_duration(spec.engine.drain.shutdown_timeout)),
    }
    dtype = inp.sizing.dtype  # resolved for the GPU: spec.model.dtype may say auto
    if dtype in ("float16", "bfloat16"):
        opts["dtype"] = dtype
    elif dtype == "fp8":
        opts["quantization"] = "fp8"
    opts["enable_prefix_caching"] = spec.engine.enable_prefix_caching
    opts["enable_server_load_tracking"] = True  # GET /load: the gateway replicas' shared view of engine load
    tracing = spec.gateway.tracing
    if tracing.endpoint and tracing.engines:
        opts["otlp_traces_endpoint"] = otlp_traces_url(tracing.endpoint)
    return opts


def otlp_traces_url(endpoint: str) -> str:
    """The full OTLP/HTTP traces URL of a collector's base URL (vLLM passes the flag to the exporter as is)."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/v1/traces") else f"{url}/v1/traces"


def _flag(dest: str, value: Any) -> str:
    name = "--" + dest.replace("_", "-")
    if isinstance(value, bool):
        return name if value else f"--no-{name[2:]}"
    if isinstance(value, list):
        (value,) = value  # one value: the flag's list form
    return f"{name}={value}"


def vllm_args(inp: RenderInput) -> list[str]:
    return [_flag(d, v) for d, v in vllm_options(inp).items()] + list(inp.obj.spec.engine.extra_args)


def _toleration(t: Toleration) -> dict[str, Any]:
    return t.model_dump(by_alias=True, exclude_none=True)


def _resources(inp: RenderInput) -> dict[str, Any]:
    spec = inp.obj.spec
    tp = inp.sizing.tensor_parallel_size
    gpu = {spec.accelerator.resource_name: str(tp)}
    requests: dict[str, str] = {"cpu": str(4 * tp), "memory": f"{32 * tp}Gi"}
    limits: dict[str, str] = {"memory": f"{48 * tp}Gi"}
    if spec.engine.resources is not None:
        requests.update(spec.engine.resources.requests)
        limits.update(spec.engine.resources.limits)
    return {"requests": {**requests, **gpu}, "limits": {**limits, **gpu}}


def _affinity(inp: RenderInput, pool: Pool) -> dict[str, Any]:
    pod_labels = {**selector_labels(inp.name, COMPONENT)}
    affinity: dict[str, Any] = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": pod_labels},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }
    if pool == "spot":
        # Spot replicas run on spot nodes only: one that landed on an on-demand node would cost on-demand while
        # status counted it as spot. Short of spot capacity, they stay Pending and the on-demand pool's stand-ins
        # (pendingTimeout, fallbackToOnDemand) take over. A spot nodeSelector names the user's spot nodes instead.
        if not inp.obj.spec.pools.spot.node_selector:
            affinity["nodeAffinity"] = {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}
                        for key, value in SPOT_NODE_LABELS
                    ],
                }
            }
    else:
        # On-demand replicas must not land on spot nodes (they are the baseline that survives reclaims).
        affinity["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": key, "operator": "NotIn", "values": [value]}
                            for key, value in SPOT_NODE_LABELS
                        ]
                    }
                ]
            }
        }
    return affinity


def engine_deployment(inp: RenderInput, pool: Pool) -> Manifest:
    spec = inp.obj.spec
    pool_spec = spec.pools.spot if pool == "spot" else spec.pools.on_demand
    replicas = inp.counts.spot if pool == "spot" else inp.counts.on_demand
    name = names.engine_deployment(inp.name, pool)
    pod_labels = {**selector_labels(inp.name, COMPONENT), POOL_LABEL: pool}
    drain = spec.engine.drain
    tolerations = [{"key": spec.accelerator.resource_name, "operator": "Exists", "effect": "NoSchedule"}]
    if pool == "spot":
        tolerations += [
            {"key": k, "operator": "Equal", "value": v, "effect": "NoSchedule"} for k, v in SPOT_TAINTS
        ]
    tolerations += [_toleration(t) for t in pool_spec.tolerations]

    container: dict[str, Any] = {
        "name": "vllm",
        "image": inp.options.engine_image or spec.engine.image or DEFAULT_ENGINE_IMAGE,
        "args": vllm_args(inp),
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        # Non-root (restricted Pod Security): caches on a writable volume, and a user name for getpass (the image
        # has no passwd entry for the uid; torch's compile cache asks for one). The user's own env comes last.
        "env": [
            *({"name": k, "value": v} for k, v in ENGINE_CACHE_ENV),
            # vLLM's OTLP exporter speaks gRPC unless told otherwise; the gateway's collector endpoint is HTTP.
            *(
                [{"name": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "value": "http/protobuf"}]
                if "otlp_traces_endpoint" in vllm_options(inp)
                else []
            ),
            *(e.model_dump(by_alias=True, exclude_none=True) for e in spec.engine.env),
        ],
        "resources": _resources(inp),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": ENGINE_CACHE_DIR},
        ],
        # vLLM writes to its caches, /tmp and /dev/shm: the root filesystem stays writable.
        "securityContext": restricted_container(read_only_root=False),
        # Kubernetes' 1 s default probe timeout is shorter than a loaded vLLM's /health can take (its event loop
        # is busy detokenizing hundreds of streams): readiness would flap and liveness restart a working engine.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "periodSeconds": 10,
            "failureThreshold": 360,  # weights may take up to an hour to load
        },
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": int(parse_duration(drain.pre_stop_sleep))}}},
    }
    if inp.options.engine_command:
        container["command"] = list(inp.options.engine_command)
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": drain.grace_period_seconds,
        "securityContext": restricted_pod(ENGINE_UID),
        "volumes": [
            {
                "name": "dshm",
                "emptyDir": {"medium": "Memory", "sizeLimit": f"{8 * inp.sizing.tensor_parallel_size}Gi"},
            },
            {"name": "cache", "emptyDir": {}},  # Hugging Face downloads, torch.compile and Triton caches
        ],
        "nodeSelector": dict(pool_spec.node_selector),
        "tolerations": tolerations,
        "affinity": _affinity(inp, pool),
    }
    if not pod_spec["nodeSelector"]:
        del pod_spec["nodeSelector"]
    template = {
        "metadata": {"labels": pod_labels, "annotations": scrape_annotations(ENGINE_PORT)},
        "spec": pod_spec,
    }
    meta = metadata(inp, name, COMPONENT, {POOL_LABEL: pool})
    meta["annotations"] = {SPEC_HASH_ANNOTATION: stable_hash(template)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            # Surge one GPU replica, never take a serving one down first: replicas take minutes to start.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": 3600,
            "template": template,
        },
    }


def engine_deployments(inp: RenderInput) -> list[Manifest]:
    out = [engine_deployment(inp, "on-demand")]
    if inp.obj.spec.pools.spot.enabled:
        out.append(engine_deployment(inp, "spot"))
    return out


def engine_service(inp: RenderInput) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(inp, names.engine_service(inp.name), COMPONENT),
        "spec": {
            "selector": selector_labels(inp.name, COMPONENT),
            "ports": [{"name": "http", "port": ENGINE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def engine_pdb(inp: RenderInput) -> Manifest:
    return disruption_budget(inp, names.engine_service(inp.name), COMPONENT)
