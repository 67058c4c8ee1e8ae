"""The scaling policies users would pick instead of llmfleet's, as the fleet simulator replays them (never run by
the operator): each reads the same ``Observation`` llmfleet's policy reads and returns a replica target, on its
own tick. Pure: state in, target out; the clock is the simulated time passed in.

- ``kubeai-like``: KubeAI's model autoscaler (substratusai/kubeai, internal/modelautoscaler/autoscaler.go and
  internal/config/system.go): every 10 s (``modelAutoscaling.interval``) it adds the active requests (waiting and
  running) to a moving average over ``timeWindow`` (10 min: 60 samples, preloaded with zeros on a fresh start),
  asks for ``ceil(average / targetRequests)`` (default 100) and scales down only after ``scaleDownDelaySeconds``
  (default 30 s) of consecutive lower answers; up at once.
- ``keda-queue``: KEDA's Prometheus scaler on ``vllm:num_requests_waiting`` with ``threshold: 5`` and a 15 s
  polling interval, as vLLM production-stack's KEDA tutorial configures it, driving an HPA with its defaults
  (AverageValue target: ``ceil(total / threshold)``, 10 % tolerance, scale-down stabilisation 300 s, scale-up
  at most doubling or +4 per period).
- ``hpa-like``: a plain HPA with its defaults on a utilisation metric, the engines' KV-cache usage
  (``vllm:kv_cache_usage_perc``) at a 80 % target: ``ceil(current * usage / target)``.

Every policy is clamped to the CR's ``autoscaling.minReplicas``/``maxReplicas`` and its replicas are split over
the CR's pools as llmfleet's are, so the comparison is of policies, not of pools.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from llmfleet.autoscale.policy import Observation

HPA_TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance
HPA_DOWN_WINDOW_S = 300.0  # behavior.scaleDown.stabilizationWindowSeconds default
HPA_SYNC_S = 15.0  # --horizontal-pod-autoscaler-sync-period


class Baseline(Protocol):
    interval_s: float

    def decide(self, obs: Observation, current: int, now: float) -> int: ...


@dataclass
class KubeAILike:
    target_requests: float = 100.0
    interval_s: float = 10.0
    window_s: float = 600.0
    scale_down_delay_s: float = 30.0
    samples: deque[float] = field(default_factory=deque)
    lower_in_a_row: int = 0

    def __post_init__(self) -> None:
        if not self.samples:
            self.samples.extend([0.0] * max(1, round(self.window_s / self.interval_s)))

    def decide(self, obs: Observation, current: int, now: float) -> int:
        self.samples.append(obs.waiting + obs.running)
        self.samples.popleft()
        want = math.ceil(sum(self.samples) / len(self.samples) / self.target_requests)
        if want >= current:
            self.lower_in_a_row = 0
            return want
        self.lower_in_a_row += 1
        # KubeAI's RequiredConsecutiveScaleDowns: ceil(delay / interval), at least 1.
        if self.lower_in_a_row >= max(1, math.ceil(self.scale_down_delay_s / self.interval_s)):
            self.lower_in_a_row = 0
            return want
        return current


@dataclass
class HPALike:
    """The HPA's replica calculation and default behaviour, on an AverageValue (``per_replica``) or a
    Utilization target."""

    metric: str  # "waiting" (AverageValue) or "kv_usage" (Utilization)
    target: float
    interval_s: float = HPA_SYNC_S
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)

    def _desired(self, obs: Observation, current: int) -> int:
        if current == 0:
            return 1 if (obs.waiting + obs.running) > 0 else 0
        if self.metric == "waiting":
            ratio = obs.waiting / (self.target * current)
            return current if abs(ratio - 1) <= HPA_TOLERANCE else math.ceil(obs.waiting / self.target)
        usage = obs.kv_usage if obs.kv_usage is not None else 0.0
        ratio = usage / self.target
        return current if abs(ratio - 1) <= HPA_TOLERANCE else math.ceil(current * ratio)

    def decide(self, obs: Observation, current: int, now: float) -> int:
        desired = self._desired(obs, current)
        self.recommendations.append((now, desired))
        while self.recommendations and self.recommendations[0][0] < now - HPA_DOWN_WINDOW_S:
            self.recommendations.popleft()
        if desired < current:  # scale down to the highest recommendation of the window
            return min(current, max(r for _, r in self.recommendations))
        return min(desired, max(2 * current, current + 4))  # default scale-up policies: 100 % or 4 pods


BASELINES = ("kubeai-like", "keda-queue", "hpa-like")


def baseline(name: str) -> Baseline:
    if name == "kubeai-like":
        return KubeAILike()
    if name == "keda-queue":
        return HPALike("waiting", 5.0)
    if name == "hpa-like":
        return HPALike("kv_usage", 0.8)
    raise ValueError(f"unknown policy {name!r}")
