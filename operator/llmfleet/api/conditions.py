"""The status vocabulary users read in ``kubectl describe llmd``: condition types, their reasons and the Event
reasons, as named constants (the pattern of cert-manager's ``policies/constants.go`` and CloudNativePG's
condition reasons). A reason is part of the API: alerts and GitOps health checks match on it, so one is renamed
only with a new API version.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, NamedTuple

ConditionStatus = Literal["True", "False", "Unknown"]


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SPOT_FALLBACK = "SpotFallback"
    RECLAIM = "Reclaim"
    METRICS_AVAILABLE = "MetricsAvailable"
    # kstatus' abnormal-true pair, what Flux's health checks and kpt read (sigs.k8s.io/cli-utils kstatus):
    # Reconciling mirrors "not there yet", Stalled mirrors Degraded.
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Reason(StrEnum):
    # Ready
    ALL_REPLICAS_READY = "AllReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    SCALED_TO_ZERO = "ScaledToZero"
    # Progressing
    ROLLING_OUT = "RollingOut"
    STABLE = "Stable"
    # Degraded
    AS_EXPECTED = "AsExpected"
    INVALID_SPEC = "InvalidSpec"
    SIZING_FAILED = "SizingFailed"
    # SpotFallback
    SPOT_DISABLED = "SpotDisabled"
    SPOT_AVAILABLE = "SpotAvailable"
    FALLBACK_DISABLED = "FallbackDisabled"
    ON_DEMAND_AT_MAX = "OnDemandAtMax"
    SPOT_CAPACITY_UNAVAILABLE = "SpotCapacityUnavailable"
    # Reclaim
    REPLACEMENT_PENDING = "ReplacementPending"
    REPLACED = "Replaced"
    # MetricsAvailable
    METRICS_READ = "MetricsRead"
    PROMETHEUS_UNREACHABLE = "PrometheusUnreachable"
    NO_ENGINE_SERIES = "NoEngineSeries"
    AUTOSCALING_DISABLED = "AutoscalingDisabled"


class ScaleReason(StrEnum):
    """Why the autoscaler changed the replica target (``status.autoscaling.history[].reason`` and the Scaled
    Event's message); the sentence with the figures is the entry's ``message``."""

    QUEUE_DEPTH = "QueueDepth"  # more waiting requests per replica than targetQueueDepthPerReplica
    TTFT_ATTAINMENT = "TTFTAttainment"  # more late first tokens than ttftAttainmentTarget allows
    TTFT_P95 = "TTFTP95"  # TTFT p95 over ttftP95Target
    TOKEN_LOAD = "TokenLoad"  # the token rates need more replicas
    LOAD_FITS = "LoadFits"  # the load fits fewer replicas (after the scale-down window)
    HOLDING = "Holding"  # nothing calls for a change (never a change itself)
    IDLE = "Idle"  # scaleToZero after idleAfter
    WAKE = "Wake"  # a request arrived while at zero
    MANUAL = "Manual"  # spec.replicas changed (kubectl scale)
    BOUNDS = "Bounds"  # kept within minReplicas..maxReplicas (the CR's or an open schedule's)
    NO_METRICS = "NoMetrics"  # nothing to decide on: holding


class EventReason(StrEnum):
    """Reasons of the Events the operator records on an LLMDeployment."""

    INVALID_SPEC = "InvalidSpec"
    RECONCILED = "Reconciled"
    RECLAIM_NOTICE = "ReclaimNotice"  # engine pods drained because their node is going
    SCALED = "Scaled"  # the autoscaler changed the replica target


class ConditionResult(NamedTuple):
    """One condition as a rule computes it; ``reconcile.status`` adds the transition time and generation."""

    status: ConditionStatus
    reason: Reason
    message: str
