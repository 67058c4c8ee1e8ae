"""Typed settings for the long-running commands, read from flags and LLMFLEET_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMFLEET_", extra="ignore")

    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: cluster-wide.")
    kubeconfig: str | None = Field(default=None, description="Kubeconfig path; in a pod the service account is used.")
    peering: str | None = Field(
        default=None,
        description="kopf peering name for running several replicas (one active, the rest on standby); "
        "unset: standalone.",
    )
    priority: int | None = Field(default=None, description="Peering priority; unset: random, so one replica leads.")
    llmfleet_image: str | None = Field(default=None, description="Gateway image for every CR (overrides the spec).")
    engine_image: str | None = Field(default=None, description="Engine image for every CR (e.g. engine-sim in dev).")
    engine_command: list[str] | None = Field(default=None, description="Engine command override (dev clusters).")
    engine_discovery: str = Field(default="endpointslices", description="How gateways find engines: "
                                  "endpointslices, or pods (dev clusters with loopback pod IPs).")
    liveness_port: int | None = Field(default=8081, description="Port of /healthz; none to disable.")
    log_level: str = Field(default="INFO", description="Python log level.")
    prometheus_url: str | None = Field(
        default=None, description="Prometheus for every CR that does not set spec.autoscaling.prometheus.url.")
    autoscale_interval: float = Field(
        default=15.0, gt=0, description="Seconds between autoscaler ticks per CR (read when the handlers load).")
    bind_host: str = Field(default="0.0.0.0", description="Address the liveness endpoint listens on.")
