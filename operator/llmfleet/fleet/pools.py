"""How many engine replicas, and in which pool: the one initial-size rule, the split over the spot and on-demand
pools, and the spot stand-in rule (``pools.spot.pendingTimeout`` with ``fallbackToOnDemand``).

``llmfleet render``, the operator (its plan and the autoscaler's first target) and the fleet simulator all size
a fleet through these functions, so they agree (a property test compares render and operator).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmfleet.api.quantity import parse_duration
from llmfleet.api.v1alpha1 import AutoscalingSpec, LLMDeploymentSpec


@dataclass(frozen=True)
class PoolCounts:
    """Desired replicas per pool (from the autoscaler, or the spec's initial size).

    ``fallback`` of the on-demand replicas stand in for spot replicas that could not start within
    ``pools.spot.pendingTimeout``; they go once the spot replicas are ready.
    """

    on_demand: int
    spot: int
    fallback: int = 0

    @property
    def total(self) -> int:
        return self.on_demand + self.spot

    @property
    def target(self) -> int:
        """Replicas the fleet should serve with (the stand-ins not counted twice)."""
        return self.total - self.fallback


def clamp(spec: AutoscalingSpec, n: int) -> int:
    """Within minReplicas..maxReplicas."""
    return max(spec.min_replicas, min(spec.max_replicas, n))


def bounded(spec: AutoscalingSpec, n: int) -> int:
    """An autoscaled target within its bounds; zero stays zero when scaleToZero is on."""
    return n if n == 0 and spec.scale_to_zero.enabled else clamp(spec, n)


def initial_replicas(spec: LLMDeploymentSpec) -> int:
    """The size a fleet starts at before any autoscaler decision: ``spec.replicas`` when set (within the
    autoscaling bounds when autoscaling is on), else ``minReplicas`` when autoscaling is on, else the on-demand
    pool's minimum."""
    a = spec.autoscaling
    if spec.replicas is not None:
        return bounded(a, spec.replicas) if a.enabled else spec.replicas
    return a.min_replicas if a.enabled else spec.pools.on_demand.min_replicas


def split_replicas(spec: LLMDeploymentSpec, total: int | None = None, spot_shortfall: int = 0) -> PoolCounts:
    """Spread a total (default: ``initial_replicas``) over the pools: the on-demand minimum first, then spot,
    then on-demand.

    ``spot_shortfall``: spot replicas that have not become ready within ``pendingTimeout`` (``late_spot``);
    with ``fallbackToOnDemand`` as many on-demand replicas are added (within ``onDemand.maxReplicas``) while the
    spot ones stay wanted, so they take spot capacity as soon as it comes back.
    """
    if total is None:
        total = initial_replicas(spec)
    od, sp = spec.pools.on_demand, spec.pools.spot
    spot_cap = sp.max_replicas if sp.enabled else 0
    total = max(0, min(total, od.max_replicas + spot_cap))
    on_demand = min(od.max_replicas, max(min(od.min_replicas, total), total - spot_cap))
    spot = total - on_demand
    fallback = min(spot_shortfall, spot, od.max_replicas - on_demand) if sp.fallback_to_on_demand else 0
    return PoolCounts(on_demand=on_demand + fallback, spot=spot, fallback=max(0, fallback))


def late_spot(spec: LLMDeploymentSpec, starting: Iterable[float | None]) -> int:
    """Spot replicas past ``pools.spot.pendingTimeout`` that are not ready: ``starting`` holds the age in
    seconds of every spot replica that is wanted, not terminating and not ready (None: age unknown).

    Unscheduled (no spot capacity) and scheduled-but-starting replicas count alike once past the timeout: the
    on-demand stand-ins stay until spot replicas actually serve, so a spot replica that just got a node does
    not pull its stand-in away minutes before it is ready.
    """
    if not spec.pools.spot.enabled:
        return 0
    timeout = parse_duration(spec.pools.spot.pending_timeout)
    return sum(1 for age in starting if age is not None and age >= timeout)
