"""The gateway's configuration: the JSON the operator renders into the gateway ConfigMap, plus local overrides.

Unknown keys are refused (a typo in a hand-written config must not silently turn a guard off); the
operator's rendered config is round-tripped through this model in the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

DetectorName = Literal["email", "credit-card", "ssn", "secret"]
DETECTOR_NAMES: tuple[DetectorName, ...] = ("email", "credit-card", "ssn", "secret")


class _M(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Engines(_M):
    service: str | None = None
    endpoint_slice_selector: str | None = Field(default=None, alias="endpointSliceSelector")
    port: int = 8000
    static: list[str] = Field(default_factory=list, description="Static engine base URLs (no discovery).")
    discovery: Literal["endpointslices", "pods"] = "endpointslices"
    pod_selector: str | None = Field(default=None, alias="podSelector")
    # Poll each engine's /load this often (seconds) for the other gateways' share of its load; None: off.
    load_poll_seconds: float | None = Field(default=None, gt=0, alias="loadPollSeconds")


class Auth(_M):
    keys_dir: str | None = None
    keys_file: str | None = None


class LimitsConfig(_M):
    requests_per_minute: int = 600
    tokens_per_minute: int = 200_000


class SensitivityConfig(_M):
    header: str = "X-Data-Sensitivity"
    detectors: list[DetectorName] = Field(default_factory=lambda: list(DETECTOR_NAMES))
    default: Literal["sensitive", "general"] = "sensitive"
    key_policy: dict[str, Literal["sensitive", "general"]] = Field(default_factory=dict, alias="keyPolicy")
    max_scan_bytes: int = Field(default=1 << 20, ge=1024, alias="maxScanBytes")


class External(_M):
    use: Literal["never", "overflow", "general"] = "never"
    base_url: str | None = Field(default=None, alias="baseURL")
    model: str | None = None
    api_key_env: str | None = None
    api_key: str | None = None  # local runs only; in a cluster the key comes from the env var
    overflow_outstanding_per_replica: int = 32  # "queue is long": outstanding requests per ready replica


class ExactCacheConfig(_M):
    enabled: bool = True
    ttl_seconds: float = 3600
    replay: Literal["deterministic", "always"] = "deterministic"


class SemanticCacheConfig(_M):
    enabled: bool = False  # opt-in, as spec.cache.semantic.enabled
    threshold: float = 0.95
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_threads: int = Field(default=2, ge=1, le=16)
    # Verified hits (cache.verify): the bound on served hits that differ from the engine's answer; None: off.
    max_false_hit_rate: float | None = Field(default=None, gt=0, le=0.2)


class CacheConfig(_M):
    redis_url: str | None = Field(default=None, alias="redisURL")
    redis_url_env: str | None = Field(default=None, alias="redisURLEnv")
    redis_username: str | None = Field(default=None, alias="redisUsername")
    # The env var with the password (from a Secret), never the password itself.
    redis_password_env: str | None = Field(default=None, alias="redisPasswordEnv")
    redis_tls: bool = Field(default=False, alias="redisTLS")  # redis:// is used as rediss://
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)


class OutputLimit(_M):
    default: int | None = Field(default=None, ge=1)  # max_tokens for requests that name none
    max: int | None = Field(default=None, ge=1)  # requests asking for more are clamped to it


class OutputConfig(OutputLimit):
    keys: dict[str, OutputLimit] = Field(default_factory=dict)  # per API-key name


class TracingConfig(_M):
    endpoint: str | None = None  # OTLP/HTTP base URL; None: no tracing
    sample_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    service_name: str = "llmfleet-gateway"
    export_interval_ms: int = Field(default=1000, ge=10)


class RouteMemberConfig(_M):
    name: str  # "self", or the member deployment's name (what rules and the x-llmfleet-model header say)
    model: str  # the model name its engines serve: the forwarded body's "model"
    engines: Engines = Field(default_factory=Engines)
    output_tokens: OutputLimit | None = Field(default=None, alias="outputTokens")  # its own, after the key's


class RouteMatchConfig(_M):
    keys: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    paths: list[str] = Field(default_factory=list)
    min_prompt_chars: int | None = Field(default=None, alias="minPromptChars")
    max_prompt_chars: int | None = Field(default=None, alias="maxPromptChars")
    tasks: list[Literal["code", "math", "choice", "chat"]] = Field(default_factory=list)


class RouteRuleConfig(_M):
    match: RouteMatchConfig = Field(default_factory=RouteMatchConfig)
    to: str


class AutoRouteConfig(_M):
    small: str
    large: str
    threshold: float = Field(default=0.175, ge=0.0, le=1.0)
    k: int = Field(default=8, ge=1, le=256)
    bank: str | None = None  # an .npz bank (llmfleet.modelroute.Bank); None: the one shipped in the package


class RouteConfig(_M):
    members: list[RouteMemberConfig]
    default: str = "self"
    rules: list[RouteRuleConfig] = Field(default_factory=list)
    auto: AutoRouteConfig | None = None

    @model_validator(mode="after")
    def _known(self) -> RouteConfig:
        known = {m.name for m in self.members} | {"external"}
        named = [self.default, *(r.to for r in self.rules if r.to != "auto")]
        if self.auto is not None:
            named += [self.auto.small, self.auto.large]
        for n in named:
            if n not in known:
                raise ValueError(f"route: {n!r} is not a member")
        return self


class GatewayConfig(_M):
    model: str = "default"
    namespace: str = "default"
    engines: Engines = Field(default_factory=Engines)
    routing: Literal["least-outstanding", "prefix-affinity"] = "prefix-affinity"
    auth: Auth = Field(default_factory=Auth)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    sensitivity: SensitivityConfig = Field(default_factory=SensitivityConfig)
    external: External = Field(default_factory=External)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    output_tokens: OutputConfig = Field(default_factory=OutputConfig)
    route: RouteConfig | None = None  # several models behind this gateway (spec.routing)
    max_body_bytes: int = 4 * 1024 * 1024
    access_log: bool = True
    upstream_timeout_seconds: float = 600.0

    @classmethod
    def load(cls, path: str | Path) -> GatewayConfig:
        return cls.model_validate(json.loads(Path(path).read_text()))
