"""The autoscaler policy as a specification: figures + state + an injected clock → the replica target."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.api.load import parse_spec
from llmfleet.api.v1alpha1 import AutoscalingSpec, LLMDeploymentSpec
from llmfleet.autoscale.policy import Observation, ScaleState, decide, initial_state, recommend
from llmfleet.fleet.capacity import Capacity, capacity_of
from llmfleet.fleet.reclaim import replacing

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CAP = Capacity(prefill_tps=20_000, decode_tps=6_000)


def spec(**kw: object) -> AutoscalingSpec:
    base: dict[str, object] = {
        "minReplicas": 1,
        "maxReplicas": 12,
        "targetQueueDepthPerReplica": 4,
        "ttftP95Target": "500ms",
        "scaleUpWindow": "30s",
        "scaleDownWindow": "5m",
        "loadMemory": "0s",  # these tests are about the windows; test_load_memory_* about the memory
    }
    return AutoscalingSpec.model_validate({**base, **kw})


def obs(
    waiting: float = 0,
    running: float = 0,
    ready: int = 2,
    ttft: float | None = 0.1,
    kv: float | None = 0.3,
    arrivals: float | None = None,
    prompt: float | None = None,
    gen: float | None = None,
) -> Observation:
    return Observation(
        waiting=waiting,
        running=running,
        ready=ready,
        ttft_p95=ttft,
        kv_usage=kv,
        arrivals=arrivals,
        prompt_tps=prompt,
        generation_tps=gen,
    )


def run(
    s: AutoscalingSpec,
    state: ScaleState,
    figures: list[Observation],
    step: float = 15,
    start: datetime = T0,
    capacity: Capacity | None = None,
) -> list[int]:
    """Targets after each tick, ``step`` seconds apart."""
    out = []
    for i, o in enumerate(figures):
        d = decide(s, state, o, start + timedelta(seconds=step * i), capacity=capacity)
        state = d.state
        out.append(d.target)
    return out


@pytest.mark.parametrize(
    ("figures", "current", "want", "why", "capacity"),
    [
        (*case, None)
        for case in [
            (obs(waiting=40), 2, 10, "queue depth 40 > 4×2"),
            (obs(waiting=8), 2, 2, "load fits 2"),  # at the target exactly: no change
            (obs(waiting=0, running=20, ttft=0.9, ready=2), 2, 4, "TTFT p95 900ms > 500ms"),
            (obs(waiting=0, running=20, ttft=0.55, ready=4), 4, 5, "TTFT p95 550ms"),  # at least one more
            (obs(waiting=0, running=20, ttft=0.9, ready=1), 4, 2, "TTFT"),  # replicas still starting count
            (obs(waiting=0, running=20, ttft=0.4, kv=0.1), 4, 4, "near the 500ms target"),  # hysteresis
            (
                obs(waiting=0, running=4, ttft=0.1, kv=0.1, ready=4),
                4,
                3,
                "load fits 3",
            ),  # no token rates: one step
            (
                obs(waiting=0, running=30, ttft=0.1, kv=0.6, ready=4),
                4,
                4,
                "load fits 4",
            ),  # 4×0.6/0.75 = 3.2 → 4
            (obs(waiting=0, running=30, ttft=0.1, kv=0.5, ready=4), 4, 3, "load fits 3"),
            (obs(waiting=0, running=5, ttft=0.1, kv=None), 3, 3, "no KV-cache usage"),
            (obs(waiting=0, running=0, ttft=None, kv=0.0), 3, 0, "load fits 0"),
            (
                obs(waiting=0, running=0, ttft=2.0, kv=0.0),
                3,
                0,
                "load fits 0",
            ),  # last minute's TTFT, traffic gone
            (obs(waiting=3, ready=0), 0, 1, "requests arrived while scaled to zero"),
            (obs(waiting=0, ready=0, ttft=None, kv=None), 0, 0, "no requests"),
        ]
    ]
    + [
        # Token load: prompt 30k/s is 1.5 replicas of prefill, generation 6k/s one of decode: 2.5 → 4 at 70%.
        (obs(running=50, prompt=30_000, gen=6_000), 2, 4, "token load 2.50 replicas at 70% needs 4", CAP),
        (obs(running=50, kv=0.05, ready=6, prompt=30_000, gen=6_000), 6, 4, "load fits 4 replicas", CAP),
        (obs(running=5, kv=0.01, ready=6, prompt=1_000, gen=300), 6, 1, "load fits 1 replica", CAP),
        (obs(waiting=40, running=50, prompt=30_000, gen=6_000), 2, 10, "queue depth 40", CAP),
        (obs(waiting=0, running=50, ttft=0.45, ready=6, prompt=1_000, gen=300), 6, 6, "near the 500ms", CAP),
    ],
)
def test_recommendation_table(
    figures: Observation, current: int, want: int, why: str, capacity: Capacity | None
) -> None:
    rec, reason = recommend(spec(), figures, current, capacity)
    assert rec == want and why in reason, reason


def test_queue_spike_shorter_than_the_up_window_moves_nothing() -> None:
    s = spec()
    targets = run(s, ScaleState(target=2), [obs(), obs(waiting=40), obs(), obs(), obs()])
    assert targets == [2, 2, 2, 2, 2]


def test_sustained_queue_scales_up_once_the_up_window_is_covered() -> None:
    s = spec()
    targets = run(s, ScaleState(target=2), [obs()] + [obs(waiting=40)] * 4)
    # High from t=15 on; the 30 s window holds only high recommendations from t=45. The queue wants 10, growth
    # is capped at max(2×2, 2+4) = 6 from 2 replicas; at t=60 the window still holds the 6s.
    assert targets == [2, 2, 2, 6, 6]
    d = decide(s, ScaleState(target=2), obs(waiting=40), T0)
    assert "waiting out scaleUpWindow 30s" in d.reason


def test_zero_up_window_scales_at_once_with_growth_capped() -> None:
    s = spec(scaleUpWindow="0s")
    d = decide(s, ScaleState(target=2), obs(waiting=400), T0)
    assert d.target == 6 and "growth capped at 6" in d.reason and d.changed


def test_scale_down_waits_for_the_whole_down_window_of_low_recommendations() -> None:
    s = spec(scaleUpWindow="0s")
    low = obs(running=2, kv=0.05, ready=6, prompt=500, gen=100)
    state = ScaleState(target=6)
    targets = run(s, state, [low] * 21, capacity=CAP)  # 0..300 s
    assert targets[:20] == [6] * 20 and targets[20] == 1
    # One tick whose load needs 5 (2 + 1 replica-equivalents at 70%) sits in the window: the fleet falls to 5 only.
    busy_once = [low] * 10 + [obs(running=60, kv=0.1, ready=6, prompt=40_000, gen=6_000)] + [low] * 10
    assert run(s, state, busy_once, capacity=CAP)[-1] == 5


def test_without_token_rates_the_fleet_shrinks_one_replica_per_down_window() -> None:
    s = spec(scaleUpWindow="0s", scaleDownWindow="1m")
    targets = run(s, ScaleState(target=6), [obs(running=2, kv=0.01, ready=6)] * 10)  # 0..135 s
    assert targets == [6, 6, 6, 6, 5, 5, 5, 5, 5, 4]  # the second step waits for a window of 4s (from t=75)


def test_capacity_of_the_reference_replica_follows_the_performance_model() -> None:
    from llmfleet.fleet.capacity import EngineProfile

    cap = capacity_of(EngineProfile())  # Llama-3-8B bf16 on one H100: 7.5 ms + 0.137 ms per sequence
    assert cap.prefill_tps == 20_000
    assert 5_800 < cap.decode_tps < 6_000  # ~237 sequences at a 40 ms step
    small = capacity_of(EngineProfile(max_num_seqs=16))
    assert small.decode_tps == pytest.approx(16 / (0.0075 + 16 * 0.000137))


def test_bounds_and_max_replicas() -> None:
    s = spec(scaleUpWindow="0s", maxReplicas=5)
    assert decide(s, ScaleState(target=4), obs(waiting=400, ready=4), T0).target == 5
    d = decide(s, ScaleState(target=9), obs(), T0)
    assert d.target == 5 and "minReplicas..maxReplicas" in d.reason


def test_missing_metrics_hold_the_target() -> None:
    d = decide(spec(), ScaleState(target=3), None, T0)
    assert d.target == 3 and not d.changed and "no metrics" in d.reason


def test_manual_scale_through_spec_replicas_resets_the_target_and_the_history() -> None:
    s = spec()
    state = ScaleState(target=2, history=((T0, 2),), spec_replicas=None)
    d = decide(s, state, obs(), T0 + timedelta(seconds=15), spec_replicas=7)
    assert d.target == 7 and d.reason == "spec.replicas set to 7" and d.state.history == ()
    again = decide(s, d.state, None, T0 + timedelta(seconds=30), spec_replicas=7)
    assert again.target == 7 and not again.changed


def test_scale_to_zero_after_idle_after_and_wake_on_the_first_request() -> None:
    s = spec(scaleToZero={"enabled": True, "idleAfter": "10m"})
    idle = obs(waiting=0, running=0, ttft=None, kv=0.0, ready=1, arrivals=0.0)
    state = ScaleState(target=1, active_at=T0)
    d = decide(s, state, idle, T0 + timedelta(minutes=9))
    assert d.target == 1
    d = decide(s, d.state, idle, T0 + timedelta(minutes=10))
    assert d.target == 0 and "no requests for 10m" in d.reason
    d = decide(
        s, d.state, obs(waiting=0, ready=0, ttft=None, kv=None, arrivals=0.0), T0 + timedelta(minutes=11)
    )
    assert d.target == 0
    d = decide(
        s, d.state, obs(waiting=0, ready=0, ttft=None, kv=None, arrivals=0.2), T0 + timedelta(minutes=12)
    )
    assert (
        d.target == 1 and "scaled to zero" in d.reason
    )  # the gateway saw a request: no up window when waking
    zero = ScaleState(target=0, active_at=T0)
    d = decide(s, zero, obs(waiting=9, ready=0, ttft=None, kv=None, arrivals=0.0), T0)
    assert d.target == 3  # enough for the queue


def test_without_the_gateways_request_rate_the_fleet_never_goes_to_zero() -> None:
    s = spec(scaleToZero={"enabled": True, "idleAfter": "1m"})
    state = ScaleState(target=1, active_at=T0)
    blind = run(s, state, [obs(waiting=0, running=0, ttft=None, kv=0.0, ready=1, arrivals=None)] * 20)
    seeing = run(s, state, [obs(waiting=0, running=0, ttft=None, kv=0.0, ready=1, arrivals=0.0)] * 20)
    assert set(blind) == {1}
    assert seeing[3] == 1 and seeing[4:] == [0] * 16  # idle for 60 s at t=60


def test_without_scale_to_zero_an_idle_fleet_keeps_min_replicas() -> None:
    s = spec(scaleUpWindow="0s", scaleDownWindow="0s", minReplicas=2)
    d = decide(s, ScaleState(target=4), obs(running=0, ttft=None, kv=0.0, ready=4), T0)
    assert d.target == 2


def test_initial_state_prefers_the_last_target_then_spec_replicas_then_min() -> None:
    def full(replicas: int | None, **autoscaling: object) -> LLMDeploymentSpec:
        raw: dict[str, object] = {
            "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 8, **autoscaling},
        }
        if replicas is not None:
            raw["replicas"] = replicas
        return parse_spec(raw)

    assert initial_state(full(5), 7, T0).target == 7
    assert initial_state(full(5), None, T0).target == 5
    assert initial_state(full(None), None, T0).target == 2
    assert initial_state(full(50), None, T0).target == 8
    assert initial_state(full(0, scaleToZero={"enabled": True}), None, T0).target == 0
    assert initial_state(full(5), 7, T0).spec_replicas == 5  # not a manual scale on the next decision


# Reclaims are lost capacity: one rule (fleet.reclaim.replacing, read by decide) for the operator and the simulator.
@given(
    current=st.integers(2, 12),
    lost=st.integers(1, 6),
    waiting=st.floats(0, 50),
    running=st.floats(0, 200),
    ttft=st.none() | st.floats(0.01, 5.0),
    kv=st.none() | st.floats(0, 1),
    gen=st.none() | st.floats(0, 5000),
    ticks=st.integers(1, 40),
)
@settings(max_examples=300, deadline=None)
def test_while_reclaimed_replicas_are_replaced_the_target_never_falls(
    current, lost, waiting, running, ttft, kv, gen, ticks
) -> None:
    s = spec(scaleDownWindow="0s", scaleUpWindow="0s")
    ready = max(0, current - lost)
    o = Observation(
        waiting=waiting,
        running=running,
        ready=ready,
        ttft_p95=ttft,
        kv_usage=kv,
        prompt_tps=gen,
        generation_tps=gen,
        replacing=replacing(lost, current, ready),
    )
    targets = run(s, ScaleState(target=current), [o] * ticks, capacity=CAP)
    assert min(targets) >= current


def test_the_same_figures_without_a_reclaim_do_scale_down() -> None:
    s = spec(scaleDownWindow="0s")
    quiet = dict(waiting=0, running=2, ready=2, ttft_p95=0.1, kv_usage=0.1, prompt_tps=10, generation_tps=10)
    held = decide(
        s, ScaleState(target=6), Observation(**quiet, replacing=replacing(4, 6, 2)), T0, capacity=CAP
    )
    assert held.target == 6 and "lost to a reclaim" in held.reason
    shrunk = decide(
        s, ScaleState(target=6), Observation(**quiet, replacing=replacing(0, 6, 2)), T0, capacity=CAP
    )
    assert shrunk.target < 6


def test_replacing_counts_only_the_reclaimed_part_of_a_shortfall() -> None:
    assert replacing(2, 5, 3) == 2 and replacing(2, 5, 5) == 0 and replacing(2, 5, 7) == 0
    assert replacing(1, 8, 3) == 1  # the other four missing are a scale-up starting: not lost capacity
    assert replacing(0, 5, 3) == 0


def test_the_operator_reads_the_shortfall_from_its_reclaim_condition() -> None:
    from llmfleet.autoscale.loop import replacing_now

    pending = {
        "ready": "2/5",
        "conditions": [{"type": "Reclaim", "status": "True", "reason": "ReplacementPending"}],
        "replicas": {"spot": {"lastReclaim": {"node": "n", "pods": ["a", "b"]}}, "onDemand": {}},
    }
    assert replacing_now(pending) == 2
    assert replacing_now({**pending, "ready": "4/5"}) == 1
    assert replacing_now({**pending, "conditions": [{"type": "Reclaim", "status": "False"}]}) == 0
    assert replacing_now({"ready": "2/5"}) == 0 and replacing_now({}) == 0


# ---------------------------------------------------------------- the SLO, bursts and memory (issue: bursty traffic)
def late(share: float, **kw: object) -> Observation:
    """A busy minute whose p95 is fine but ``share`` of whose first tokens were late (a burst inside it)."""
    from dataclasses import replace

    return replace(obs(running=10, ttft=0.2, **kw), ttft_miss_share=share)  # type: ignore[arg-type]


@given(share=st.floats(0, 1), ready=st.integers(1, 50), goal=st.sampled_from([0.9, 0.99, 0.999]))
def test_more_late_first_tokens_than_the_attainment_target_allows_grow_the_fleet(share, ready, goal) -> None:
    s = spec(ttftAttainmentTarget=goal, maxReplicas=2000)
    want, why = recommend(s, late(share, ready=ready), ready)
    if share > 1 - goal + 1e-9:
        assert want >= ready + 1 and want >= ready * (1 + share) - 1e-9 and "of first tokens over" in why
    elif share > 0:
        assert want >= ready  # some late, within the target: it holds, never shrinks
    else:
        assert "of first tokens over" not in why


@given(
    share=st.floats(0, 1),
    window=st.one_of(st.none(), st.floats(0, 0.05)),
    ready=st.integers(1, 50),
    in_flight=st.booleans(),
)
def test_a_late_minute_grows_the_fleet_only_while_the_slo_window_burns_its_budget(
    share, window, ready, in_flight
) -> None:
    """Both windows, as a multiwindow burn-rate alert: the minute over the target and the hour past
    BUDGET_SPARE_SHARE of its budget (or unknown). Read whether or not requests are in flight at the tick:
    a burst is often over by the time the autoscaler looks."""
    from dataclasses import replace

    from llmfleet.autoscale.policy import budget_spare

    s = spec(maxReplicas=2000)  # ttftAttainmentTarget 0.99
    o = replace(
        obs(running=10 if in_flight else 0, ready=ready, ttft=0.2),
        ttft_miss_share=share,
        ttft_miss_share_window=window,
    )
    want, why = recommend(s, o, ready)
    over = share > 0.01 + 1e-9
    if over and not budget_spare(s, o):
        assert want >= ready + 1 and "of first tokens over" in why
    else:
        assert want <= ready
    if share > 0:
        assert want >= ready  # a late first token in the minute: never shrinking
    if over and budget_spare(s, o):
        assert want == ready and "within its error budget" in why


def test_a_burst_over_before_the_tick_still_counts() -> None:
    """Nothing in flight and no gateway rate at the tick, yet the minute's first tokens were late and the hour
    has spent its budget: the fleet grows (it used to ignore the minute once the burst had drained)."""
    from dataclasses import replace

    idle_tick = replace(obs(running=0, ready=3, ttft=0.9), ttft_miss_share=0.3, ttft_miss_share_window=0.02)
    assert not idle_tick.busy
    assert recommend(spec(), idle_tick, 3)[0] == 4


def test_a_burst_inside_the_minute_scales_up_though_p95_and_the_mean_rates_look_fine() -> None:
    s = spec(scaleUpWindow="0s")
    calm = obs(running=10, ttft=0.2, prompt=2_000, gen=500)
    assert recommend(s, calm, 4, CAP)[0] <= 4
    # The busiest 30 s of the minute carried 6x the minute's mean prompt rate: sized for that.
    from dataclasses import replace

    burst = replace(calm, prompt_tps_peak=60_000)
    n, why = recommend(s, burst, 1, CAP)
    assert n == math.ceil((60_000 / CAP.prefill_tps + 500 / CAP.decode_tps) / 0.7) and "token load" in why


def test_headroom_sizes_above_the_token_load() -> None:
    figures = obs(running=10, ttft=0.2, prompt=14_000, gen=0)  # 0.7 replica-equivalents: 1 at 70 %
    assert recommend(spec(), figures, 1, CAP)[0] == 1
    assert recommend(spec(headroom=1.0), figures, 1, CAP)[0] == 2


def test_load_memory_keeps_a_bursts_replicas_until_it_has_passed() -> None:
    s = spec(scaleUpWindow="0s", scaleDownWindow="1m", loadMemory="10m")
    state = ScaleState(target=2)
    figures = [late(0.2, ready=2)] + [obs(running=1, ttft=0.1, kv=0.05)] * 60  # one late minute, then calm
    targets = run(s, state, figures)
    assert targets[0] == 3
    first_down = next(i for i, t in enumerate(targets) if t < 3)
    assert first_down * 15 >= 600  # not before loadMemory (10 min), though scaleDownWindow is 1 min
    short = run(spec(scaleUpWindow="0s", scaleDownWindow="1m"), state, figures)
    assert next(i for i, t in enumerate(short) if t < 3) * 15 < 600


def test_load_memory_holds_only_while_the_slo_window_has_spent_its_error_budget() -> None:
    from dataclasses import replace

    s = spec(scaleUpWindow="0s", scaleDownWindow="1m", loadMemory="10m")  # attainment target 99 %: budget 1 %
    state = ScaleState(target=2)

    def first_down(window_share: float | None) -> int:
        calm = replace(obs(running=1, ttft=0.1, kv=0.05), ttft_miss_share_window=window_share)
        targets = run(s, state, [late(0.2, ready=2)] + [calm] * 60)
        assert targets[0] == 3
        return next(i for i, t in enumerate(targets) if t < 3) * 15

    assert first_down(0.0) < 600  # the hour kept its SLO with room: the burst's replica goes after 1 min
    assert first_down(0.007) < 600  # 70 % of the budget spent: still spare (BUDGET_SPARE_SHARE 0.8)
    assert first_down(0.009) >= 600  # 90 % spent: loadMemory holds it
    assert first_down(None) >= 600  # unknown is not spare


@given(share=st.one_of(st.none(), st.floats(0, 1)), goal=st.sampled_from([0.9, 0.99, 0.999]))
def test_the_budget_is_spare_exactly_below_its_share_of_the_error_budget(share, goal) -> None:
    from dataclasses import replace

    from llmfleet.autoscale.policy import BUDGET_SPARE_SHARE, budget_spare

    o = replace(obs(), ttft_miss_share_window=share)
    spare = budget_spare(spec(ttftAttainmentTarget=goal), o)
    assert spare == (share is not None and share <= (1 - goal) * BUDGET_SPARE_SHARE + 1e-12)
