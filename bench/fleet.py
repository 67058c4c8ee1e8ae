"""Benchmark: the autoscaler in the fleet simulator, on the real request trace, against a static fleet.

The trace is the Azure LLM inference trace (bench/data/azure-llm-conv-2023.csv, CC-BY 4.0, Patel et al.,
"Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024). Each scenario replays it
through `llmfleet.sim.fleet` twice in the same run: the autoscaled fleet (the operator's own policy, spot
first, 2-minute cold starts) and the baseline, a static on-demand fleet of a fixed size. One JSON line per
scenario with both fleets' TTFT p95 and cost and their ratio, then a summary line.

Scenarios (rates reached by overlaying shifted copies of the trace, time kept at 1x so the trace's own
minute-to-minute variation stays):
- `trace`: the trace as it is (5.5 requests/s), Llama-3-8B on H100s, static baseline = maxReplicas.
- `10k-users`: 400 copies (~2,240 requests/s; about 10,000 requests in flight at once, measured by Little's
  law and printed as `concurrent_requests`), static baseline = 240 on-demand replicas (150 served 250
  copies at a TTFT p95 of 314 ms).
- `spot-reclaims`: the same load with spot reclaims (1 per spot replica-hour, 2-minute notice) and spot
  capacity limited to 130 replicas, so the on-demand fallback works too.

    python bench/fleet.py [--trace PATH] [--minutes 10] [--quick]
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
from llmfleet.sim.fleet import SimConfig, compare, read_azure_trace, shape  # noqa: E402

DATA = ROOT / "bench" / "data"

SMALL = {
    "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "maxModelLen": 8192},
    "pools": {"onDemand": {"minReplicas": 1, "maxReplicas": 2}, "spot": {"maxReplicas": 4}},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 6},
}
LARGE = {
    "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "maxModelLen": 8192},
    "pools": {
        "onDemand": {"minReplicas": 8, "maxReplicas": 200},
        "spot": {"maxReplicas": 300, "pendingTimeout": "3m"},
    },
    "autoscaling": {"minReplicas": 8, "maxReplicas": 400},
}


def scenarios(quick: bool, minutes: float) -> list[dict]:
    copies = 25 if quick else 400
    static = copies * 150 // 250
    warm = min(5.0, minutes / 4)
    return [
        {
            "name": "trace",
            "spec": SMALL,
            "copies": 1,
            "minutes": minutes * (1 if quick else 3),
            "config": SimConfig(warmup_s=60 * warm),
        },
        {
            "name": "10k-users",
            "spec": LARGE,
            "copies": copies,
            "minutes": minutes,
            "config": SimConfig(warmup_s=60 * warm, initial_replicas=static, static_replicas=static),
        },
        {
            "name": "spot-reclaims",
            "spec": LARGE,
            "copies": copies,
            "minutes": minutes,
            "config": SimConfig(
                warmup_s=60 * warm,
                initial_replicas=static,
                static_replicas=static,
                spot_reclaims_per_hour=1.0,
                spot_capacity=copies * 130 // 400,
                seed=1,
            ),
        },
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(DATA / "azure-llm-conv-2023.csv"))
    ap.add_argument(
        "--minutes", type=float, default=10.0, help="minutes of trace per scenario (x3 for `trace`)"
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run: a tenth of the load, a few minutes")
    args = ap.parse_args()
    minutes = 3.0 if args.quick else args.minutes
    trace = read_azure_trace(Path(args.trace))
    results = []
    for sc in scenarios(args.quick, minutes):
        t0 = time.perf_counter()
        requests = shape(trace, 1.0, sc["copies"], sc["minutes"], seed=0)
        auto, static, summary = compare(parse_spec(sc["spec"]), requests, sc["config"])
        line = {
            "scenario": sc["name"],
            "copies": sc["copies"],
            "minutes": sc["minutes"],
            "requests_per_s": round(len(requests) / (sc["minutes"] * 60), 1),
            "concurrent_requests": auto["concurrent_requests"],
            "autoscaled": {
                k: auto[k]
                for k in (
                    "ttft_p95_ms",
                    "ttft_p99_ms",
                    "cost_usd",
                    "replica_hours",
                    "peak_replicas",
                    "completed",
                    "lost_in_reclaims",
                    "spot_reclaims",
                    "fallback_minutes",
                )
            },
            "static": {
                k: static[k] for k in ("fleet", "ttft_p95_ms", "ttft_p99_ms", "cost_usd", "completed")
            },
            "cost_ratio_vs_static": summary["cost_ratio_vs_static"],
            "ttft_p95_ratio_vs_static": round(auto["ttft_p95_ms"] / static["ttft_p95_ms"], 3)
            if auto["ttft_p95_ms"] and static["ttft_p95_ms"]
            else None,
            "sim_seconds": round(time.perf_counter() - t0, 1),
        }
        results.append(line)
        print(json.dumps(line), flush=True)
    print(
        json.dumps(
            {
                "summary": True,
                **{
                    r["scenario"]: {
                        "cost_ratio_vs_static": r["cost_ratio_vs_static"],
                        "ttft_p95_ms": r["autoscaled"]["ttft_p95_ms"],
                    }
                    for r in results
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
