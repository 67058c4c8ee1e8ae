"""The fleet simulator behind ``llmfleet simulate``: a discrete-event replay of a request trace through a fleet
of engine replicas (each the continuous-batching ``perfmodel`` of engine-sim), routed least-outstanding as the
gateway does, scaled by the autoscaler's own pure policy, with cold starts, spot reclaims and on-demand fallback.
A reclaimed replica drains for the notice and is replaced in its pool; the policy holds the target meanwhile
through the same rule the operator feeds (``fleet.reclaim.replacing``).

``policies`` replays the same trace through the scaling policies users would pick instead
(``sim.baselines``: KubeAI-, KEDA- and HPA-like) and through ``static_peak``, the smallest static fleet that
keeps ``SLO_GOAL`` of first tokens within the CR's TTFT target; every run reports that share
(``ttft_slo_attainment``, an unserved request counting as a miss).

Pure computation: no sockets, no wall clock; the same inputs give the same figures. What it models, and what
it leaves out, is stated in ``SimConfig``; where a figure comes from the trace or the catalog it says so.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from llmfleet.api.quantity import parse_duration
from llmfleet.api.sizing import Sizing, size
from llmfleet.api.v1alpha1 import LLMDeploymentSpec
from llmfleet.autoscale.policy import SLO_WINDOW, Observation, ScaleState, decide
from llmfleet.fleet.capacity import EngineProfile, capacity_of
from llmfleet.fleet.pools import clamp, initial_replicas, late_spot, split_replicas
from llmfleet.fleet.reclaim import replacing
from llmfleet.sim.baselines import BASELINES, Baseline, baseline
from llmfleet.sim.perfmodel import FastBatchEngine, SimRequest
from llmfleet.traces import TraceRequest
from llmfleet.traces import read_azure_trace as read_azure_trace  # re-exported: the simulator's callers
from llmfleet.traces import shape as shape

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # simulated time 0 as the policy's clock sees it


@dataclass(frozen=True)
class SimConfig:
    cold_start_s: float = 120.0  # pod scheduled → engine serving (image + weights); ARCHITECTURE §4: 1-5 min
    tick_s: float = 15.0  # autoscaler interval (the operator's default)
    spot_reclaims_per_hour: float = 0.0  # per spot replica; a reclaim gives spot_notice_s notice
    spot_capacity: int | None = None  # spot replicas the provider can give at once; None: as many as asked
    spot_notice_s: float = 120.0
    drain_s: float = 45.0  # vLLM --shutdown-timeout: in-flight requests may finish, new ones go elsewhere
    static_replicas: int | None = None  # baseline: this many on-demand replicas, no autoscaler
    static_pools: bool = (
        False  # with static_replicas: split over the CR's pools as llmfleet does (spot first)
    )
    policy: str = "llmfleet"  # or a baseline of llmfleet.sim.baselines (kubeai-like, keda-queue, hpa-like)
    warmup_s: float = 0.0  # requests arriving earlier and cost before it are left out of the figures
    initial_replicas: int | None = None  # the autoscaled fleet starts warm at this target; None: minReplicas
    seed: int = 0


@dataclass
class Replica:
    id: int
    pool: str  # spot | on-demand
    engine: FastBatchEngine
    created: float
    ready_at: float | None  # None: pending (no spot capacity)
    draining_until: float | None = None
    stopped: float | None = None
    busy_until: float = 0.0  # the engine's current step ends here
    stepping: bool = False
    billed_from: float | None = None  # when it got a node: billing and replica-hours count from here

    def serving(self, now: float) -> bool:
        return (
            self.ready_at is not None
            and self.ready_at <= now
            and self.draining_until is None
            and self.stopped is None
        )

    @property
    def outstanding(self) -> int:
        return len(self.engine.waiting) + len(self.engine.running)


@dataclass
class Stats:
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    lost: int = 0  # in flight on a reclaimed spot replica past the notice
    scale_events: list[dict[str, Any]] = field(default_factory=list)
    cost: float = 0.0
    replica_seconds: dict[str, float] = field(default_factory=lambda: {"spot": 0.0, "on-demand": 0.0})
    peak_replicas: int = 0
    reclaims: int = 0
    fallback_seconds: float = 0.0
    slo_met: int = 0  # counted requests whose first token came within the CR's ttftP95Target
    # For --plot: (arrival, TTFT) of every counted first token; per tick (time, spot, on-demand serving,
    # target); the reclaim notices' times.
    first_tokens: list[tuple[float, float]] = field(default_factory=list)
    ticks: list[tuple[float, int, int, int]] = field(default_factory=list)
    reclaim_times: list[float] = field(default_factory=list)


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


class Fleet:
    def __init__(self, spec: LLMDeploymentSpec, sizing: Sizing, config: SimConfig) -> None:
        self.spec, self.sizing, self.config = spec, sizing, config
        self.profile = EngineProfile.for_spec(spec, sizing)
        self.capacity = capacity_of(self.profile)
        self.tokens: deque[tuple[float, int, int]] = (
            deque()
        )  # (time, prompt, generated) per step, last minute
        self.rng = random.Random(config.seed)
        self.replicas: list[Replica] = []
        self.ids = itertools.count()
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = itertools.count()
        self.queue: deque[str] = deque()  # request ids at the gateway while no replica serves
        self.started: dict[
            str, tuple[float, int, int]
        ] = {}  # in flight: id → (arrival, prompt, output tokens)
        self.first: dict[str, float] = {}  # in flight with a first token: id → TTFT
        # Arrival times over the last minute: the gateway's request rate, which the operator reads.
        self.arrived: deque[float] = deque()
        self.recent_ttft: deque[tuple[float, float]] = deque()
        self.window_ttft: deque[tuple[float, bool]] = deque()  # (time, late) over the SLO window
        self.window_late = 0
        self.window_s = parse_duration(SLO_WINDOW)
        self.stats = Stats()
        self.state: ScaleState | None = None
        self.target = 0
        self.reclaimed = 0  # replicas reclaimed since the fleet was last whole (fleet.reclaim.replacing)
        self.end = 0.0
        self.progress: Callable[[float], None] | None = None
        self._spot_slots = max(1, spec.pools.spot.max_replicas)
        self._pending_timeout = parse_duration(spec.pools.spot.pending_timeout)
        self._serving_cache: list[Replica] | None = None
        self.baseline: Baseline | None = baseline(config.policy) if config.policy in BASELINES else None
        self.tick_s = self.baseline.interval_s if self.baseline is not None else config.tick_s
        self.slo_s = parse_duration(spec.autoscaling.ttft_p95_target)

    # ------------------------------------------------------------------ events
    def at(self, t: float, kind: str, payload: Any = None) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, payload))

    def run(self, trace: Iterable[TraceRequest], progress: Callable[[float], None] | None = None) -> Stats:
        """Replay the trace; ``progress`` is called with the simulated time at each tick (a progress bar)."""
        self.progress = progress
        requests = list(trace)
        for i, r in enumerate(requests):
            self.at(r.at, "arrive", (f"q{i}", r))
        end = self.end = requests[-1].at if requests else 0.0
        a = self.spec.autoscaling
        if self.config.static_replicas is not None:
            self.target = self.config.static_replicas
        else:
            if self.baseline is not None:
                start = self.config.initial_replicas
                self.target = initial_replicas(self.spec) if start is None else clamp(a, start)
            elif a.enabled:
                start = self.config.initial_replicas
                self.target = initial_replicas(self.spec) if start is None else clamp(a, start)
                self.state = ScaleState(target=self.target, active_at=EPOCH, spec_replicas=self.spec.replicas)
            else:
                self.target = initial_replicas(self.spec)
            self.at(self.tick_s, "tick")  # the operator's tick: autoscaler and the spot pendingTimeout
        if self.config.static_replicas is not None:
            self.at(self.tick_s, "sample")  # no autoscaler: the Deployments' replacement and the series
        self._reconcile(0.0, warm=True)
        if any(r.ready_at is None for r in self.replicas):
            # A fleet that has been running already has its on-demand stand-ins for spot it could not get.
            for r in self.replicas:
                r.created -= self._pending_timeout
            self._reconcile(0.0, warm=True)
        if self.config.spot_reclaims_per_hour > 0:
            self.at(self._next_reclaim_gap(), "reclaim")
        now = 0.0
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            if kind in ("tick", "sample") and now > end and not self.started:
                break
            getattr(self, f"_on_{kind}")(now, payload)
        self._account(now)
        return self.stats

    def _next_reclaim_gap(self) -> float:
        """Reclaims are a Poisson process whose rate follows the spot replicas running; drawn by thinning:
        candidate events at the rate of a full spot pool, each a reclaim with probability running / full."""
        return self.rng.expovariate(self.config.spot_reclaims_per_hour / 3600.0 * self._spot_slots)

    # ------------------------------------------------------------------ requests
    def _on_arrive(self, now: float, payload: tuple[str, TraceRequest]) -> None:
        rid, r = payload
        self.started[rid] = (now, r.prompt_tokens, r.output_tokens)
        self.arrived.append(now)
        self.queue.append(rid)
        self._dispatch(now)

    def _serving(self, now: float) -> list[Replica]:
        """Replicas taking new requests; recomputed only after a replica started, began draining or stopped."""
        if self._serving_cache is None:
            self._serving_cache = [r for r in self.replicas if r.serving(now)]
        return self._serving_cache

    def _changed(self) -> None:
        self._serving_cache = None

    def _dispatch(self, now: float) -> None:
        serving = self._serving(now)
        while self.queue and serving:
            rid = self.queue.popleft()
            rep = min(serving, key=lambda r: r.outstanding)  # least-outstanding, as the gateway routes
            _, prompt, out = self.started[rid]
            rep.engine.submit(
                SimRequest(
                    id=rid, prompt_tokens=min(prompt, self.spec.model.max_model_len - out), max_tokens=out
                )
            )
            self._kick(rep, now)

    def _kick(self, rep: Replica, now: float) -> None:
        if not rep.stepping and not rep.engine.idle:
            rep.stepping = True
            self.at(max(now, rep.busy_until), "step", rep)

    def _on_step(self, now: float, rep: Replica) -> None:
        rep.stepping = False
        if rep.stopped is not None or rep.engine.idle:
            return
        res = rep.engine.step()
        done_at = now + res.duration_s
        rep.busy_until = done_at
        prompt = sum(self.started[rid][1] for rid in res.first_token)
        self.tokens.append((done_at, prompt, rep.engine.token_count))
        for rid in res.first_token:
            arrived = self.started[rid][0]
            ttft = done_at - arrived
            self.first[rid] = ttft
            if arrived >= self.config.warmup_s:
                self.stats.ttft.append(ttft)
                self.stats.first_tokens.append((arrived, ttft))
                self.stats.slo_met += ttft <= self.slo_s
            self.recent_ttft.append((done_at, ttft))
            self.window_ttft.append((done_at, ttft > self.slo_s))
            self.window_late += ttft > self.slo_s
        for rid in res.finished:
            arrived = self.started.pop(rid)[0]
            if arrived >= self.config.warmup_s:
                self.stats.e2e.append(done_at - arrived)
            self.first.pop(rid, None)
        self._kick(rep, done_at)

    # ------------------------------------------------------------------ capacity
    def _spot_capacity_left(self) -> bool:
        cap = self.config.spot_capacity
        in_use = sum(
            1 for r in self.replicas if r.pool == "spot" and r.stopped is None and r.ready_at is not None
        )
        return cap is None or in_use < cap

    def _new_replica(self, pool: str, now: float, warm: bool) -> Replica:
        has_capacity = pool != "spot" or self._spot_capacity_left()
        ready_at = (now if warm else now + self.config.cold_start_s) if has_capacity else None
        rep = Replica(
            next(self.ids),
            pool,
            FastBatchEngine(self.profile),
            created=now,
            ready_at=ready_at,
            billed_from=now if has_capacity else None,
        )
        if ready_at is not None:
            self.at(ready_at, "ready", rep)
        self.replicas.append(rep)
        self._changed()
        return rep

    def _on_ready(self, now: float, rep: Replica) -> None:
        self._changed()
        self._dispatch(now)

    def _live(self, pool: str) -> list[Replica]:
        return [r for r in self.replicas if r.pool == pool and r.stopped is None and r.draining_until is None]

    def _reconcile(self, now: float, warm: bool = False) -> None:
        """What the operator does with a target: split it over the pools, create and drain replicas."""
        if self.config.static_replicas is not None and not self.config.static_pools:
            want = {"on-demand": self.target, "spot": 0}
        else:
            late = late_spot(
                self.spec,
                (now - r.created for r in self._live("spot") if r.ready_at is None or r.ready_at > now),
            )
            counts = split_replicas(self.spec, self.target, late)
            want = {"on-demand": counts.on_demand, "spot": counts.spot}
            if counts.fallback and not warm:  # one tick's worth per tick that ran stand-ins
                self.stats.fallback_seconds += self.tick_s
        for pool, n in want.items():
            live = self._live(pool)
            for _ in range(n - len(live)):
                self._new_replica(pool, now, warm)
            # Scale down: not-ready replicas first (as the ReplicaSet controller does), then the least busy.
            for rep in sorted(live, key=lambda r: (r.serving(now), r.outstanding))[: max(0, len(live) - n)]:
                self._drain(rep, now, self.config.drain_s)
        self.stats.peak_replicas = max(
            self.stats.peak_replicas, sum(1 for r in self.replicas if r.stopped is None)
        )
        self._try_spot_capacity(now)

    def _try_spot_capacity(self, now: float) -> None:
        for rep in self.replicas:
            if (
                rep.pool == "spot"
                and rep.ready_at is None
                and rep.stopped is None
                and rep.draining_until is None
            ):
                if not self._spot_capacity_left():
                    return
                rep.ready_at, rep.billed_from = now + self.config.cold_start_s, now
                self.at(rep.ready_at, "ready", rep)

    def _drain(self, rep: Replica, now: float, grace: float) -> None:
        rep.draining_until = now + grace
        self._changed()
        if rep.engine.idle or rep.ready_at is None or rep.ready_at > now:
            self._stop(rep, now)
        else:
            self.at(rep.draining_until, "stop", rep)

    def _on_stop(self, now: float, rep: Replica) -> None:
        self._stop(rep, now)

    def _stop(self, rep: Replica, now: float) -> None:
        if rep.stopped is not None:
            return
        rep.stopped = now
        self._changed()
        for rid in [*rep.engine.running, *(r.id for r in rep.engine.waiting)]:
            if rid in self.first:  # the client already has part of the answer: it cannot be retried
                if self.started[rid][0] >= self.config.warmup_s:
                    self.stats.lost += 1
                self.started.pop(rid, None)
                self.first.pop(rid, None)
            else:
                self.queue.appendleft(rid)  # never started: the gateway retries it elsewhere
        self._account_replica(rep, now)
        self.replicas.remove(rep)
        self._dispatch(now)

    def _on_reclaim(self, now: float, _: Any) -> None:
        spot = [
            r
            for r in self.replicas
            if r.pool == "spot" and r.stopped is None and r.ready_at is not None and r.draining_until is None
        ]
        slot = self.rng.randrange(self._spot_slots)
        if slot < len(spot):
            self.stats.reclaims += 1
            self.stats.reclaim_times.append(now)
            self.reclaimed += 1
            self._drain(spot[slot], now, self.config.spot_notice_s)
        if now < self.end or self.started:
            self.at(now + self._next_reclaim_gap(), "reclaim")

    # ------------------------------------------------------------------ autoscaler
    def observe(self, now: float) -> Observation:
        """What Prometheus would answer now: gauges as they are, TTFT p95 and token rates over the last minute."""
        window = now - 60.0
        while self.recent_ttft and self.recent_ttft[0][0] < window:
            self.recent_ttft.popleft()
        while self.tokens and self.tokens[0][0] < window:
            self.tokens.popleft()
        while self.arrived and self.arrived[0] < window:
            self.arrived.popleft()
        span = min(60.0, max(now, 1e-9))
        serving = self._serving(now)
        waiting = len(self.queue) + sum(len(r.engine.waiting) for r in serving)
        kv = sum(r.engine.kv_usage for r in serving) / len(serving) if serving else None
        if len(serving) >= self.target:
            self.reclaimed = (
                0  # every reclaimed replica is replaced (the operator's Reclaim condition: Replaced)
            )
        # The busiest 30 s of the last minute, sampled every 15 s, as the operator's PromQL subquery reads it.
        peak = 0.0
        for k in range(3):
            hi = now - 15.0 * k
            peak = max(peak, sum(p for t, p, _ in self.tokens if hi - 30.0 < t <= hi) / 30.0)
        recent = [t for _, t in self.recent_ttft]
        while self.window_ttft and self.window_ttft[0][0] < now - self.window_s:
            self.window_late -= self.window_ttft.popleft()[1]
        n = len(self.window_ttft)
        return Observation(
            prompt_tps_peak=peak,
            # rate(llmfleet_gateway_received_requests_total[1m]), which the operator reads from the gateway
            arrivals=len(self.arrived) / span,
            ttft_miss_share_window=self.window_late / n if n else None,
            ttft_miss_share=sum(t > self.slo_s for t in recent) / len(recent) if recent else None,
            waiting=waiting,
            running=sum(len(r.engine.running) for r in serving),
            ready=len(serving),
            ttft_p95=quantile([t for _, t in self.recent_ttft], 0.95),
            kv_usage=kv,
            prompt_tps=sum(p for _, p, _ in self.tokens) / span,
            generation_tps=sum(g for _, _, g in self.tokens) / span,
            replacing=replacing(self.reclaimed, self.target, len(serving)),
        )

    def _on_tick(self, now: float, _: Any) -> None:
        if self.baseline is not None:
            a = self.spec.autoscaling
            target = max(
                a.min_replicas, min(a.max_replicas, self.baseline.decide(self.observe(now), self.target, now))
            )
            if target != self.target:
                self.stats.scale_events.append(
                    {"t": round(now, 1), "from": self.target, "to": target, "reason": self.config.policy}
                )
            self.target = target
        elif self.state is not None:
            d = decide(
                self.spec.autoscaling,
                self.state,
                self.observe(now),
                EPOCH + timedelta(seconds=now),
                capacity=self.capacity,
            )
            self.state = d.state
            if d.changed:
                self.stats.scale_events.append(
                    {"t": round(now, 1), "from": d.previous, "to": d.target, "reason": d.reason}
                )
            self.target = d.target
        self._reconcile(now)
        self._sample(now)
        self.at(now + self.tick_s, "tick")

    def _on_sample(self, now: float, _: Any) -> None:
        """A static fleet's tick: no autoscaler, but its Deployments still replace reclaimed replicas."""
        self._reconcile(now)
        self._sample(now)
        self.at(now + self.tick_s, "sample")

    def _sample(self, now: float) -> None:
        serving = self._serving(now)
        spot = sum(1 for r in serving if r.pool == "spot")
        self.stats.ticks.append((now, spot, len(serving) - spot, self.target))
        if self.progress is not None:
            self.progress(min(now, self.end))

    # ------------------------------------------------------------------ cost
    def _account_replica(self, rep: Replica, now: float) -> None:
        if rep.billed_from is None:
            return  # a spot replica that never got a node: nothing billed
        seconds = max(0.0, now - max(rep.billed_from, self.config.warmup_s))
        self.stats.replica_seconds[rep.pool] += seconds
        price = (
            self.sizing.spot_per_replica_hour
            if rep.pool == "spot"
            else self.sizing.on_demand_per_replica_hour
        )
        self.stats.cost += price * seconds / 3600.0

    def _account(self, now: float) -> None:
        for rep in self.replicas:
            if rep.stopped is None:
                rep.stopped = now
                self._account_replica(rep, now)


def simulate(
    spec: LLMDeploymentSpec,
    trace: list[TraceRequest],
    config: SimConfig,
    progress: Callable[[float], None] | None = None,
    series: bool = False,
) -> dict[str, Any]:
    """One run's figures: latency from the trace's requests, cost from the catalog prices; with ``series``,
    also the per-minute figures ``--plot`` draws (``series_of``)."""
    sizing = size(spec)
    st = Fleet(spec, sizing, config).run(trace, progress)
    duration = (trace[-1].at - trace[0].at) if len(trace) > 1 else 0.0
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    counted = sum(1 for r in trace if r.at >= config.warmup_s)
    span = max(1e-9, trace[-1].at - max(config.warmup_s, trace[0].at)) if trace else 1e-9
    sec = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return {
        "requests": counted,
        # Requests whose first token came within the CR's ttftP95Target, of all counted: one never served misses.
        "ttft_slo_attainment": round(st.slo_met / counted, 4) if counted else None,
        "ttft_p95_s": sec(quantile(st.ttft, 0.95)),
        "ttft_p99_s": sec(quantile(st.ttft, 0.99)),
        "gpu_hours": {
            k: round(v / 3600 * sizing.tensor_parallel_size, 2) for k, v in st.replica_seconds.items()
        },
        "preemptions": st.reclaims,
        "lost_requests": st.lost + (counted - len(st.e2e)),
        "warmup_s": config.warmup_s,
        "completed": len(st.e2e),
        "lost_in_reclaims": st.lost,
        "trace_seconds": round(duration, 1),
        "ttft_p50_ms": ms(quantile(st.ttft, 0.5)),
        "ttft_p95_ms": ms(quantile(st.ttft, 0.95)),
        "ttft_p99_ms": ms(quantile(st.ttft, 0.99)),
        "e2e_p95_s": None if not st.e2e else round(quantile(st.e2e, 0.95) or 0.0, 2),
        "concurrent_requests": round(sum(st.e2e) / span),  # Little's law: requests in flight on average
        "cost_usd": round(st.cost, 2),
        "replica_hours": {k: round(v / 3600, 2) for k, v in st.replica_seconds.items()},
        "peak_replicas": st.peak_replicas,
        "scale_events": len(st.scale_events),
        "spot_reclaims": st.reclaims,
        "fallback_minutes": round(st.fallback_seconds / 60, 1),
        "timeline": st.scale_events[:50],
        **(
            {"series": series_of(trace, st, parse_duration(spec.autoscaling.ttft_p95_target))}
            if series
            else {}
        ),
    }


def series_of(trace: list[TraceRequest], st: Stats, ttft_target_s: float) -> dict[str, Any]:
    """Per-minute figures of one run: requests/s and prompt tokens/s arriving, TTFT p95 of the minute's
    arrivals (None: none served), the share of them over the target; replicas serving per pool and the target
    at each tick; reclaim notices. Times in minutes from the trace's start."""
    minutes = int(trace[-1].at // 60) + 1 if trace else 0
    reqs = [0] * minutes
    prompt = [0] * minutes
    for r in trace:
        m = int(r.at // 60)
        reqs[m] += 1
        prompt[m] += r.prompt_tokens
    ttfts: list[list[float]] = [[] for _ in range(minutes)]
    for arrived, ttft in st.first_tokens:
        if 0 <= int(arrived // 60) < minutes:
            ttfts[int(arrived // 60)].append(ttft)
    return {
        "minute": list(range(minutes)),
        "requests_per_s": [round(n / 60, 3) for n in reqs],
        "prompt_tps": [round(n / 60, 1) for n in prompt],
        "ttft_p95_s": [quantile(v, 0.95) for v in ttfts],
        "ttft_late_share": [
            round(sum(t > ttft_target_s for t in v) / len(v), 4) if v else None for v in ttfts
        ],
        "tick_minute": [round(t / 60, 3) for t, *_ in st.ticks],
        "spot": [n for _, n, _, _ in st.ticks],
        "on_demand": [n for _, _, n, _ in st.ticks],
        "target": [n for *_, n in st.ticks],
        "reclaim_minute": [round(t / 60, 3) for t in st.reclaim_times],
        "ttft_target_s": ttft_target_s,
    }


SLO_GOAL = 0.99  # the share of requests under the TTFT target static-peak must reach
POLICIES = ("llmfleet", *BASELINES, "static-peak", "static-peak-spot")


def static_peak(
    spec: LLMDeploymentSpec, trace: list[TraceRequest], config: SimConfig, pools: bool = False
) -> tuple[int, dict[str, Any]]:
    """The smallest static fleet (all on-demand, or split over the CR's pools) whose TTFT SLO attainment reaches
    ``SLO_GOAL`` on this trace: doubling, then bisection (attainment grows with the fleet). On-demand is capped
    at 4096; split over the pools, at their maxReplicas (``meets_goal`` false when even that falls short)."""
    fixed = replace(config, static_replicas=1, static_pools=pools, policy="static")
    if not pools:
        fixed = replace(fixed, spot_reclaims_per_hour=0.0)
    runs: dict[int, dict[str, Any]] = {}

    def run(n: int) -> dict[str, Any]:
        if n not in runs:
            runs[n] = simulate(spec, trace, replace(fixed, static_replicas=n))
        return runs[n]

    def ok(n: int) -> bool:
        return (run(n)["ttft_slo_attainment"] or 0.0) >= SLO_GOAL

    # Split over the pools, the fleet cannot outgrow them (the split caps each pool at its maxReplicas).
    cap = spec.pools.on_demand.max_replicas + (spec.pools.spot.max_replicas if spec.pools.spot.enabled else 0)
    cap = max(1, cap) if pools else 4096
    hi = 1
    while not ok(hi) and hi < cap:
        hi = min(cap, hi * 2)
    if not ok(hi):
        return hi, {**run(hi), "meets_goal": False}  # the largest this fleet can be, short of the goal
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi, {**run(hi), "meets_goal": True}


def policies(
    spec: LLMDeploymentSpec,
    trace: list[TraceRequest],
    config: SimConfig,
    names: tuple[str, ...] = POLICIES,
    progress: Callable[[str], Callable[[float], None] | None] | None = None,
    series: bool = False,
) -> Iterator[dict[str, Any]]:
    """The same trace through each policy, one result each (``policy`` names it), for ``--policy``.
    ``progress(name)`` gives each run its progress callback; ``series`` adds the per-minute figures."""
    for name in names:
        bar = progress(name) if progress is not None else None
        if name == "static-peak" or name == "static-peak-spot":
            n, out = static_peak(spec, trace, config, pools=name == "static-peak-spot")
            if series:  # the search's runs are not kept: the chosen size once more, recorded
                fixed = replace(config, static_replicas=n, static_pools=name == "static-peak-spot")
                if name == "static-peak":
                    fixed = replace(fixed, spot_reclaims_per_hour=0.0)
                out = {
                    **out,
                    "series": simulate(spec, trace, replace(fixed, policy="static"), bar, True)["series"],
                }
            elif bar is not None:
                bar(trace[-1].at if trace else 0.0)
            yield {"policy": name, "static_replicas": n, **out}
        elif name == "llmfleet" or name in BASELINES:
            yield {
                "policy": name,
                **simulate(spec, trace, replace(config, static_replicas=None, policy=name), bar, series),
            }
        else:
            raise ValueError(f"unknown policy {name!r}; one of {', '.join(POLICIES)}")


def compare(
    spec: LLMDeploymentSpec,
    trace: list[TraceRequest],
    config: SimConfig,
    progress: Callable[[str], Callable[[float], None] | None] | None = None,
    series: bool = False,
) -> Iterator[dict[str, Any]]:
    """The autoscaled fleet and, in the same run, the baseline: a static on-demand fleet of maxReplicas."""
    bar = progress or (lambda _name: None)
    auto = simulate(spec, trace, replace(config, static_replicas=None), bar("autoscaled"), series)
    static_n = config.static_replicas or spec.autoscaling.max_replicas
    base = simulate(
        spec,
        trace,
        replace(config, static_replicas=static_n, spot_reclaims_per_hour=0.0),
        bar(f"static-on-demand-{static_n}"),
        series,
    )
    yield {"fleet": "autoscaled", **auto}
    yield {"fleet": f"static-on-demand-{static_n}", **base}
    ratio = (auto["cost_usd"] / base["cost_usd"]) if base["cost_usd"] else None
    yield {
        "fleet": "summary",
        "cost_ratio_vs_static": None if ratio is None else round(ratio, 3),
        "ttft_p95_ms": {"autoscaled": auto["ttft_p95_ms"], "static": base["ttft_p95_ms"]},
        "completed": {"autoscaled": auto["completed"], "static": base["completed"]},
    }
