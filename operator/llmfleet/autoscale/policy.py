"""The autoscaler's policy, pure: (spec, state, observation, now) → the total replica target and why.

No I/O and no clock of its own, so every window is tested by passing times. The rules, in order:

1. **Queue depth.** More than ``targetQueueDepthPerReplica`` waiting requests per current replica
   recommends ``ceil(waiting / target)`` replicas: enough that the queue spread over the fleet is at the target.
2. **TTFT.** A TTFT p95 above ``ttftP95Target`` recommends the *ready* replicas times the overshoot
   (``p95 / target``, at least one more). Ready, not desired: replicas still starting (minutes for a GPU
   engine) are capacity on its way, so a slow signal does not keep adding replicas while they boot.
3. **Shrinking** is only considered with an empty-enough queue and TTFT p95 under
   ``TTFT_DOWN_FRACTION`` of the target (hysteresis): the fleet may shrink to the replicas whose KV cache
   would stay under ``KV_HIGH_WATER`` with the same load (vLLM preempts sequences when the cache fills).
4. **Bounds.** ``minReplicas`` ≤ target ≤ ``maxReplicas``; growth per decision is capped at double (and at
   least +4), as the HPA's default policy does. With ``scaleToZero`` on, a fleet that saw no request for
   ``idleAfter`` goes to zero, and the first request seen wakes it at once (no window: it is waiting).
5. **Windows** (the HPA's stabilisation): the target rises only to the *lowest* recommendation of the last
   ``scaleUpWindow`` and falls only to the *highest* of the last ``scaleDownWindow``, and only once the
   history covers the window; so a spike shorter than the window moves nothing.

No metrics (Prometheus down, no series yet) holds the target: scaling on missing data is how fleets
collapse. Queue depth and TTFT come from ``vllm:num_requests_waiting`` and
``vllm:time_to_first_token_seconds``, the same series engine-sim exports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from llmfleet.api.quantity import parse_duration
from llmfleet.api.v1alpha1 import AutoscalingSpec

KV_HIGH_WATER = 0.75  # KV usage a replica may reach after a scale-down
TTFT_DOWN_FRACTION = 0.6  # shrink only while TTFT p95 is below this share of the target
MAX_GROWTH_FACTOR = 2.0
MIN_GROWTH_STEP = 4


@dataclass(frozen=True)
class Observation:
    """Fleet-wide figures for one decision (sums over the deployment's engine replicas)."""

    waiting: float  # vllm:num_requests_waiting
    running: float  # vllm:num_requests_running
    ready: int  # engine replicas reporting
    ttft_p95: float | None = None  # seconds, over the last minute; None: no request finished a first token
    kv_usage: float | None = None  # mean vllm:kv_cache_usage_perc, 0..1
    arrivals: float | None = None  # requests per second reaching the gateway; None: unknown

    @property
    def busy(self) -> bool:
        return self.waiting > 0 or self.running > 0 or bool(self.arrivals)


@dataclass(frozen=True)
class ScaleState:
    """What the autoscaler remembers between decisions (in the operator's memory, like the HPA's)."""

    target: int
    history: tuple[tuple[datetime, int], ...] = ()  # recommendations, oldest first
    active_at: datetime | None = None  # last time any request was seen
    spec_replicas: int | None = None  # spec.replicas when last seen: a change is a manual scale


@dataclass(frozen=True)
class Decision:
    target: int
    recommendation: int
    reason: str  # a sentence: why the target is what it is
    state: ScaleState
    previous: int

    @property
    def changed(self) -> bool:
        return self.target != self.previous


def clamp(spec: AutoscalingSpec, n: int) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, n))


def initial_state(spec: AutoscalingSpec, spec_replicas: int | None, last_target: int | None,
                  now: datetime) -> ScaleState:
    """Where a fresh operator starts: the target it last wrote to status, else spec.replicas, else minReplicas."""
    if last_target is not None:
        start = last_target
    elif spec_replicas is not None:
        start = spec_replicas
    else:
        start = spec.min_replicas
    target = start if start == 0 and spec.scale_to_zero.enabled else clamp(spec, start)
    return ScaleState(target=target, active_at=now, spec_replicas=spec_replicas)


def recommend(spec: AutoscalingSpec, obs: Observation, current: int) -> tuple[int, str]:
    """The replica count these figures call for, before bounds and windows."""
    q = spec.target_queue_depth_per_replica
    ttft_target = parse_duration(spec.ttft_p95_target)
    if current == 0:
        if obs.busy:
            return max(1, math.ceil(obs.waiting / q)), "requests arrived while scaled to zero"
        return 0, "no requests"
    if obs.waiting > q * current:
        return math.ceil(obs.waiting / q), f"queue depth {obs.waiting:g} > {q:g}×{current}"
    if obs.ttft_p95 is not None and obs.ttft_p95 > ttft_target:
        base = max(obs.ready, 1)
        want = max(base + 1, math.ceil(base * obs.ttft_p95 / ttft_target))
        return want, f"TTFT p95 {obs.ttft_p95 * 1000:.0f}ms > {ttft_target * 1000:.0f}ms target"
    if obs.ttft_p95 is not None and obs.ttft_p95 > TTFT_DOWN_FRACTION * ttft_target:
        return current, f"TTFT p95 {obs.ttft_p95 * 1000:.0f}ms is near the {ttft_target * 1000:.0f}ms target"
    if obs.kv_usage is None and obs.running > 0:
        return current, "no KV-cache usage reported; holding"
    kv = obs.kv_usage or 0.0
    need = max(math.ceil(obs.waiting / q), math.ceil(max(obs.ready, 1) * kv / KV_HIGH_WATER), 1 if obs.busy else 0)
    if need >= current:
        return current, f"load fits {current} replicas (queue {obs.waiting:g}, KV cache {kv:.0%})"
    return need, f"load fits {need} replicas (queue {obs.waiting:g}, KV cache {kv:.0%})"


def _window(history: tuple[tuple[datetime, int], ...], now: datetime, seconds: float) -> list[int] | None:
    """Recommendations in effect over the last ``seconds``; None while the history is shorter than that."""
    start = now - timedelta(seconds=seconds)
    if not history or history[0][0] > start:
        return None
    before = [r for t, r in history if t <= start]
    return before[-1:] + [r for t, r in history if t > start]


def decide(spec: AutoscalingSpec, state: ScaleState, obs: Observation | None, now: datetime,
           spec_replicas: int | None = None) -> Decision:
    current = state.target
    if spec_replicas is not None and spec_replicas != state.spec_replicas:
        # `kubectl scale llmd` (or an edit of spec.replicas): the autoscaler goes on from the new figure.
        target = clamp(spec, spec_replicas)
        fresh = ScaleState(target=target, active_at=now, spec_replicas=spec_replicas)
        return Decision(target, target, f"spec.replicas set to {spec_replicas}", fresh, current)
    bounded = clamp(spec, current)
    if current != bounded and not (current == 0 and spec.scale_to_zero.enabled):
        state = replace(state, target=bounded, history=())
        return Decision(bounded, bounded, f"kept within minReplicas..maxReplicas "
                        f"({spec.min_replicas}..{spec.max_replicas})", state, current)
    if obs is None:
        return Decision(current, current, f"no metrics; holding {current} replicas", state, current)

    active_at = now if obs.busy else state.active_at
    idle_for = (now - active_at).total_seconds() if active_at else 0.0
    to_zero = spec.scale_to_zero.enabled and not obs.busy and idle_for >= parse_duration(spec.scale_to_zero.idle_after)
    if to_zero:
        rec, reason = 0, f"no requests for {idle_for / 60:.0f}m (scaleToZero.idleAfter {spec.scale_to_zero.idle_after})"
    else:
        rec, reason = recommend(spec, obs, current)
        growth_cap = max(math.ceil(current * MAX_GROWTH_FACTOR), current + MIN_GROWTH_STEP)
        if rec > growth_cap:
            rec, reason = growth_cap, f"{reason}; growth capped at {growth_cap}"
        floor = spec.min_replicas if current > 0 or rec > 0 else 0
        rec = max(floor, min(spec.max_replicas, rec))

    keep = max(parse_duration(spec.scale_up_window), parse_duration(spec.scale_down_window))
    horizon = now - timedelta(seconds=keep)
    older = [h for h in state.history if h[0] <= horizon][-1:]
    history = (*older, *(h for h in state.history if h[0] > horizon), (now, rec))
    state = replace(state, history=history, active_at=active_at)

    if current == 0 and rec > 0:
        target = rec  # waking from zero: requests are waiting, no window
    elif to_zero:
        target = 0  # idleAfter is the window
    elif rec > current:
        up = _window(history, now, parse_duration(spec.scale_up_window))
        target = max(current, min(up)) if up else current
        if target == current:
            reason = f"{reason}; waiting out scaleUpWindow {spec.scale_up_window}"
    elif rec < current:
        down = _window(history, now, parse_duration(spec.scale_down_window))
        target = min(current, max(down)) if down else current
        if target == current:
            reason = f"{reason}; waiting out scaleDownWindow {spec.scale_down_window}"
    else:
        target = current
    return Decision(target, rec, reason, replace(state, target=target), current)
