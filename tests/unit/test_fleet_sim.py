"""The fleet simulator on the real Azure trace (small slices of it) and on hand-made traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.api.load import parse_spec
from llmfleet.sim.fleet import SimConfig, TraceRequest, compare, read_azure_trace, shape, simulate
from tests.conftest import DATA

TRACE = DATA / "azure-llm-conv-2023.csv"


def spec(**kw: object):
    base: dict = {
        "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
        "pools": {"onDemand": {"minReplicas": 1, "maxReplicas": 4}, "spot": {"maxReplicas": 8}},
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 10,
            "scaleUpWindow": "0s",
            "scaleDownWindow": "2m",
            "loadMemory": "0s",  # these traces are short: scaling back in is what they test
        },
    }
    base.update(kw)
    return parse_spec(base)


def burst(
    rps: float, seconds: float, prompt: int = 1000, out: int = 200, start: float = 0.0
) -> list[TraceRequest]:
    n = int(rps * seconds)
    return [TraceRequest(start + i / rps, prompt, out) for i in range(n)]


def test_reads_the_azure_trace_as_its_readme_describes_it() -> None:
    trace = read_azure_trace(TRACE)
    assert len(trace) == 19_366
    assert trace[0].at == 0 and 3_500 < trace[-1].at < 3_505
    mean_prompt = sum(r.prompt_tokens for r in trace) / len(trace)
    assert 1_100 < mean_prompt < 1_200


def test_bad_trace_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,12,x\n")
    with pytest.raises(ValueError, match="t.csv:2"):
        read_azure_trace(bad)


def test_shape_compresses_time_and_overlays_copies() -> None:
    trace = [TraceRequest(float(t), 10, 10) for t in range(100)]
    out = shape(trace, speed=10, copies=3, seed=1)
    assert len(out) == 300 and max(r.at for r in out) < 10
    assert [r.at for r in out] == sorted(r.at for r in out)
    assert len(shape(trace, speed=10, minutes=0.05)) == 30  # the first 3 s of compressed time


def test_same_inputs_give_the_same_figures() -> None:
    trace = shape(read_azure_trace(TRACE), minutes=3)
    cfg = SimConfig(spot_reclaims_per_hour=5, seed=3)
    assert simulate(spec(), trace, cfg) == simulate(spec(), trace, cfg)


def test_light_real_traffic_is_served_by_the_baseline_at_a_fraction_of_the_static_fleets_cost() -> None:
    trace = shape(read_azure_trace(TRACE), minutes=5)
    auto, static, summary = list(compare(spec(), trace, SimConfig()))
    assert auto["completed"] == static["completed"] == len(trace)
    assert summary["cost_ratio_vs_static"] < 0.5
    assert auto["ttft_p95_ms"] < 500  # the trace's own rate fits one H100 replica of the 8B model


def test_a_sustained_burst_scales_out_spot_first_and_back_in() -> None:
    trace = burst(4, 60) + burst(40, 240, start=60) + burst(4, 600, start=300)
    r = simulate(spec(), trace, SimConfig(cold_start_s=60))
    assert r["completed"] == len(trace)
    assert r["peak_replicas"] > 3
    assert r["replica_hours"]["spot"] > 0
    ups = [e for e in r["timeline"] if e["to"] > e["from"]]
    downs = [e for e in r["timeline"] if e["to"] < e["from"]]
    assert ups and "queue depth" in ups[0]["reason"]
    assert downs and downs[-1]["to"] < r["peak_replicas"]


def test_no_spot_capacity_falls_back_to_on_demand_after_the_pending_timeout() -> None:
    trace = burst(30, 600)
    s = spec(
        pools={
            "onDemand": {"minReplicas": 1, "maxReplicas": 8},
            "spot": {"maxReplicas": 8, "pendingTimeout": "1m"},
        }
    )
    r = simulate(s, trace, SimConfig(cold_start_s=30, spot_capacity=0))
    assert r["replica_hours"]["spot"] == 0
    assert r["fallback_minutes"] > 0
    assert r["replica_hours"]["on-demand"] > 600 / 3600  # more than the one baseline replica
    off = simulate(
        parse_spec(
            {
                **s.model_dump(by_alias=True),
                "pools": {
                    "onDemand": {"minReplicas": 1, "maxReplicas": 8},
                    "spot": {"maxReplicas": 8, "pendingTimeout": "1m", "fallbackToOnDemand": False},
                },
            }
        ),
        trace,
        SimConfig(cold_start_s=30, spot_capacity=0),
    )
    assert off["fallback_minutes"] == 0 and off["ttft_p95_ms"] > r["ttft_p95_ms"]


def test_spot_reclaims_drain_and_lose_only_streams_already_started() -> None:
    trace = burst(20, 900)
    s = spec(
        pools={"onDemand": {"minReplicas": 0, "maxReplicas": 4}, "spot": {"maxReplicas": 8}},
        autoscaling={"minReplicas": 4, "maxReplicas": 8, "scaleUpWindow": "0s"},
    )
    r = simulate(s, trace, SimConfig(cold_start_s=30, spot_reclaims_per_hour=20, seed=7))
    assert r["spot_reclaims"] > 0
    assert r["completed"] + r["lost_in_reclaims"] == len(trace)
    assert r["lost_in_reclaims"] < 0.05 * len(trace)  # a 2-minute notice drains most streams


def test_the_fast_engine_steps_exactly_like_the_reference_engine() -> None:
    import random

    from llmfleet.sim.perfmodel import BatchEngine, EngineProfile, FastBatchEngine, SimRequest

    profile = EngineProfile(kv_capacity_tokens=60_000, max_num_seqs=32, max_batched_tokens=2048)
    ref, fast = BatchEngine(profile), FastBatchEngine(profile)
    rng = random.Random(5)
    shared = tuple(range(40))  # a common system prompt: 40 blocks of 16 tokens
    steps = 0
    for i in range(400):
        prompt, out = rng.randint(1, 3000), rng.randint(1, 300)
        blocks = shared[: rng.randint(0, 40)] + tuple(rng.getrandbits(40) for _ in range(prompt // 16))
        for engine in (ref, fast):
            engine.submit(SimRequest(id=f"r{i}", prompt_tokens=prompt, max_tokens=out, prefix_blocks=blocks))
        for _ in range(rng.randint(0, 12)):
            if ref.idle:
                break
            a, b = ref.step(), fast.step()
            steps += 1
            assert (a.duration_s, a.first_token, sorted(a.finished), len(a.tokens)) == (
                b.duration_s,
                b.first_token,
                sorted(b.finished),
                fast.token_count,
            )
            assert ref.kv_used == fast.kv_used
    while not ref.idle:
        a, b = ref.step(), fast.step()
        assert (a.duration_s, sorted(a.finished)) == (b.duration_s, sorted(b.finished))
    assert fast.idle and steps > 1000 and ref.prefix_hits == fast.prefix_hits > 0


def test_the_simulator_holds_its_target_while_reclaimed_replicas_are_replaced() -> None:
    """The simulator feeds the policy the same reclaim rule as the operator: no tick with replacements pending
    lowers the target; and the rule is exercised (some tick had replacements pending)."""
    from llmfleet.api.sizing import size
    from llmfleet.sim.fleet import Fleet

    class Recording(Fleet):
        ticks: list[tuple[int, int, int]] = []  # (replacing, target before, target after)

        def _on_tick(self, now, arg) -> None:
            before, o = self.target, self.observe(now)
            super()._on_tick(now, arg)
            self.ticks.append((o.replacing, before, self.target))

    s = spec(
        pools={"onDemand": {"minReplicas": 0, "maxReplicas": 4}, "spot": {"maxReplicas": 8}},
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 8,
            "scaleUpWindow": "0s",
            "scaleDownWindow": "0s",
            "loadMemory": "0s",
        },
    )
    trace = burst(20, 300) + burst(1, 600, start=300)  # a burst, then quiet: the policy wants to shrink
    Recording(s, size(s), SimConfig(cold_start_s=60, spot_reclaims_per_hour=6, seed=3)).run(trace)
    pending = [t for t in Recording.ticks if t[0] > 0]
    assert pending, "no tick saw a reclaim pending"
    assert all(after >= before for _, before, after in pending)
    assert any(after < before for r, before, after in Recording.ticks if r == 0)  # it does shrink otherwise


def test_the_simulator_gives_the_policy_the_gateways_request_rate() -> None:
    """The operator reads rate(llmfleet_gateway_received_requests_total[1m]) (``arrivals``); the simulator must
    feed the same figure, or its policy ignores a burst that drained before the tick where the operator's
    would not."""
    from llmfleet.api.sizing import size
    from llmfleet.sim.fleet import Fleet

    seen: dict[float, float | None] = {}

    class Recording(Fleet):
        def _on_tick(self, now, arg) -> None:
            seen[now] = self.observe(now).arrivals
            super()._on_tick(now, arg)

    s = spec()
    trace = burst(2, 120) + burst(0.1, 60, start=400)  # 2 requests/s for 2 minutes, then one every 10 s
    Recording(s, size(s), SimConfig()).run(trace)
    assert seen[90.0] == pytest.approx(2.0, abs=0.05)
    assert seen[300.0] == 0.0
    assert seen[435.0] == pytest.approx(4 / 60, abs=1e-9)  # 400, 410, 420 and 430 s
