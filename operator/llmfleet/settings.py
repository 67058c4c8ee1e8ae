"""The operator's one settings object: read once at start-up from flags and LLMFLEET_* environment variables
(``llmfleet operator``), validated, and passed down; nothing below it reads the environment for these.

kopf fixes two of them when it starts (a change needs a restart): ``autoscale_interval`` (a timer's interval)
and ``workers`` (its executor). The gateway and engine-sim take their configuration from their own files and
flags (``llmfleet gateway --config``, ``llmfleet engine-sim --help``).
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmfleet.fleet.reclaim import DEFAULT_CONDITIONS, DEFAULT_TAINTS


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMFLEET_", extra="ignore")

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty: cluster-wide."
    )
    kubeconfig: str | None = Field(
        default=None, description="Kubeconfig path; in a pod the service account is used."
    )
    leader_elect: bool = Field(
        default=False,
        description="Run only while holding the Lease (several replicas: one active, the rest on "
        "standby); off: this process is the only operator.",
    )
    lease_name: str = Field(
        default="llmfleet-operator", min_length=1, description="Name of the leader Lease."
    )
    lease_namespace: str | None = Field(
        default=None, description="Namespace of the leader Lease; unset: POD_NAMESPACE, else llmfleet-system."
    )
    identity: str | None = Field(
        default=None,
        description="This process's name in the Lease; unset: POD_NAME (else the host name), "
        "an underscore and a random suffix.",
    )
    lease_duration: int = Field(
        default=15,
        ge=2,
        description="Seconds a standby waits after the lease last changed before it takes it over.",
    )
    renew_deadline: int = Field(
        default=10,
        ge=2,
        description="Seconds the leader keeps trying to renew before it stops (the process exits).",
    )
    retry_period: int = Field(
        default=2, ge=1, description="Seconds between attempts to take or renew the lease."
    )
    llmfleet_image: str | None = Field(
        default=None, description="Gateway image for every CR (overrides the spec)."
    )
    engine_image: str | None = Field(
        default=None, description="Engine image for every CR (e.g. engine-sim in dev)."
    )
    engine_command: list[str] | None = Field(
        default=None, description="Engine command override (dev clusters)."
    )
    engine_discovery: str = Field(
        default="endpointslices",
        description="How gateways find engines: "
        "endpointslices, or pods (dev clusters with loopback pod IPs).",
    )
    liveness_port: int | None = Field(default=8081, description="Port of /healthz; none to disable.")
    metrics_port: int | None = Field(
        default=8080,
        description="Port of the operator's /metrics (reconcile/metrics.py); none or 0 to disable.",
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    prometheus_url: str | None = Field(
        default=None, description="Prometheus for every CR that does not set spec.autoscaling.prometheus.url."
    )
    autoscale_interval: float = Field(
        default=15.0, gt=0, description="Seconds between autoscaler ticks per CR (kopf fixes it at start-up)."
    )
    workers: int = Field(
        default=16, ge=1, description="Reconcile worker threads (and kopf's executor; fixed at start-up)."
    )
    reclaim_taints: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TAINTS),
        description="Node taint keys that announce a reclaim "
        "(the node is going): its engine pods are drained and replaced at once. JSON list in the environment.",
    )
    reclaim_conditions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CONDITIONS),
        description="Node condition types that announce a "
        "reclaim when True (e.g. AKS's VMEventScheduled). JSON list in the environment.",
    )
    bind_host: str = Field(
        default="0.0.0.0", description="Address the liveness and metrics endpoints listen on."
    )

    @model_validator(mode="after")
    def _lease_timing(self) -> OperatorSettings:
        # The guarantee of one writer at a time rests on these (client-go checks the same).
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration}) must exceed renew_deadline ({self.renew_deadline})"
            )
        if self.renew_deadline <= 1.2 * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}) must exceed 1.2 x retry_period ({self.retry_period})"
            )
        return self
