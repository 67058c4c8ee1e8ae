"""The LLMDeployment API (llmfleet.io/v1alpha1): spec and status models; the CRD is generated from them.

Every field carries a description (it becomes ``kubectl explain`` text). Cross-field rules live here
twice on purpose: as pydantic validators (the operator and CLI re-validate) and as CEL rules in
``x-kubernetes-validations`` (so ``kubectl apply`` rejects a bad spec before it is stored).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from llmfleet import __version__
from llmfleet.api import vllm_flags
from llmfleet.api.quantity import Duration, Quantity, parse_duration

GROUP = "llmfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LLMDeployment"
PLURAL = "llmdeployments"
SINGULAR = "llmdeployment"
SHORT_NAMES = ["llmd"]

# The vLLM release engine-sim and the renderer are checked against (flags, SIGTERM, metrics, API shapes), and the
# image a CR without spec.engine.image runs. Resolved when rendering, never stored in the CR: an operator
# upgrade moves such CRs to the release it was tested with.
TESTED_VLLM_VERSION = "0.33.0"
DEFAULT_ENGINE_IMAGE = f"vllm/vllm-openai:v{TESTED_VLLM_VERSION}"
DEFAULT_LLMFLEET_IMAGE = f"ghcr.io/llmfleet/llmfleet:{__version__}"
DEFAULT_REDIS_IMAGE = "redis:8"
SPOT_NOTICE_SECONDS = 120.0

# The spec field each vLLM option the operator renders comes from (the option strings: api/vllm_flags.py).
OWNED_FROM = {
    "model_tag": "spec.model.name",
    "model": "spec.model.name",
    "served_model_name": "spec.model.servedName",
    "tensor_parallel_size": "spec.engine.tensorParallelSize",
    "max_model_len": "spec.model.maxModelLen",
    "enable_prefix_caching": "spec.engine.enablePrefixCaching",
    "gpu_memory_utilization": "spec.engine.gpuMemoryUtilization",
    "port": "the operator (the pod's port)",
    "host": "the operator (the pod's address)",
    "dtype": "spec.model.dtype",
    "quantization": "spec.model.dtype",
    "shutdown_timeout": "spec.engine.drain.shutdownTimeout",
    "enable_server_load_tracking": "the operator (the gateways read the engines' /load)",
}
OWNED_ENGINE_FLAGS = tuple(sorted({f for fs in vllm_flags.OWNED.values() for f in fs if f.startswith("-")}))
BREAKING_ENGINE_FLAGS = tuple(sorted({f for fs, _ in vllm_flags.BREAKING.values() for f in fs}))


def _flag_name(arg: str) -> str:
    """The option an extraArgs entry names, as vLLM's FlexibleArgumentParser reads it: before any '=', underscores
    as dashes, a dotted JSON sub-key (--opt.key=v) cut off."""
    name = arg.split("=", 1)[0]
    return "--" + name[2:].replace("_", "-").split(".", 1)[0] if name.startswith("--") else name


def _takes(name: str, option: str) -> bool:
    """Whether argparse (allow_abbrev, as vLLM leaves it) takes ``name`` as ``option``: a long option by any
    prefix of it; a short one (-tp) also with its value glued on (-tp2)."""
    if option.startswith("--"):
        return len(name) > 2 and option.startswith(name)
    return name.startswith(option)


def extra_arg_problem(arg: str) -> str | None:
    """Why vLLM would take this extraArgs entry as a flag the operator owns, or as one that breaks the pod or the
    gateway; None when it is fine."""
    if not arg.startswith("-"):
        return (
            f"{arg!r} is not a flag: vLLM takes a bare word as the model to serve; give each flag with its value "
            "after '=' (--flag=value)"
        )
    if "." in arg.split("=", 1)[0]:
        # vLLM's parser rewrites --opt.key=v into --opt '{"key": v}'; after a flag that takes no value that JSON
        # becomes the positional model to serve (found by vLLM's own parser: tests/integration/
        # test_vllm_conformance.py).
        return (
            f"{arg!r} uses a dotted key, which vLLM turns into a separate argument that it can read as the model "
            'to serve; give the whole value as JSON instead: --flag={"key": value}'
        )
    name = _flag_name(arg)
    for dest, options in vllm_flags.OWNED.items():
        hit = next((o for o in options if o.startswith("-") and _takes(name, o)), None)
        if hit:
            return f"{arg!r} is vLLM's {hit}, which the operator sets from {OWNED_FROM[dest]}"
    for options, why in vllm_flags.BREAKING.values():
        hit = next((o for o in options if _takes(name, o)), None)
        if hit:
            return f"{arg!r} is vLLM's {hit}, which {why}"
    return None


# The same rule for the API server (CEL, strings extension): the entry's option name, then any owned or breaking
# option it would be taken as.
_CEL_OPTIONS = "[" + ", ".join(f"'{o}'" for o in (*OWNED_ENGINE_FLAGS, *BREAKING_ENGINE_FLAGS)) + "]"
_CEL_EXTRA_ARGS = (
    "!has(self.extraArgs) || (self.extraArgs.all(a, a.startsWith('-') && !a.split('=')[0].contains('.')) && "
    "self.extraArgs.map(a, "
    "a.split('=')[0].startsWith('--') ? '--' + a.split('=')[0].substring(2).replace('_', '-').split('.')[0] "
    ": a.split('=')[0]).all(n, "
    f"!{_CEL_OPTIONS}.exists(o, o.startsWith('--') ? (size(n) > 2 && o.startsWith(n)) : n.startsWith(o))))"
)


def cel(rule: str, message: str, field_path: str | None = None) -> Any:
    """One x-kubernetes-validations rule."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class Model(BaseModel):
    """Base for spec objects: camelCase on the wire, unknown fields rejected, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# ---------------------------------------------------------------- model


class Architecture(Model):
    layers: int = Field(ge=1, le=1024, description="Number of transformer layers (num_hidden_layers).")
    hidden_size: int = Field(ge=64, description="Hidden size (hidden_size).")
    attention_heads: int = Field(
        ge=1, description="Attention heads (num_attention_heads); TP must divide it."
    )
    kv_heads: int | None = Field(
        default=None,
        ge=1,
        description="Key/value heads (num_key_value_heads); equals attentionHeads without GQA.",
    )
    head_dim: int | None = Field(
        default=None, ge=1, description="Dimension per head; defaults to hiddenSize / attentionHeads."
    )
    max_position_embeddings: int | None = Field(
        default=None,
        ge=256,
        description="Longest context the model takes (max_position_embeddings): maxModelLen "
        "must not exceed it.",
    )


class ModelSpec(Model):
    name: str = Field(
        min_length=1,
        max_length=512,
        description="Model source: a Hugging Face id (org/name), s3://bucket/path or pvc://claim/path.",
    )
    served_name: str | None = Field(
        default=None,
        max_length=253,
        description="Name clients send as `model` in API calls. Defaults to the LLMDeployment's name.",
    )
    parameters: float | None = Field(
        default=None,
        gt=0,
        description="Parameter count (e.g. 8.03e9). Optional for a catalog model; required with `architecture`.",
    )
    architecture: Architecture | None = Field(
        default=None, description="Shape of a model that is not in the catalog, from its config.json."
    )
    dtype: Literal["auto", "float16", "bfloat16", "fp8", "int8", "int4"] = Field(
        default="auto",
        description="Weight precision. auto: bfloat16 where the GPU has it (compute capability >= 8.0), else float16. "
        "int8/int4 mean a pre-quantized (AWQ/GPTQ) checkpoint; fp8 quantizes at load.",
    )
    max_model_len: int = Field(
        default=8192,
        ge=256,
        le=2_097_152,
        description="Context length in tokens (prompt + output) per sequence.",
    )


# ---------------------------------------------------------------- engine


class EnvVar(Model):
    name: str = Field(min_length=1, description="Environment variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="Source of the value (secretKeyRef, configMapKeyRef, fieldRef), as in a Pod spec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class Resources(Model):
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Resource requests (cpu, memory)."
    )
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Resource limits (cpu, memory).")


class Drain(Model):
    pre_stop_sleep: Duration = Field(
        default="15s",
        description="Sleep in preStop so endpoints drop the pod before the engine stops accepting.",
    )
    shutdown_timeout: Duration = Field(
        default="45s",
        description="vLLM --shutdown-timeout: how long in-flight requests may finish after SIGTERM (vLLM >= 0.18).",
    )

    @property
    def grace_period_seconds(self) -> int:
        """terminationGracePeriodSeconds: strictly longer than preStop sleep plus shutdown timeout."""
        return int(parse_duration(self.pre_stop_sleep) + parse_duration(self.shutdown_timeout)) + 5


class EngineSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _CEL_EXTRA_ARGS,
                    "extraArgs: one flag per entry, its value after '=' (--flag=value), no dotted keys (give JSON: "
                    '--flag={"key": value}); none of the flags the operator '
                    f"owns, in any spelling vLLM {vllm_flags.VLLM_VERSION} accepts ("
                    + ", ".join(OWNED_ENGINE_FLAGS)
                    + "): use the spec field; none that break the pod or the gateway ("
                    + ", ".join(BREAKING_ENGINE_FLAGS)
                    + ")",
                    ".extraArgs",
                ),
            ]
        }
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description="vLLM OpenAI server image. Unset: the release this operator was "
        f"tested with (now {DEFAULT_ENGINE_IMAGE}), chosen when rendering, so an operator upgrade moves it too.",
    )
    tensor_parallel_size: Literal["auto", 1, 2, 4, 8] = Field(
        default="auto",
        description="GPUs per replica: auto (smallest that fits model, context and KV cache) or 1, 2, 4, 8.",
    )
    enable_prefix_caching: bool = Field(
        default=True, description="Reuse KV cache across requests that share a prompt prefix (vLLM APC)."
    )
    gpu_memory_utilization: float = Field(
        default=0.90,
        gt=0.1,
        le=0.98,
        description="Share of each GPU's memory vLLM may use (weights + KV cache).",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="More vLLM flags, one per entry with its value after '=' (--max-num-seqs=128). Flags the "
        "operator owns (model, TP, port, …) in any spelling vLLM accepts, and flags that break the pod, are rejected.",
        json_schema_extra={"items": {"type": "string", "maxLength": 1024}},
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment, e.g. HF_TOKEN."
    )
    resources: Resources | None = Field(
        default=None, description="CPU/memory for each engine pod; GPUs come from TP. Defaults scale with TP."
    )
    drain: Drain = Field(
        default_factory=Drain, description="Graceful shutdown so no in-flight request is dropped."
    )

    @model_validator(mode="after")
    def _no_owned_flags(self) -> EngineSpec:
        for i, arg in enumerate(self.extra_args):
            problem = extra_arg_problem(arg)
            if problem:
                raise ValueError(f"extraArgs[{i}] {problem}")
        return self


# ---------------------------------------------------------------- accelerator and pools


class Pricing(Model):
    on_demand_per_gpu_hour: float | None = Field(
        default=None, ge=0, description="USD per GPU-hour, on-demand."
    )
    spot_per_gpu_hour: float | None = Field(default=None, ge=0, description="USD per GPU-hour, spot.")


class AcceleratorSpec(Model):
    type: str = Field(
        default="H100-80GB",
        description="GPU type from the catalog: H100-80GB, H200-141GB, A100-80GB, A100-40GB, L40S-48GB, "
        "L4-24GB, A10G-24GB, T4-16GB (or any name with memoryGiB and pricing).",
    )
    resource_name: str = Field(
        default="nvidia.com/gpu", description="Extended resource that schedules the GPUs."
    )
    gpus_per_node: Literal[1, 2, 4, 8, 16] = Field(default=8, description="GPUs on one node: the TP ceiling.")
    memory_gi_b: float | None = Field(
        default=None, alias="memoryGiB", gt=0, description="GPU memory in GiB, for a type not in the catalog."
    )
    pricing: Pricing | None = Field(default=None, description="Override the catalog's prices.")


class Toleration(Model):
    key: str | None = Field(default=None, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty means all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class OnDemandPool(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be <= maxReplicas",
                    ".minReplicas",
                )
            ]
        }
    )
    min_replicas: int = Field(
        default=1, ge=0, le=1000, description="Baseline replicas that never run on spot."
    )
    max_replicas: int = Field(
        default=4, ge=0, le=1000, description="Most on-demand replicas (fallback included)."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels for this pool.")
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Extra tolerations for this pool."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> OnDemandPool:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


class SpotPool(Model):
    enabled: bool = Field(default=True, description="Run replicas on spot/preemptible GPUs (60-80% cheaper).")
    max_replicas: int = Field(default=8, ge=0, le=1000, description="Most spot replicas.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels for this pool.")
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Extra tolerations; the common spot taints (llmfleet.io/capacity-type, GKE, AKS) are tolerated already.",
    )
    fallback_to_on_demand: bool = Field(
        default=True,
        description="When spot replicas stay Pending past pendingTimeout, run on-demand instead.",
    )
    pending_timeout: Duration = Field(default="5m", description="How long a spot replica may stay Pending.")


class Pools(Model):
    on_demand: OnDemandPool = Field(
        default_factory=OnDemandPool, description="On-demand pool: baseline and fallback."
    )
    spot: SpotPool = Field(default_factory=SpotPool, description="Spot pool: cheap capacity that can vanish.")


# ---------------------------------------------------------------- autoscaling


class ScaleToZero(Model):
    enabled: bool = Field(default=False, description="Scale every pool to zero when idle.")
    idle_after: Duration = Field(default="30m", description="Idle time before scaling to zero.")


class PrometheusRef(Model):
    url: str = Field(default="http://prometheus.monitoring:9090", description="Prometheus base URL.")


Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEEKDAYS: tuple[Weekday, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
START_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
CLOCK_PATTERN = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


class Schedule(Model):
    """Replica bounds for a predictable daily peak (or night): from ``start`` to ``end`` on ``days``, local time
    in ``timeZone``. An ``end`` at or before ``start`` runs past midnight into the next day."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                    "minReplicas must be <= maxReplicas",
                    ".minReplicas",
                ),
                cel(
                    "has(self.minReplicas) || has(self.maxReplicas)",
                    "a schedule sets minReplicas, maxReplicas or both",
                ),
            ]
        }
    )
    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Named in status.",
    )
    time_zone: str = Field(
        default="UTC", max_length=64, description="IANA time zone of start and end, e.g. Europe/Berlin."
    )
    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS),
        min_length=1,
        max_length=7,
        description="Weekdays the window starts on (Mon..Sun); all by default.",
    )
    start: str = Field(pattern=START_PATTERN, description="Local start time, HH:MM.")
    end: str = Field(pattern=CLOCK_PATTERN, description="Local end time, HH:MM (24:00: midnight).")
    min_replicas: int | None = Field(
        default=None, ge=0, le=2000, description="Fewest replicas while the window is open."
    )
    max_replicas: int | None = Field(
        default=None, ge=0, le=2000, description="Most replicas while the window is open."
    )

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: an IANA name such as Europe/Berlin or UTC") from None
        return v

    @model_validator(mode="after")
    def _bounds(self) -> Schedule:
        if self.min_replicas is None and self.max_replicas is None:
            raise ValueError("a schedule sets minReplicas, maxReplicas or both")
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.min_replicas > self.max_replicas
        ):
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


class AutoscalingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be <= maxReplicas",
                    ".minReplicas",
                )
            ]
        }
    )
    enabled: bool = Field(default=True, description="Scale on queue depth and TTFT; off means spec.replicas.")
    min_replicas: int = Field(default=1, ge=0, le=2000, description="Fewest replicas across both pools.")
    max_replicas: int = Field(default=12, ge=0, le=2000, description="Most replicas across both pools.")
    target_queue_depth_per_replica: float = Field(
        default=4, gt=0, description="Waiting requests per replica (vllm:num_requests_waiting) to scale at."
    )
    ttft_p95_target: Duration = Field(default="500ms", description="Scale up when TTFT p95 exceeds this.")
    scale_up_window: Duration = Field(default="30s", description="Stabilisation window before scaling up.")
    scale_down_window: Duration = Field(default="5m", description="Stabilisation window before scaling down.")
    ttft_attainment_target: float = Field(
        default=0.99,
        ge=0.5,
        le=1.0,
        description="Share of first tokens that must come within ttftP95Target, held over the last hour: while "
        "the last minute's share is below it the fleet does not shrink, and grows once the last hour has spent "
        "more than 80 % of its error budget (1 - ttftAttainmentTarget). The SLO the autoscaler holds, bursts "
        "included; lower it to trade latency for cost.",
    )
    headroom: float = Field(
        default=0.0,
        ge=0.0,
        le=4.0,
        description="Extra capacity kept above the token load, as a share of it (0.3: 30 %): the cost/SLO knob. "
        "More headroom meets more first tokens during bursts shorter than a cold start, at a higher cost.",
    )
    load_memory: Duration = Field(
        default="15m",
        description="How long the fleet remembers what load and latency asked for: it shrinks only to the "
        "highest recommendation of the last max(scaleDownWindow, loadMemory), so bursts that recur within it "
        "(shorter than a cold start) find their replicas still warm. It holds only while the last hour spent "
        "more than 80 % of its error budget (1 - ttftAttainmentTarget): a fleet well inside its SLO shrinks "
        "after scaleDownWindow. Lower it to save cost on steady traffic.",
    )
    scale_to_zero: ScaleToZero = Field(default_factory=ScaleToZero, description="Scale-to-zero when idle.")
    schedules: list[Schedule] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Replica bounds for predictable daily peaks (AIBrix and KEDA's cron scaler have them): while "
        "a schedule's window is open its minReplicas and maxReplicas replace the ones above (overlapping "
        "windows: the highest of each). The autoscaler still scales inside them.",
    )
    prometheus: PrometheusRef = Field(default_factory=PrometheusRef, description="Where metrics are read.")

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingSpec:
        names = [s.name for s in self.schedules]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"schedules: the name {dup!r} is used twice")
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


# ---------------------------------------------------------------- cache


class SecretKeyRef(Model):
    name: str = Field(min_length=1, description="Secret name (same namespace).")
    key: str = Field(default="url", description="Key in the Secret.")


class ExactCache(Model):
    enabled: bool = Field(default=True, description="Serve identical requests from the cache.")
    ttl: Duration = Field(default="1h", description="How long an entry lives.")
    replay: Literal["deterministic", "always"] = Field(
        default="deterministic",
        description="deterministic: cache only temperature 0 (or requests that opt in); always: cache every request.",
    )


class Embedding(Model):
    model: str = Field(default="all-MiniLM-L6-v2", description="Sentence-embedding model run by the gateway.")
    threads: int = Field(
        default=2,
        ge=1,
        le=16,
        description="CPU threads one query embedding may use (2 cuts a semantic lookup by about a third vs 1; "
        "the gateway requests one CPU and may burst).",
    )


class SemanticCache(Model):
    enabled: bool = Field(
        default=False,
        description="Serve near-duplicate questions from the cache. Opt-in: a false hit serves another "
        "question's answer, and no threshold is proven to keep false hits under 1 % on real user questions "
        "(the README's cache section has the figures).",
    )
    threshold: float = Field(
        default=0.95, gt=0, le=1, description="Cosine similarity a cached question must reach, in (0, 1]."
    )
    embedding: Embedding = Field(default_factory=Embedding, description="Embedding model.")
    max_false_hit_rate: float | None = Field(
        default=None,
        gt=0,
        le=0.2,
        description="Serve a semantic hit only from a similarity proven (95 % confidence, from checks of the "
        "cache's own candidates against the engine's answers) to give a different answer at most this often, "
        "e.g. 0.01. `threshold` is then the lowest similarity considered. Unset: every candidate over "
        "`threshold` is served.",
    )


# A URL whose authority holds userinfo (user:password@): the same RE2/Python pattern in CEL and pydantic.
URL_WITH_CREDENTIALS = "^[A-Za-z][A-Za-z0-9+.-]*://[^/]*@"


class RedisSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.mode != 'external' || has(self.url) || has(self.secretRef)",
                    "external Redis needs url or secretRef",
                    ".url",
                ),
                cel(
                    f"!has(self.url) || !self.url.matches('{URL_WITH_CREDENTIALS}')",
                    "the Redis url holds credentials (user:password@); put the whole URL in a Secret and name "
                    "it in cache.redis.secretRef",
                    ".url",
                ),
            ]
        }
    )
    mode: Literal["managed", "external"] = Field(
        default="managed", description="managed: we run redis:8; external: yours."
    )
    url: str | None = Field(
        default=None,
        description="redis:// or rediss:// URL of an external Redis, without credentials (those go in secretRef).",
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the external Redis URL with its credentials "
        "(redis://USER:PASSWORD@HOST:6379/0); it wins over url. A change rolls the gateways.",
    )
    tls: bool = Field(
        default=False,
        description="External Redis: connect with TLS (a redis:// URL is used as rediss://), verifying the "
        "server's certificate against the image's CA bundle.",
    )
    image: str = Field(
        default=DEFAULT_REDIS_IMAGE, description="Image for the managed Redis (needs the query engine)."
    )
    memory: Quantity = Field(
        default="2Gi", description="Managed Redis memory; maxmemory is 90% of it, LRU eviction."
    )

    @model_validator(mode="after")
    def _external_needs_url(self) -> RedisSpec:
        if self.mode == "external" and not (self.url or self.secret_ref):
            raise ValueError("external Redis needs url or secretRef")
        return self

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        """A password in the CR would sit in Git and in every `kubectl get -o yaml`: it belongs in a Secret."""
        if v is not None and re.match(URL_WITH_CREDENTIALS, v):
            raise ValueError(
                "the Redis url holds credentials (user:password@); put the whole URL in a Secret and name it "
                "in cache.redis.secretRef"
            )
        return v


class CacheSpec(Model):
    exact: ExactCache = Field(default_factory=ExactCache, description="Exact-match response cache.")
    semantic: SemanticCache = Field(default_factory=SemanticCache, description="Semantic (embedding) cache.")
    redis: RedisSpec = Field(default_factory=RedisSpec, description="Where cache entries live.")

    @property
    def any_enabled(self) -> bool:
        return self.exact.enabled or self.semantic.enabled


# ---------------------------------------------------------------- gateway


class AuthSpec(Model):
    api_keys_secret_ref: str | None = Field(
        default=None,
        description="Secret whose keys are key names and values API keys (or sha256:<hex>). Unset: no auth.",
    )


class Limits(Model):
    requests_per_minute: int = Field(
        default=600, ge=0, description="Requests per minute per API key (0: none)."
    )
    tokens_per_minute: int = Field(
        default=200_000, ge=0, description="Prompt + output tokens per minute per key."
    )


class ExternalProvider(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.use == 'never' || (has(self.baseURL) && has(self.model))",
                    "baseURL and model are required unless use is never",
                    ".baseURL",
                )
            ]
        }
    )
    base_url: str | None = Field(default=None, alias="baseURL", description="OpenAI-compatible base URL.")
    model: str | None = Field(default=None, description="Model name at the provider.")
    api_key_secret_ref: str | None = Field(
        default=None, description="Secret with key `apiKey` for the provider."
    )
    use: Literal["never", "overflow", "general"] = Field(
        default="never",
        description="never; overflow: general traffic when self-hosted queues are long; general: all general traffic.",
    )

    @model_validator(mode="after")
    def _complete(self) -> ExternalProvider:
        if self.use != "never" and not (self.base_url and self.model):
            raise ValueError("baseURL and model are required unless use is never")
        return self


Detector = Literal["email", "credit-card", "ssn", "secret"]
ALL_DETECTORS: tuple[Detector, ...] = ("email", "credit-card", "ssn", "secret")


class Sensitivity(Model):
    header: str = Field(default="X-Data-Sensitivity", description="Request header: sensitive or general.")
    detectors: list[Detector] = Field(
        default_factory=lambda: list(ALL_DETECTORS),
        description="Content detectors that mark a request sensitive.",
    )
    default: Literal["sensitive", "general"] = Field(
        default="sensitive", description="Class of a request that no header or detector classifies."
    )
    key_policy: dict[str, Literal["sensitive", "general"]] = Field(
        default_factory=dict,
        description="Per API-key name: `sensitive` pins every request of that key to self-hosted engines (no "
        "header or detector can send it out); `general` lets its unlabelled requests go out when no detector "
        "finds anything.",
    )
    max_scan_bytes: int = Field(
        default=1048576,
        ge=1024,
        le=16777216,
        description="Characters of a request body the detectors read at most; a larger body is sensitive "
        "(fail closed).",
    )


class OutputTokenLimit(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.default) || !has(self.max) || self.default <= self.max",
                    "default must not exceed max",
                    ".default",
                )
            ]
        }
    )
    default: int | None = Field(
        default=None, ge=1, le=1_000_000, description="max_tokens for requests that name none."
    )
    max: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="The most output tokens a request may ask for: larger requests are clamped to it (not "
        "refused) and the response says so in x-llmfleet-max-tokens-clamped.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> OutputTokenLimit:
        if self.default is not None and self.max is not None and self.default > self.max:
            raise ValueError("default must not exceed max")
        return self


class OutputTokens(OutputTokenLimit):
    keys: dict[str, OutputTokenLimit] = Field(
        default_factory=dict,
        max_length=256,
        description="Per API-key name (as in the keys Secret): its own default and max, where set.",
    )


class Tracing(Model):
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        max_length=2048,
        description="OTLP/HTTP endpoint of an OpenTelemetry collector (e.g. http://otel-collector.monitoring:4318); "
        "the gateway exports one span per request to <endpoint>/v1/traces. Unset: no traces.",
    )
    sample_ratio: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Share of requests traced when the client sent no traceparent (a client's sampling "
        "decision is always followed). A traced request costs the gateway ~150 µs of CPU (bench/gateway.py "
        "--tracing); 1 traces every request.",
    )
    engines: bool = Field(
        default=False,
        description="Also have the vLLM engines export their llm_request spans to the same collector "
        "(--otlp-traces-endpoint over OTLP/HTTP), children of the gateway's: the engine image must include "
        "the OpenTelemetry SDK and OTLP exporter (pip install opentelemetry-sdk opentelemetry-exporter-otlp).",
    )


class GatewayAutoscaling(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be <= maxReplicas",
                    ".minReplicas",
                )
            ]
        }
    )
    min_replicas: int = Field(default=2, ge=1, le=1000, description="Fewest gateway replicas.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most gateway replicas.")
    target_cpu_utilization: int = Field(
        default=70,
        alias="targetCPUUtilization",
        ge=10,
        le=100,
        description="Average CPU use (percent of the pod's CPU request, one core) the HorizontalPodAutoscaler "
        "holds: a gateway process uses one core, so this is the headroom for bursts of streams.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> GatewayAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


class GatewaySpec(Model):
    image: str = Field(default=DEFAULT_LLMFLEET_IMAGE, description="llmfleet image running the gateway.")
    replicas: int = Field(
        default=2, ge=1, le=100, description="Gateway replicas (when autoscaling is unset)."
    )
    autoscaling: GatewayAutoscaling | None = Field(
        default=None,
        description="A HorizontalPodAutoscaler for the gateway on CPU (one process, one core per pod), in place "
        "of a fixed `replicas`; the replicas share the engines' load view (vLLM's /load) and, with Redis, the "
        "per-key limits.",
    )
    auth: AuthSpec = Field(default_factory=AuthSpec, description="API-key authentication.")
    limits: Limits = Field(default_factory=Limits, description="Per-key rate limits.")
    routing: Literal["least-outstanding", "prefix-affinity"] = Field(
        default="prefix-affinity", description="How requests pick an engine replica."
    )
    external: ExternalProvider = Field(
        default_factory=ExternalProvider, description="Managed API for hybrid routing."
    )
    sensitivity: Sensitivity = Field(default_factory=Sensitivity, description="What stays self-hosted.")
    output_tokens: OutputTokens = Field(
        default_factory=OutputTokens,
        description="Output-length policy: a default max_tokens and a cap, per deployment and per key. The "
        "per-key token limits reserve the clamped value.",
    )
    tracing: Tracing = Field(
        default_factory=Tracing,
        description="OpenTelemetry traces of the gateway's requests, with the W3C trace context passed to the "
        "engines.",
    )


# ---------------------------------------------------------------- routing across models

ROUTE_SELF, ROUTE_EXTERNAL, ROUTE_AUTO = "self", "external", "auto"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
RouteTask = Literal["code", "math", "choice", "chat"]


class RouteMember(Model):
    deployment: str = Field(
        pattern=DNS_LABEL,
        max_length=63,
        description="An LLMDeployment in this namespace whose engines this gateway may send requests to "
        "(directly, past that deployment's own gateway). Rules and auto name it by this name.",
    )
    model: str | None = Field(
        default=None,
        max_length=256,
        description="The model name its engines serve (that deployment's spec.model.servedName). Unset: the "
        "deployment's name, vLLM's served name when servedName is unset.",
    )
    output_tokens: OutputTokenLimit | None = Field(
        default=None,
        description="This member's own output-length policy (default and max max_tokens), applied after the "
        "deployment's and the key's (gateway.outputTokens) when the member serves: e.g. a lower cap for the small "
        "model. Clamped requests say so in x-llmfleet-max-tokens-clamped.",
    )


class RouteMatch(Model):
    keys: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="API-key names (as in the keys Secret); any of them.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=16,
        description="Request headers that must have exactly these values.",
    )
    paths: list[Literal["/v1/chat/completions", "/v1/completions"]] = Field(
        default_factory=list, description="Request paths; any of them."
    )
    min_prompt_chars: int | None = Field(default=None, ge=0, description="Prompt at least this long.")
    max_prompt_chars: int | None = Field(default=None, ge=0, description="Prompt at most this long.")
    tasks: list[RouteTask] = Field(
        default_factory=list,
        description="Detected task of the prompt, any of: code, math, choice (lettered options), chat "
        "(anything else).",
    )


class RouteRule(Model):
    match: RouteMatch = Field(default_factory=RouteMatch, description="Every field set must hold.")
    to: str = Field(
        description="A member's deployment name, `self` (this deployment), `external` (the managed API of "
        "gateway.external, general traffic only) or `auto` (the learned policy decides).",
    )


class AutoRouting(Model):
    small: str = Field(description="The cheaper member (`self` or a member's deployment name).")
    large: str = Field(description="The stronger member (`self` or a member's deployment name).")
    threshold: float = Field(
        default=0.175,
        ge=0.0,
        le=1.0,
        description="The one knob along the cost-quality curve: a request whose estimated chance of needing "
        "the large model (a nearest-neighbour vote over labelled questions) is at or above it goes to large. "
        "Lower: more quality and cost. The default, on held-out public questions (bench/routing.py): 93 % of "
        "the large model's quality at 41 % of its cost (random routing at that cost: 90 %).",
    )


class RoutingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.rules.all(r, r.to in ['self', 'external', 'auto'] || "
                    "self.members.exists(m, m.deployment == r.to))",
                    "each rule's `to` is self, external, auto or a member's deployment name",
                    ".rules",
                ),
            ]
        }
    )
    members: list[RouteMember] = Field(
        default_factory=list,
        max_length=8,
        description="Other LLMDeployments this gateway routes to, besides this deployment (`self`).",
    )
    rules: list[RouteRule] = Field(
        default_factory=list,
        max_length=64,
        description="Tried in order; the first that matches picks the member. None matching: auto if set, "
        "else `default`.",
    )
    auto: AutoRouting | None = Field(
        default=None, description="The learned policy: the cheapest member expected to answer well."
    )
    default: str = Field(
        default=ROUTE_SELF, description="Where a request goes when no rule matches and auto is unset."
    )

    @model_validator(mode="after")
    def _names(self) -> RoutingSpec:
        names = [m.deployment for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError("members: each deployment may be named once")
        if ROUTE_SELF in names or ROUTE_EXTERNAL in names or ROUTE_AUTO in names:
            raise ValueError("members: self, external and auto are reserved names")
        known = {ROUTE_SELF, ROUTE_EXTERNAL, *names}
        for i, r in enumerate(self.rules):
            if r.to not in known and r.to != ROUTE_AUTO:
                raise ValueError(f"rules[{i}].to: {r.to!r} is not self, external, auto or a member")
            if r.to == ROUTE_AUTO and self.auto is None:
                raise ValueError(f"rules[{i}].to: auto needs routing.auto")
        if self.default not in known:
            raise ValueError(f"default: {self.default!r} is not self, external or a member")
        if self.auto is not None:
            for f in ("small", "large"):
                v = getattr(self.auto, f)
                if v not in known or v == ROUTE_EXTERNAL:
                    raise ValueError(f"auto.{f}: {v!r} is not self or a member")
            if self.auto.small == self.auto.large:
                raise ValueError("auto: small and large must differ")
        return self

    @property
    def active(self) -> bool:
        return bool(self.members or self.rules or self.auto or self.default != ROUTE_SELF)


# ---------------------------------------------------------------- spec


class NetworkPeer(Model):
    """Who may connect: pods by label in namespaces by label (a NetworkPolicy peer), or an IP block."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.cidr) != (has(self.namespaceSelector) || has(self.podSelector))",
                    "a network peer is either selectors (namespaceSelector, podSelector) or a cidr",
                )
            ]
        }
    )
    namespace_selector: dict[str, str] | None = Field(
        default=None,
        description="Namespaces by label (matchLabels); {} selects every namespace. Unset: this namespace.",
    )
    pod_selector: dict[str, str] | None = Field(
        default=None, description="Pods by label (matchLabels) in those namespaces; unset or {}: every pod."
    )
    cidr: str | None = Field(
        default=None, description="An IP block (CIDR) instead of selectors: clients outside the cluster."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPeer:
        if self.cidr is not None and (self.namespace_selector is not None or self.pod_selector is not None):
            raise ValueError("a network peer is either selectors or a cidr, not both")
        if self.cidr is None and self.namespace_selector is None and self.pod_selector is None:
            raise ValueError("a network peer needs namespaceSelector, podSelector or cidr")
        if self.cidr is not None:
            ipaddress.ip_network(self.cidr, strict=False)
        return self

    def as_policy_peer(self) -> dict[str, Any]:
        if self.cidr is not None:
            return {"ipBlock": {"cidr": self.cidr}}
        out: dict[str, Any] = {}
        if self.namespace_selector is not None:
            out["namespaceSelector"] = {"matchLabels": dict(self.namespace_selector)}
        out["podSelector"] = {"matchLabels": dict(self.pod_selector or {})}
        return out


NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class NetworkSpec(Model):
    isolation: bool = Field(
        default=True,
        description="Render NetworkPolicies: engines take traffic only from this deployment's gateways and "
        "monitoring, the cache only from the gateways, the gateways talk only to their engines, cache, the "
        "Kubernetes API, DNS and the external provider. false: no policies.",
    )
    monitoring: list[NetworkPeer] = Field(
        default_factory=lambda: [NetworkPeer(namespace_selector={NAMESPACE_NAME_LABEL: "monitoring"})],
        description="Who may scrape the engines' and gateways' /metrics (default: pods in namespace monitoring).",
    )
    gateway_from: list[NetworkPeer] | None = Field(
        default=None,
        description="Who may call the gateway (the front door). Unset: anyone, in or outside the cluster.",
    )
    dns: list[NetworkPeer] = Field(
        default_factory=lambda: [
            NetworkPeer(
                namespace_selector={NAMESPACE_NAME_LABEL: "kube-system"},
                pod_selector={"k8s-app": "kube-dns"},
            )
        ],
        description="The cluster DNS the gateways may ask, on port 53 (default: kube-dns/CoreDNS in kube-system; "
        "add a cidr for a node-local DNS cache).",
    )
    api_server_cidrs: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0", "::/0"],
        description="Where the Kubernetes API server is (the gateways watch their engines' endpoints): egress "
        "on 443 and 6443. Narrow it to your control plane's addresses where you know them.",
    )

    @field_validator("api_server_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"{c!r} is not a CIDR") from None
        return v


class LLMDeploymentSpec(Model):
    model: ModelSpec = Field(description="What to serve.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="vLLM engine settings.")
    accelerator: AcceleratorSpec = Field(
        default_factory=AcceleratorSpec, description="GPUs the engines run on."
    )
    pools: Pools = Field(default_factory=Pools, description="Spot and on-demand node pools.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=2000,
        description="Total replicas when autoscaling is off (target of `kubectl scale`). Unset: minReplicas.",
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="Queue/TTFT autoscaler."
    )
    cache: CacheSpec = Field(default_factory=CacheSpec, description="Exact and semantic response cache.")
    gateway: GatewaySpec = Field(
        default_factory=GatewaySpec, description="OpenAI-compatible streaming gateway."
    )
    network: NetworkSpec = Field(
        default_factory=NetworkSpec, description="Network isolation of the engines, cache and gateways."
    )
    routing: RoutingSpec = Field(
        default_factory=RoutingSpec,
        description="Several models behind this deployment's gateway: rules (key, header, path, prompt length, "
        "task) and a learned auto policy choose a member per request; the response names it in "
        "x-llmfleet-model. Sensitive requests never go to `external`.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> LLMDeploymentSpec:
        r = self.routing
        if (r.default == ROUTE_EXTERNAL or any(x.to == ROUTE_EXTERNAL for x in r.rules)) and (
            self.gateway.external.use == "never"
        ):
            raise ValueError(
                "routing: a rule or the default sends to `external`, but gateway.external.use is never; "
                "configure gateway.external (baseURL, model, use) first"
            )
        if self.model.architecture is not None and self.model.parameters is None:
            raise ValueError("model.parameters is required when model.architecture is given")
        if self.pools.spot.enabled:
            drain = parse_duration(self.engine.drain.pre_stop_sleep) + parse_duration(
                self.engine.drain.shutdown_timeout
            )
            if drain >= SPOT_NOTICE_SECONDS:
                raise ValueError(
                    f"engine.drain: preStopSleep + shutdownTimeout is {drain:g}s, which does not fit the "
                    f"{SPOT_NOTICE_SECONDS:g}s spot notice; shorten them or disable pools.spot"
                )
        return self


# ---------------------------------------------------------------- status


class Condition(BaseModel):
    """The standard metav1.Condition shape."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    type: str = Field(
        description="Ready, Progressing, Degraded, SpotFallback, Reclaim, MetricsAvailable, and kstatus' "
        "Reconciling and Stalled (llmfleet.api.conditions.ConditionType)."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason (llmfleet.api.conditions.Reason).")
    message: str = Field(default="", description="What happened, in a sentence a user can act on.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="Generation the condition was computed for."
    )


class Reclaim(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    node: str = Field(description="The node that got the notice.")
    signal: str = Field(description="What said it is going: 'taint KEY', 'condition TYPE' or 'node deleted'.")
    pods: list[str] = Field(default_factory=list, description="Engine pods drained for it.")
    time: str = Field(description="When the operator acted (RFC 3339).")


class PoolReplicas(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    desired: int = Field(default=0, description="Replicas wanted in this pool.")
    ready: int = Field(default=0, description="Replicas ready to serve.")
    pending: int = Field(default=0, description="Replicas not yet scheduled or started.")
    # No schema default: the API server would write 0 into every status and the operator's computed status
    # (which leaves it out until the first reclaim) would differ from the live one forever.
    reclaims: int | None = Field(
        default=None,
        description="Engine pods drained on a reclaim notice (or a lost node), ever; absent until the first.",
    )
    last_reclaim: Reclaim | None = Field(default=None, description="The latest reclaim notice acted on.")


class ReplicaStatus(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    desired: int = Field(default=0, description="Replicas wanted, both pools.")
    ready: int = Field(default=0, description="Replicas ready, both pools.")
    spot: PoolReplicas = Field(default_factory=PoolReplicas, description="Spot pool.")
    on_demand: PoolReplicas = Field(default_factory=PoolReplicas, description="On-demand pool.")


class MetricsStatus(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    queue_depth: float | None = Field(default=None, description="Waiting requests across replicas.")
    running: float | None = Field(default=None, description="Requests in the engines' running batches.")
    ready_replicas: int | None = Field(default=None, description="Engine replicas reporting metrics.")
    ttft_p95: float | None = Field(default=None, description="TTFT p95 in seconds over the last minute.")
    kv_cache_usage: float | None = Field(
        default=None, description="Mean KV-cache usage of the replicas, 0 to 1."
    )
    prompt_tokens_per_second: float | None = Field(
        default=None, description="Prompt tokens per second the replicas prefilled (see promptTokensSource)."
    )
    prompt_tokens_source: Literal["local_compute", "all"] | None = Field(
        default=None,
        description="local_compute: the tokens the GPUs computed (prefix-cache hits left out, from "
        "vllm:prompt_tokens_by_source); all: every prompt token (an engine that does not split them).",
    )
    generation_tokens_per_second: float | None = Field(
        default=None, description="Generated tokens per second, all replicas."
    )


class LastScale(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    time: str = Field(description="When (RFC 3339).")
    from_: int = Field(alias="from", description="Replicas before.")
    to: int = Field(description="Replicas after.")
    reason: str = Field(description="Why.")


SCALE_HISTORY = 10  # decisions kept in status.autoscaling.history


class ScaleFigures(BaseModel):
    """The figures a scaling decision was taken on (rounded as in status.metrics)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    ready_replicas: int | None = Field(default=None, description="Engine replicas reporting metrics.")
    queue_depth: float | None = Field(default=None, description="Waiting requests across replicas.")
    ttft_p95: float | None = Field(default=None, description="TTFT p95 in seconds over the last minute.")
    ttft_late_share: float | None = Field(
        default=None, description="Share of the last minute's first tokens over ttftP95Target."
    )
    kv_cache_usage: float | None = Field(default=None, description="Mean KV-cache usage, 0 to 1.")
    prompt_tokens_per_second: float | None = Field(default=None, description="Prompt tokens per second.")
    generation_tokens_per_second: float | None = Field(
        default=None, description="Generated tokens per second."
    )


class ScaleRecord(BaseModel):
    """One change of the replica target."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    time: str = Field(description="When (RFC 3339).")
    from_: int = Field(alias="from", description="Replicas before.")
    to: int = Field(description="Replicas after.")
    spot: int | None = Field(default=None, description="Of which on spot, as the pools split the target.")
    on_demand: int | None = Field(default=None, description="Of which on demand.")
    reason: str = Field(
        description="QueueDepth, TTFTAttainment, TTFTP95, TokenLoad, LoadFits, Idle, Wake, Manual, Bounds "
        "(llmfleet.api.conditions.ScaleReason)."
    )
    message: str = Field(default="", description="The decision in a sentence, with its figures.")
    figures: ScaleFigures | None = Field(default=None, description="What the decision was taken on.")
    # No schema default (the API server would write it into every stored record): the operator always sets it.
    written: bool | None = Field(
        default=None,
        description="Whether the new target reached the engine Deployments in the reconcile that decided it "
        "(false: the API server refused or failed that write; the next reconcile retries it).",
    )


class AutoscalingStatus(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    history: list[ScaleRecord] = Field(
        default_factory=list, max_length=SCALE_HISTORY, description="The last 10 changes, oldest first."
    )


class LLMDeploymentStatus(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    observed_generation: int | None = Field(default=None, description="Generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, Degraded, …")
    tensor_parallel_size: int | None = Field(default=None, description="Resolved tensor-parallel size.")
    replicas: ReplicaStatus | None = Field(default=None, description="Replica counts per pool.")
    ready: str | None = Field(default=None, description="ready/desired, for kubectl get.")
    spot: str | None = Field(default=None, description="Spot ready/desired, for kubectl get.")
    selector: str | None = Field(
        default=None, description="Label selector of engine pods (scale subresource)."
    )
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL of the gateway.")
    metrics: MetricsStatus | None = Field(default=None, description="Live figures from Prometheus.")
    last_scale: LastScale | None = Field(default=None, description="The last scaling decision.")
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="The autoscaler's recent changes."
    )
    cost_per_hour: float | None = Field(
        default=None, description="USD per hour of the ready engine replicas."
    )


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None


class LLMDeployment(BaseModel):
    """A whole LLMDeployment object as read from YAML or the API server."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)
    api_version: Literal["llmfleet.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["LLMDeployment"]
    metadata: ObjectMeta
    spec: LLMDeploymentSpec
    status: LLMDeploymentStatus | None = None

    @property
    def served_name(self) -> str:
        return self.spec.model.served_name or self.metadata.name
