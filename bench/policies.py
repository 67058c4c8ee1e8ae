"""Benchmark: llmfleet's autoscaler against the policies users would pick instead, as SLO attainment and cost.

Each trace is replayed through the fleet simulator (`llmfleet.sim.fleet`) once per policy, in the same run:
llmfleet, `kubeai-like`, `keda-queue`, `hpa-like` (`llmfleet.sim.baselines`, each from its source), and
`static-peak`/`static-peak-spot`, the smallest static fleet that keeps 99 % of requests under the TTFT target
(on-demand; split over the pools), found by search. Every dynamic policy starts warm at static-peak's size, as
a fleet that has been running would. Llama-3-8B on H100-80GB, 2-minute cold starts, catalog prices.

Traces (bench/data, CC-BY 4.0, Patel et al., "Splitwise", ISCA 2024):
- `conv`: Azure's conversation trace, smooth (the busiest minute 1.5× the mean);
- `code`: Azure's code-completion trace, bursty (the busiest 10 s 12.7× the mean; mean prompt 2,048 tokens),
  bursts shorter than a cold start;
- `code-day`: a weekday of the same service: the `code` hour (sampled 18:15-19:14 UTC on a Thursday, the
  weekday's busiest hours) replayed 24 times end to end, replay i thinned to hour i's share of the busiest
  hour and rotated by a random offset (`llmfleet.traces.daily`). The hourly shares are the Monday-Thursday
  means of the service's May 2024 week (`azure-llm-code-2024-hourly.csv`, read off the plot the Azure dataset
  publishes by `hack/azure_week_profile.py`; CC-BY 4.0, Stojkovic et al., "DynamoLLM", HPCA 2025): 0.10 at
  08:00 UTC, 1.0 at 19:00. Bursts shorter than a cold start at every level, and a day's swing of 10×.

One JSON line per (trace, policy): `policy`, `ttft_slo_attainment`, `ttft_p95_s`, `ttft_p99_s`, `e2e_p95_s`,
`cost_usd`, `gpu_hours`; then per trace a summary: llmfleet's cost as a share of static-peak's, and whether it
is the cheapest policy reaching 99 %.

    python bench/policies.py [--traces conv,code,code-day] [--minutes 60] [--plot bench/plots]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from llmfleet.api.load import parse_spec  # noqa: E402
from llmfleet.sim.fleet import (  # noqa: E402
    BASELINES,
    SLO_GOAL,
    SimConfig,
    policies,
    read_azure_trace,
    shape,
    static_peak,
)
from llmfleet.traces import TraceRequest, daily, read_hourly_profile, weekday_levels  # noqa: E402

DATA = ROOT / "bench" / "data"
TRACES = {
    "conv": DATA / "azure-llm-conv-2023.csv",
    "code": DATA / "azure-llm-code-2023.csv",
    "code-day": DATA / "azure-llm-code-2024-hourly.csv",
}
SPEC = {
    "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "maxModelLen": 8192},
    "accelerator": {"type": "H100-80GB"},
    "pools": {"onDemand": {"minReplicas": 1, "maxReplicas": 4}, "spot": {"maxReplicas": 12}},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 16},
}
FIELDS = ("ttft_slo_attainment", "ttft_p95_s", "ttft_p99_s", "e2e_p95_s", "cost_usd", "gpu_hours")


TITLES = {"code-day": "azure-llm-code-2023.csv through a weekday of 2024"}


def load(name: str) -> list[TraceRequest]:
    if name == "code-day":
        return daily(read_azure_trace(TRACES["code"]), weekday_levels(read_hourly_profile(TRACES[name])))
    return read_azure_trace(TRACES[name])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--minutes", type=float, default=None, help="only the first MINUTES of each trace")
    ap.add_argument("--plot", metavar="DIR", help="also draw each trace's replay to DIR/<trace>.png")
    args = ap.parse_args()
    spec = parse_spec(SPEC)
    unknown = [n for n in args.traces.split(",") if n not in TRACES]
    if unknown:
        ap.error(f"--traces: no trace {unknown[0]!r}; one of {', '.join(TRACES)}")
    for name in args.traces.split(","):
        t0 = time.perf_counter()
        trace = shape(load(name), minutes=args.minutes)
        n, peak = static_peak(spec, trace, SimConfig())
        config = SimConfig(initial_replicas=n)
        results = [{"policy": "static-peak", "static_replicas": n, **peak}]
        names = ("llmfleet", *BASELINES, "static-peak-spot")
        results += list(policies(spec, trace, config, names, series=bool(args.plot)))
        if args.plot:
            from llmfleet.sim.plot import plot

            drawn = [
                r
                for r in results
                if "series" in r and r["policy"] in ("llmfleet", "keda-queue", "static-peak-spot")
            ]
            plot(
                drawn,
                Path(args.plot) / f"{name}.png",
                f"{TITLES.get(name, TRACES[name].name)}: {SPEC['model']['name']} on {SPEC['accelerator']['type']}",
            )
        for r in results:
            print(json.dumps({"trace": name, "policy": r["policy"], **{k: r[k] for k in FIELDS}}), flush=True)
        by = {r["policy"]: r for r in results}
        ours, base = by["llmfleet"], by["static-peak"]
        meeting = [r for r in results if (r["ttft_slo_attainment"] or 0) >= SLO_GOAL]
        cheapest = min(meeting, key=lambda r: r["cost_usd"])["policy"] if meeting else None
        print(
            json.dumps(
                {
                    "trace": name,
                    "summary": True,
                    "requests": ours["requests"],
                    "static_peak_replicas": n,
                    "llmfleet_attainment": ours["ttft_slo_attainment"],
                    "llmfleet_cost_vs_static_peak": round(ours["cost_usd"] / base["cost_usd"], 3),
                    "reaching_goal": [r["policy"] for r in meeting],
                    "cheapest_reaching_goal": cheapest,
                    "sim_seconds": round(time.perf_counter() - t0, 1),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
