"""The policies users would pick instead, as the simulator replays them: each follows its source's algorithm, and
the comparison reports SLO attainment with the output contract `llmfleet simulate --policy` promises."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from llmfleet.autoscale.policy import Observation
from llmfleet.sim.baselines import HPA_DOWN_WINDOW_S, HPALike, KubeAILike
from llmfleet.sim.fleet import POLICIES, SLO_GOAL, SimConfig, policies, simulate
from tests.conftest import ROOT
from tests.unit.test_fleet_sim import TRACE, burst, spec

CONTRACT = {
    "policy",
    "requests",
    "ttft_slo_attainment",
    "ttft_p95_s",
    "ttft_p99_s",
    "e2e_p95_s",
    "cost_usd",
    "gpu_hours",
    "preemptions",
    "lost_requests",
}


def obs(waiting: float = 0, running: float = 0, kv: float | None = None, ready: int = 1) -> Observation:
    return Observation(waiting=waiting, running=running, ready=ready, kv_usage=kv)


def test_kubeai_averages_over_its_window_from_zeros_and_delays_scale_down() -> None:
    k = KubeAILike()  # 10 s interval, 10 min window: 60 samples, preloaded with zeros
    assert k.decide(obs(waiting=3000, running=600), 1, 0) == math.ceil(3600 / 60 / 100)  # 1: the zeros weigh
    for t in range(1, 60):
        current = k.decide(obs(waiting=3000, running=600), 1, t * 10)
    assert current == 36  # the window is full of 3,600 active requests: ceil(3600 / 100)
    # The average falls slowly: 3 idle samples move it from 3,600 to 3,420 active requests.
    assert [k.decide(obs(), 36, 600 + 10 * i) for i in range(3)] == [36, 36, 36]
    # Lower answers scale down only on the third in a row (scaleDownDelaySeconds 30 / interval 10).
    one = KubeAILike(window_s=10)  # a one-sample window: the answer is the last sample's
    assert one.decide(obs(running=1000), 1, 0) == 10
    assert [one.decide(obs(), 10, 10 * i) for i in range(1, 4)] == [10, 10, 0]


@given(st.integers(1, 40), st.floats(0, 400), st.floats(0, 1))
def test_hpa_stays_within_tolerance_and_never_more_than_doubles_or_adds_four(current, waiting, kv) -> None:
    for h, ratio in (
        (HPALike("waiting", 5.0), waiting / (5.0 * current)),
        (HPALike("kv_usage", 0.8), kv / 0.8),
    ):
        got = h.decide(obs(waiting=waiting, kv=kv), current, 0.0)
        if abs(ratio - 1) <= 0.1:
            assert got == current
        assert got <= max(2 * current, current + 4)


def test_hpa_scales_down_only_to_the_highest_recommendation_of_five_minutes() -> None:
    h = HPALike("waiting", 5.0)
    assert h.decide(obs(waiting=100), 10, 0.0) == 20  # 100 waiting / 5 per replica
    assert h.decide(obs(waiting=0), 20, 15.0) == 20  # the 20 of 15 s ago still stands
    assert h.decide(obs(waiting=0), 20, HPA_DOWN_WINDOW_S + 1) == 0  # the window has moved past it


def test_every_policy_reports_the_contract_and_static_peak_is_the_smallest_meeting_the_goal() -> None:
    s = spec()
    trace = burst(4, 60) + burst(30, 180, start=60)
    config = SimConfig(cold_start_s=60)
    out = {r["policy"]: r for r in policies(s, trace, config)}
    assert tuple(out) == POLICIES
    for r in out.values():
        assert r.keys() >= CONTRACT, r["policy"]
        assert r["requests"] == len(trace) and 0 <= r["ttft_slo_attainment"] <= 1
    n = out["static-peak"]["static_replicas"]
    assert out["static-peak"]["ttft_slo_attainment"] >= SLO_GOAL
    if n > 1:  # one fewer misses the goal: the search found the smallest
        fewer = simulate(s, trace, replace(config, static_replicas=n - 1, policy="static"))
        assert fewer["ttft_slo_attainment"] < SLO_GOAL
    assert out["static-peak-spot"]["cost_usd"] <= out["static-peak"]["cost_usd"]  # spot is cheaper


def test_a_request_never_served_counts_as_a_miss() -> None:
    s = spec(autoscaling={"minReplicas": 1, "maxReplicas": 1})
    r = simulate(s, burst(50, 120, prompt=4000, out=400), SimConfig(static_replicas=1, policy="static"))
    assert r["ttft_slo_attainment"] < 0.5  # one replica cannot keep up: most first tokens come late


def test_the_cli_prints_one_json_object_per_policy_and_refuses_an_unknown_one() -> None:
    cr = ROOT / "manifests" / "examples" / "llama3-8b.yaml"
    run = [
        sys.executable,
        "-m",
        "llmfleet",
        "simulate",
        "-f",
        str(cr),
        "--trace",
        str(TRACE),
        "--minutes",
        "3",
    ]
    r = subprocess.run(
        [*run, "--policy", "kubeai-like", "--policy", "hpa-like", "--json"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["policy"] for x in lines] == ["kubeai-like", "hpa-like"] and all(
        x.keys() >= CONTRACT for x in lines
    )
    bad = subprocess.run([*run, "--policy", "karpenter"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--policy karpenter: unknown" in bad.stderr
