"""What the autoscaler hands one reconcile: the replica target and the figures it decided on."""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.api.conditions import ConditionResult
from llmfleet.api.v1alpha1 import LastScale, MetricsStatus, ScaleRecord


@dataclass(frozen=True)
class ScaleInput:
    target: int
    metrics: MetricsStatus | None = None  # status.metrics
    last_scale: LastScale | None = None  # status.lastScale
    metrics_available: ConditionResult | None = None  # the MetricsAvailable condition
    history: tuple[ScaleRecord, ...] = ()  # status.autoscaling.history
    scaled: ScaleRecord | None = None  # the change this reconcile applies (a Scaled Event)
