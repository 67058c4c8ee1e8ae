"""The autoscaler's policy, pure: (spec, state, observation, capacity, now) → the total replica target and why.

No I/O and no clock of its own, so every window is tested by passing times. The rules, in order:

1. **Token load** (the sizing rule). The fleet's prompt and generation token rates, divided by what one
   replica can do (``fleet.capacity.Capacity``: prefill tokens/s, and decode tokens/s at the batch where a step stays under
   ``DECODE_STEP_TARGET_S``), is the work in replica-equivalents; the fleet is sized so each replica runs at
   ``TARGET_UTILIZATION``, times ``1 + headroom`` (the CR's cost/SLO knob). The prompt rate counted is the
   busiest 30 s of the last minute when known (``prompt_tps_peak``), so a burst inside the minute is not
   averaged away. This is what lets a fleet shrink safely: queue depth and KV-cache usage stay
   near zero on a large GPU until the replica is saturated, so neither says how many replicas the load needs.
2. **Queue depth** (saturation guard). More than ``targetQueueDepthPerReplica`` waiting requests per current
   replica recommends at least ``ceil(waiting / target)`` replicas.
2b. **The SLO** (``ttftAttainmentTarget``). More of the last minute's first tokens late (over
   ``ttftP95Target``, ``ttft_miss_share`` from the TTFT histogram) than the target allows, while the SLO window
   (the last hour) has spent more than ``BUDGET_SPARE_SHARE`` of its error budget (or its figure is unknown),
   recommends at least the ready replicas times (1 + the late share), at least one more; any late first token
   forbids shrinking. Both windows, as a multiwindow burn-rate alert: one late minute in an hour well inside its
   budget is what the budget is for (on the conversation trace: $8.40 at 99.3 % instead of $9.14 at 99.5 %).
   The minute counts whenever it had first tokens, not only while requests are in flight at the tick: a burst
   has often drained by then. On a bursty trace (Azure's code completions) the minute's p95 and mean rates
   stayed fine while 6 % of first tokens were late: this is the rule that sees it.
3. **TTFT** (latency guard). With traffic flowing, a TTFT p95 above ``ttftP95Target`` recommends at least the
   *ready* replicas times the overshoot (at least one more). Ready, not desired: replicas still starting
   (minutes for a GPU engine) are capacity on its way, so a slow signal does not keep adding replicas.
4. **Shrinking** happens only with TTFT p95 under ``TTFT_DOWN_FRACTION`` of the target (hysteresis), to the
   largest of the token-load count, the queue count and the KV-cache count (``KV_HIGH_WATER``). Without token
   rates (an engine that does not export them) it shrinks one replica at a time.
5. **Bounds.** ``minReplicas`` ≤ target ≤ ``maxReplicas``, those of an open ``schedules`` window while one is
   (``fleet.schedule``: a predictable daily peak is met before it arrives, which no load signal can do); growth per decision is capped at double (and at
   least +4), as the HPA's default policy does. With ``scaleToZero`` on, a fleet that saw no request for
   ``idleAfter`` goes to zero, and the first request seen wakes it at once (no window: it is waiting). It only
   goes to zero while the gateway's request rate is visible (``arrivals``), the one signal that can wake it.
6. **Reclaims are lost capacity, not a smaller load.** While replicas lost to a reclaim notice (or a crash) are
   being replaced (``Observation.replacing``, from ``fleet.reclaim.replacing``), the target never falls: the fewer ready
   replicas and their hotter figures say nothing about how many the load needs. The operator (from its
   Reclaim condition) and the fleet simulator (from its own reclaims) both feed this one rule.
7. **Windows** (the HPA's stabilisation): the target rises only to the *lowest* recommendation of the last
   ``scaleUpWindow`` and falls only to the *highest* of the last max(``scaleDownWindow``, ``loadMemory``), and
   only once the history covers the window; so a spike shorter than the window moves nothing, and a burst's
   replicas stay warm for ``loadMemory`` (default 15 min) in case it recurs (bursts shorter than a cold start
   cannot be met by scaling up when they arrive). The memory is spent only while it is needed: when the last
   hour (``SLO_WINDOW``) kept its late first tokens under ``BUDGET_SPARE_SHARE`` of the error budget
   (``budget_spare``), the fleet shrinks after ``scaleDownWindow`` alone. On Azure's smooth conversation trace
   this sheds the burst replicas in the lulls (99.3 % attainment at $8.40 instead of 99.9 % at $9.39 for a
   fixed fleet); on the bursty code trace the budget is spent, and the memory holds (``bench/policies.py``).

No metrics (Prometheus down, no series yet) holds the target: scaling on missing data is how fleets
collapse. The figures are vLLM's own series (``vllm:num_requests_waiting``, ``vllm:time_to_first_token_seconds``,
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``, ``vllm:kv_cache_usage_perc``), which
engine-sim exports too; the fleet simulator runs this same policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from llmfleet.api.conditions import ScaleReason
from llmfleet.api.quantity import parse_duration
from llmfleet.api.v1alpha1 import AutoscalingSpec, LLMDeploymentSpec
from llmfleet.fleet.capacity import Capacity
from llmfleet.fleet.pools import bounded, clamp, initial_replicas
from llmfleet.fleet.schedule import scheduled

KV_HIGH_WATER = 0.75  # KV usage a replica may reach after a scale-down
TARGET_UTILIZATION = 0.7  # share of a replica's token capacity the fleet is sized for
TTFT_DOWN_FRACTION = 0.6  # shrink only while TTFT p95 is below this share of the target
MAX_GROWTH_FACTOR = 2.0
# What the prompt rate counts: the tokens the GPUs prefilled (vLLM's local_compute source), or every prompt
# token, prefix-cache hits included, from an engine that does not split them (an over-count of the work).
PromptSource = Literal["local_compute", "all"]
PROMPT_COMPUTED: PromptSource = "local_compute"
PROMPT_ALL: PromptSource = "all"
MIN_GROWTH_STEP = 4
SLO_WINDOW = "1h"  # the window the TTFT attainment target is held over (the error budget's)
# loadMemory holds a burst's replicas only while the SLO window has spent more than this share of its error
# budget (1 - ttftAttainmentTarget): a fleet well inside its SLO sheds them after scaleDownWindow.
BUDGET_SPARE_SHARE = 0.8


@dataclass(frozen=True)
class Observation:
    """Fleet-wide figures for one decision (sums over the deployment's engine replicas)."""

    waiting: float  # vllm:num_requests_waiting
    running: float  # vllm:num_requests_running
    ready: int  # engine replicas reporting
    ttft_p95: float | None = None  # seconds, over the last minute; None: no request finished a first token
    kv_usage: float | None = None  # mean vllm:kv_cache_usage_perc, 0..1
    arrivals: float | None = None  # requests per second reaching the gateway; None: unknown
    prompt_tps: float | None = (
        None  # prompt tokens per second, whole fleet (rate of vllm:prompt_tokens_total)
    )
    generation_tps: float | None = None  # generated tokens per second, whole fleet
    prompt_tps_peak: float | None = None  # the busiest 30 s of the last minute's prompt rate (bursts)
    # Share of the last minute's first tokens slower than the TTFT target (from the TTFT histogram: the bucket
    # at or below the target); None: no first token in the minute, or unknown.
    ttft_miss_share: float | None = None
    # The same share over the SLO window (``SLO_WINDOW``, the last hour): the error budget spent; None: unknown.
    ttft_miss_share_window: float | None = None
    replacing: int = 0  # replicas lost to a reclaim whose replacements do not serve yet
    prompt_source: PromptSource | None = None  # what prompt_tps counts: PROMPT_COMPUTED or PROMPT_ALL

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
class ScaleDecision:
    target: int
    recommendation: int
    reason: str  # a sentence: why the target is what it is
    state: ScaleState
    previous: int
    cause: ScaleReason = ScaleReason.HOLDING  # the typed reason (llmfleet.api.conditions.ScaleReason)

    @property
    def changed(self) -> bool:
        return self.target != self.previous


def initial_state(spec: LLMDeploymentSpec, last_target: int | None, now: datetime) -> ScaleState:
    """Where a fresh operator starts: the target it last wrote to status, else the fleet's initial size
    (``fleet.pools.initial_replicas``: spec.replicas, else minReplicas)."""
    start = last_target if last_target is not None else initial_replicas(spec)
    return ScaleState(target=bounded(spec.autoscaling, start), active_at=now, spec_replicas=spec.replicas)


def peak_work(obs: Observation, capacity: Capacity | None) -> float | None:
    """The token work in replica-equivalents, its prompt part at the last minute's busiest 30 s when known."""
    if capacity is None:
        return None
    prompt = obs.prompt_tps
    if prompt is not None and obs.prompt_tps_peak is not None:
        prompt = max(prompt, obs.prompt_tps_peak)
    return capacity.replicas_for(prompt, obs.generation_tps)


def recommend(
    spec: AutoscalingSpec,
    obs: Observation,
    current: int,
    capacity: Capacity | None = None,
) -> tuple[int, str]:
    """The replica count these figures call for, before bounds and windows, and why."""
    n, reason, _ = _recommend(spec, obs, current, capacity)
    return n, reason


def _recommend(
    spec: AutoscalingSpec,
    obs: Observation,
    current: int,
    capacity: Capacity | None = None,
) -> tuple[int, str, ScaleReason]:
    q = spec.target_queue_depth_per_replica
    ttft_target = parse_duration(spec.ttft_p95_target)
    if current == 0:
        if obs.busy:
            return (
                max(1, math.ceil(obs.waiting / q)),
                "requests arrived while scaled to zero",
                ScaleReason.WAKE,
            )
        return 0, "no requests", ScaleReason.IDLE
    work = peak_work(obs, capacity)
    room = (1.0 + spec.headroom) / TARGET_UTILIZATION
    by_load = math.ceil(work * room - 1e-9) if work is not None else 0
    load = (
        f"token load {work:.2f} replicas at {TARGET_UTILIZATION:.0%}"
        + (f" with {spec.headroom:.0%} headroom" if spec.headroom else "")
        if work is not None
        else ""
    )
    if obs.waiting > q * current:
        want = math.ceil(obs.waiting / q)
        return max(want, by_load), f"queue depth {obs.waiting:g} > {q:g}×{current}", ScaleReason.QUEUE_DEPTH
    # The SLO itself: more of the minute's first tokens late than the attainment target allows. Bursts shorter
    # than the minute hide in its p95 and mean rates, not here. Read whenever the minute had first tokens, not
    # only while requests are in flight at the tick: a burst is often over by then, and it is the evidence.
    # It grows the fleet only while the SLO window is burning its budget (both windows, as a multiwindow
    # burn-rate alert): one late minute in an hour well inside the target is what the budget is for.
    miss = obs.ttft_miss_share
    allowed = 1.0 - spec.ttft_attainment_target
    spare = budget_spare(spec, obs)
    if miss is not None and miss > allowed + 1e-9 and not spare:
        base = max(obs.ready, 1)
        want = max(base + 1, math.ceil(base * (1.0 + miss)))
        return (
            max(want, by_load),
            f"{miss:.1%} of first tokens over the {ttft_target * 1000:.0f}ms target "
            f"(ttftAttainmentTarget {spec.ttft_attainment_target:.1%})",
            ScaleReason.TTFT_ATTAINMENT,
        )
    # TTFT is a minute's quantile: once traffic stops it still shows the last burst, which needs no replicas.
    ttft = obs.ttft_p95 if obs.busy else None
    if ttft is not None and ttft > ttft_target:
        base = max(obs.ready, 1)
        want = max(base + 1, math.ceil(base * ttft / ttft_target))
        return (
            max(want, by_load),
            f"TTFT p95 {ttft * 1000:.0f}ms > {ttft_target * 1000:.0f}ms target",
            ScaleReason.TTFT_P95,
        )
    if by_load > current:
        return (
            by_load,
            f"{load} needs {by_load} (rates: prompt {obs.prompt_tps:.0f}, generation {obs.generation_tps:.0f} tokens/s)",
            ScaleReason.TOKEN_LOAD,
        )
    if miss:
        within = (
            f" (the last {SLO_WINDOW} is within its error budget: not growing)"
            if spare and miss > allowed + 1e-9
            else ""
        )
        return (
            current,
            f"{miss:.1%} of first tokens over the target: not shrinking{within}",
            ScaleReason.HOLDING,
        )
    if ttft is not None and ttft > TTFT_DOWN_FRACTION * ttft_target:
        return (
            current,
            f"TTFT p95 {ttft * 1000:.0f}ms is near the {ttft_target * 1000:.0f}ms target",
            ScaleReason.HOLDING,
        )
    kv = obs.kv_usage
    if kv is None and obs.running > 0:
        return current, "no KV-cache usage reported; holding", ScaleReason.HOLDING
    need = max(
        by_load,
        math.ceil(obs.waiting / q),
        math.ceil(max(obs.ready, 1) * (kv or 0.0) / KV_HIGH_WATER),
        1 if obs.busy else 0,
    )
    if work is None and obs.busy:
        need = max(need, current - 1)  # no token rates: shrink one step at a time
    figures = f"queue {obs.waiting:g}, KV cache {kv or 0.0:.0%}" + (f", {load}" if load else "")
    n = min(need, current)
    return n, f"load fits {n} replica{'s' if n != 1 else ''} ({figures})", ScaleReason.LOAD_FITS


def budget_spare(spec: AutoscalingSpec, obs: Observation | None) -> bool:
    """True when the last ``SLO_WINDOW`` kept well inside the TTFT attainment target (late first tokens under
    ``BUDGET_SPARE_SHARE`` of the error budget): then loadMemory need not hold a burst's replicas. Unknown
    (no window figure) is not spare: the memory holds."""
    share = obs.ttft_miss_share_window if obs is not None else None
    if share is None:
        return False
    return share <= (1.0 - spec.ttft_attainment_target) * BUDGET_SPARE_SHARE + 1e-12


def _window(history: tuple[tuple[datetime, int], ...], now: datetime, seconds: float) -> list[int] | None:
    """Recommendations in effect over the last ``seconds``; None while the history is shorter than that."""
    start = now - timedelta(seconds=seconds)
    if not history or history[0][0] > start:
        return None
    before = [r for t, r in history if t <= start]
    return before[-1:] + [r for t, r in history if t > start]


def _stabilised(
    spec: AutoscalingSpec,
    history: tuple[tuple[datetime, int], ...],
    now: datetime,
    current: int,
    rec: int,
    reason: str,
    to_zero: bool,
    down_s: float,
    spare: bool,
) -> tuple[int, str]:
    """The target the windows let through: up to the lowest recommendation of scaleUpWindow, down to the highest
    of ``down_s``; waking from zero and going to zero have no window (idleAfter is that one's)."""
    if current == 0 and rec > 0:
        return rec, reason  # waking from zero: requests are waiting, no window
    if to_zero:
        return 0, reason
    if rec > current:
        up = _window(history, now, parse_duration(spec.scale_up_window))
        target = max(current, min(up)) if up else current
        if target == current:
            reason = f"{reason}; waiting out scaleUpWindow {spec.scale_up_window}"
        return target, reason
    if rec < current:
        down = _window(history, now, down_s)
        target = min(current, max(down)) if down else current
        if target == current:
            memory = "" if spare else f" (loadMemory {spec.load_memory})"
            reason = f"{reason}; waiting out scaleDownWindow {spec.scale_down_window}{memory}"
        return target, reason
    return current, reason


def decide(
    spec: AutoscalingSpec,
    state: ScaleState,
    obs: Observation | None,
    now: datetime,
    spec_replicas: int | None = None,
    capacity: Capacity | None = None,
) -> ScaleDecision:
    current = state.target
    spec, windows = scheduled(spec, now)
    by = f" (schedule {', '.join(windows)})" if windows else ""
    if spec_replicas is not None and spec_replicas != state.spec_replicas:
        # `kubectl scale llmd` (or an edit of spec.replicas): the autoscaler goes on from the new figure.
        target = clamp(spec, spec_replicas)
        fresh = ScaleState(target=target, active_at=now, spec_replicas=spec_replicas)
        return ScaleDecision(
            target, target, f"spec.replicas set to {spec_replicas}", fresh, current, ScaleReason.MANUAL
        )
    bounded = clamp(spec, current)
    if current != bounded and not (current == 0 and spec.scale_to_zero.enabled):
        state = replace(state, target=bounded, history=())
        return ScaleDecision(
            bounded,
            bounded,
            f"kept within minReplicas..maxReplicas ({spec.min_replicas}..{spec.max_replicas}){by}",
            state,
            current,
            ScaleReason.BOUNDS,
        )
    if obs is None:
        return ScaleDecision(
            current,
            current,
            f"no metrics; holding {current} replicas",
            state,
            current,
            ScaleReason.NO_METRICS,
        )

    active_at = now if obs.busy else state.active_at
    idle_for = (now - active_at).total_seconds() if active_at else 0.0
    # Only with the gateway's request rate in view (arrivals not None): without it nothing could wake the fleet.
    to_zero = (
        spec.scale_to_zero.enabled
        and obs.arrivals is not None
        and not obs.busy
        and idle_for >= parse_duration(spec.scale_to_zero.idle_after)
    )
    if to_zero:
        idle = f"{idle_for / 60:.0f}m" if idle_for >= 120 else f"{idle_for:.0f}s"
        rec, reason = 0, f"no requests for {idle} (scaleToZero.idleAfter {spec.scale_to_zero.idle_after})"
        cause = ScaleReason.IDLE
    else:
        rec, reason, cause = _recommend(spec, obs, current, capacity)
        growth_cap = max(math.ceil(current * MAX_GROWTH_FACTOR), current + MIN_GROWTH_STEP)
        if rec > growth_cap:
            rec, reason = growth_cap, f"{reason}; growth capped at {growth_cap}"
        floor = spec.min_replicas if current > 0 or rec > 0 else 0
        if rec < floor:
            rec, reason, cause = floor, f"{reason}; minReplicas {floor}{by}", ScaleReason.BOUNDS
        elif rec > spec.max_replicas:
            rec, reason = spec.max_replicas, f"{reason}; maxReplicas {spec.max_replicas}{by}"
        if obs.replacing and rec < current:
            rec, reason = (
                current,
                (
                    f"holding {current}: {obs.replacing} replica(s) lost to a reclaim are being "
                    f"replaced (lost capacity, not a smaller load; {reason})"
                ),
            )

    spare = budget_spare(spec, obs)
    down_s = parse_duration(spec.scale_down_window)
    if not spare:
        down_s = max(down_s, parse_duration(spec.load_memory))
    # The history always covers loadMemory, so the memory is whole again the moment the budget is spent.
    keep = max(parse_duration(spec.scale_up_window), down_s, parse_duration(spec.load_memory))
    horizon = now - timedelta(seconds=keep)
    older = [h for h in state.history if h[0] <= horizon][-1:]
    history = (*older, *(h for h in state.history if h[0] > horizon), (now, rec))
    state = replace(state, history=history, active_at=active_at)

    target, reason = _stabilised(spec, history, now, current, rec, reason, to_zero, down_s, spare)
    return ScaleDecision(target, rec, reason, replace(state, target=target), current, cause)
