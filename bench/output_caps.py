"""Benchmark: what an output-length cap (spec.gateway.outputTokens.max) saves on real traffic.

The Azure LLM inference traces (bench/data, CC-BY 4.0) give each request's real output length. For each cap,
in the same run against the uncapped baseline: the share of requests the gateway would clamp, the share of
output tokens that are never generated, and the autoscaled fleet's cost and TTFT in the fleet simulator
(engine-sim's performance model, the operator's own autoscaling policy) replaying the trace with outputs cut
at the cap. One JSON line per trace and cap, then a summary line.

What a cap costs in quality is not measured here: a clamped answer is cut short (finish_reason "length").
Pick a cap above what the application's answers need; the clamped share says how many requests it touches.

    python bench/output_caps.py [--caps 2048,1024,512,256] [--copies 25] [--minutes 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from llmfleet.api.load import parse_spec  # noqa: E402
from llmfleet.sim.fleet import SimConfig, simulate  # noqa: E402
from llmfleet.traces import read_azure_trace, shape  # noqa: E402

DATA = ROOT / "bench" / "data"
TRACES = {"conv": DATA / "azure-llm-conv-2023.csv", "code": DATA / "azure-llm-code-2023.csv"}
SPEC = {
    "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "maxModelLen": 8192},
    "pools": {"onDemand": {"minReplicas": 1, "maxReplicas": 40}, "spot": {"maxReplicas": 60}},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 100},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caps", default="2048,1024,512,256", help="comma-separated max_tokens caps")
    ap.add_argument("--copies", type=int, default=25, help="overlaid copies of the trace (load)")
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of trace replayed")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 copies, 3 minutes, one trace")
    args = ap.parse_args()
    try:
        caps = [int(c) for c in args.caps.split(",")]
        if any(c < 1 for c in caps):
            raise ValueError
    except ValueError:
        print(f"--caps {args.caps!r}: want positive integers, e.g. 2048,1024,512", file=sys.stderr)
        return 2
    copies, minutes = (2, 3.0) if args.quick else (args.copies, args.minutes)
    spec = parse_spec(SPEC)
    # Started warm at the size bench/fleet.py found for this load (150 replicas per 250 copies), measured after a
    # warm-up: the figures compare steady fleets, not cold starts.
    config = SimConfig(warmup_s=60 * min(5.0, minutes / 4), initial_replicas=max(1, copies * 150 // 250))
    summary: dict[str, dict[str, float]] = {}
    for name in ["conv"] if args.quick else list(TRACES):
        full = read_azure_trace(TRACES[name])
        tokens = sum(r.output_tokens for r in full)
        requests = shape(full, 1.0, copies, minutes, seed=0)
        t0 = time.perf_counter()
        base = simulate(spec, requests, config)
        for cap in [None, *caps]:
            capped = (
                requests
                if cap is None
                else [replace(r, output_tokens=min(r.output_tokens, cap)) for r in requests]
            )
            run = base if cap is None else simulate(spec, capped, config)
            line = {
                "trace": name,
                "cap": cap,
                # Over the whole trace (its own distribution), not only the replayed minutes.
                "requests_clamped_share": round(
                    sum(1 for r in full if cap and r.output_tokens > cap) / len(full), 4
                ),
                "output_tokens_saved_share": round(
                    sum(max(0, r.output_tokens - cap) for r in full) / tokens if cap else 0.0, 4
                ),
                "requests_per_s": round(len(requests) / (minutes * 60), 1),
                "cost_usd": run["cost_usd"],
                "cost_vs_uncapped": round(run["cost_usd"] / base["cost_usd"], 3)
                if base["cost_usd"]
                else None,
                "ttft_p95_ms": run["ttft_p95_ms"],
                "ttft_slo_attainment": run["ttft_slo_attainment"],
                "sim_seconds": round(time.perf_counter() - t0, 1),
            }
            print(json.dumps(line), flush=True)
            if cap is not None:
                summary.setdefault(name, {})[str(cap)] = line["cost_vs_uncapped"]
    print(json.dumps({"summary": True, "cost_vs_uncapped": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
