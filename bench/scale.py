"""Benchmark: what the seed's headline (10,000 concurrent streaming users) needs of the gateway tier, from
figures measured here and extrapolated with a stated model.

Measured (same run): one gateway process pinned to one core (the production gateway config: keys, limits,
every request scanned) in front of a streaming upstream on the other core that sends a token every
``--interval`` seconds (25 ms: a real engine's 20-50 ms per token per user). For each stream count and
answer length, the same streams direct and then through the gateway: streams held to the end, TTFT p95 added,
and the gateway's CPU. Two answer lengths (the Azure conversation trace's mean output, 211 tokens, and a short
32) separate the two costs in a least-squares fit: CPU = a x chunks + b x requests.

Extrapolated: a gateway tier serving U users at T tokens/s each, answers of L tokens (a user whose answer
ends sends the next request), needs U x T x a + U x T / L x b cores, at the target utilisation. The engine
side comes from the fleet simulator at the seed's load (bench/fleet.py's 10k-users scenario: 400 overlaid
copies of the Azure conversation trace, ~10,000 requests in flight by Little's law). Dollar figures: engines
from the catalog's GPU prices (the simulator's own), gateway cores at ``--core-hour-usd`` (an input, not a
measurement: set your own price).

Only one gateway core can be measured on this 2-core machine (the other runs the upstream and the clients);
more gateway processes share keys and limits through Redis (tests/integration/test_shared_limits.py) and
engine load through /load (tests/integration/test_shared_load.py), so the tier scales by adding processes;
this bench does not show that part, it names it.

With --relay-floor the same streams also go through a byte relay that parses nothing (harness.serve_relay,
pinned like the gateway), fitted the same way: the gateway's per-chunk CPU against the least any Python proxy
costs at this cadence.

    python bench/scale.py [--streams 100,200,400] [--interval 0.025] [--quick] [--no-fleet] [--relay-floor]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "operator"))

from gateway import CLIENT_CPU, KEY, body, free_port, start_llmfleet, start_relay  # noqa: E402
from harness import hold_streams, pct, proc_cpu_seconds, run_upstream  # noqa: E402

MEAN_OUTPUT = 211  # the Azure conversation trace's mean GeneratedTokens (bench/data/README.md)
USERS = 10_000
TOKEN_INTERVAL_S = 0.025
TARGET_UTILISATION = 0.7  # the gateway HPA's default target (spec.gateway.autoscaling.targetCPUUtilization)


def hold(port: int, streams: int, ramp: float, seconds: float) -> Any:
    import uvloop

    async def run() -> Any:
        return await hold_streams(
            "127.0.0.1",
            port,
            "/v1/chat/completions",
            body(True),
            {"authorization": f"Bearer {KEY}"},
            streams,
            ramp,
            timeout=ramp + seconds + 120,
        )

    return uvloop.run(run())


def measure(streams: int, chunks: int, interval: float, workdir: Path, relay: bool = False) -> dict[str, Any]:
    """One case: the streams direct, then through a fresh gateway (the gateway's CPU over that pass), and with
    ``relay`` through the byte relay too (harness.serve_relay, pinned like the gateway: the floor of any Python
    proxy at this cadence)."""
    ctx = multiprocessing.get_context("spawn")
    up = free_port()
    upstream = ctx.Process(target=run_upstream, args=(up, chunks, interval, CLIENT_CPU), daemon=True)
    upstream.start()
    time.sleep(1)
    ramp, seconds = max(1.0, streams / 200), chunks * interval
    proc = None
    try:
        direct = hold(up, streams, ramp, seconds)
        d = workdir / f"gw-{streams}-{chunks}"
        d.mkdir()
        proc, port = start_llmfleet(up, d, up)
        hold(port, min(20, streams), 0.5, seconds)  # warm-up
        cpu0, t0 = proc_cpu_seconds(proc.pid), time.perf_counter()
        through = hold(port, streams, ramp, seconds)
        wall, cpu = time.perf_counter() - t0, proc_cpu_seconds(proc.pid) - cpu0
        proc.terminate()
        proc.wait(timeout=30)
        proc = None
        if relay:
            proc, rport = start_relay(up)
            hold(rport, min(20, streams), 0.5, seconds)
            rcpu0 = proc_cpu_seconds(proc.pid)
            floor = hold(rport, streams, ramp, seconds)
            rcpu = proc_cpu_seconds(proc.pid) - rcpu0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        upstream.terminate()
        upstream.join(10)
    done = len(through.latencies)
    line = {
        "streams": streams,
        "chunks_per_stream": chunks,
        "interval_ms": round(interval * 1000, 1),
        "chunks_per_s": round(streams / interval),
        "held_to_the_end": done,
        "errors": through.errors,
        "ttft_p95_added_ms": round((pct(through.ttfts, 0.95) - pct(direct.ttfts, 0.95)) * 1000, 2),
        "gateway_cpu_s": round(cpu, 3),
        "gateway_core_share": round(cpu / wall, 3),
        "cpu_us_per_chunk_all_in": round(cpu / max(1, done * chunks) * 1e6, 2),
        "_chunks": done * chunks,
        "_requests": done,
        "_cpu": cpu,
    }
    if relay:
        line |= {
            "relay_floor_held_to_the_end": len(floor.latencies),
            "relay_floor_cpu_s": round(rcpu, 3),
            "relay_floor_cpu_us_per_chunk_all_in": round(
                rcpu / max(1, len(floor.latencies) * chunks) * 1e6, 2
            ),
            "_relay": (len(floor.latencies) * chunks, len(floor.latencies), rcpu),
        }
    return line


def fit(points: list[tuple[int, int, float]]) -> tuple[float, float]:
    """Least squares, no intercept, over (chunks, requests, CPU seconds): CPU = a x chunks + b x requests."""
    x = np.array([[c, r] for c, r, _ in points], dtype=np.float64)
    y = np.array([cpu for _, _, cpu in points], dtype=np.float64)
    (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(a), float(b)


def relay_figures(lines: list[dict[str, Any]], a: float) -> dict[str, Any]:
    """The byte relay's own fit over the same cases, and the gateway's per-chunk cost against it."""
    ra, rb = fit([ln["_relay"] for ln in lines])
    return {
        "relay_floor_cpu_us_per_chunk": round(ra * 1e6, 2),
        "relay_floor_cpu_us_per_request": round(rb * 1e6, 1),
        "cpu_per_chunk_ratio_vs_relay_floor": round(a / ra, 3) if ra > 0 else None,
    }


def cores_for(users: int, tokens_per_s: float, mean_output: float, a: float, b: float) -> float:
    """Gateway cores busy for ``users`` concurrent streams (each replaced by a new request when it ends)."""
    return users * tokens_per_s * a + users * tokens_per_s / mean_output * b


def fleet_at_headline(minutes: float) -> dict[str, Any]:
    """The engine fleet at the seed's load: bench/fleet.py's 10k-users scenario in the fleet simulator."""
    from llmfleet.api.load import parse_spec
    from llmfleet.sim.fleet import SimConfig, read_azure_trace, shape, simulate

    spec = parse_spec(
        {
            "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "maxModelLen": 8192},
            "pools": {"onDemand": {"minReplicas": 1, "maxReplicas": 120}, "spot": {"maxReplicas": 200}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 320},
        }
    )
    trace = shape(read_azure_trace(ROOT / "data" / "azure-llm-conv-2023.csv"), 1.0, 400, minutes, seed=0)
    out = simulate(spec, trace, SimConfig(warmup_s=60 * min(3.0, minutes / 3), initial_replicas=240))
    hours = (trace[-1].at - out["warmup_s"]) / 3600
    return {
        "requests_per_s": round(len(trace) / (minutes * 60)),
        "concurrent_requests": out["concurrent_requests"],
        "peak_replicas": out["peak_replicas"],
        "replica_hours": out["replica_hours"],
        "engine_cost_per_hour_usd": round(out["cost_usd"] / hours, 2) if hours > 0 else None,
        "ttft_p95_ms": out["ttft_p95_ms"],
        "simulated_minutes": minutes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="100,200,400", help="comma-separated concurrent stream counts")
    ap.add_argument("--interval", type=float, default=TOKEN_INTERVAL_S, help="seconds between tokens")
    ap.add_argument("--chunks", default=f"{MEAN_OUTPUT},32", help="answer lengths (tokens), two or more")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 50 and 100 streams, no fleet part")
    ap.add_argument("--no-fleet", action="store_true", help="skip the fleet simulator part")
    ap.add_argument(
        "--relay-floor",
        action="store_true",
        help="the same streams through a byte relay too: per-chunk and per-request CPU against that floor",
    )
    ap.add_argument("--fleet-minutes", type=float, default=6.0)
    ap.add_argument(
        "--core-hour-usd", type=float, default=0.05, help="price of one gateway core-hour (input)"
    )
    args = ap.parse_args()
    try:
        streams = [int(s) for s in ("50,100" if args.quick else args.streams).split(",")]
        chunks = [int(c) for c in args.chunks.split(",")]
        if len(set(chunks)) < 2 or min(streams) < 1 or min(chunks) < 1 or args.interval <= 0:
            raise ValueError
    except ValueError:
        print("--streams, --chunks (two lengths) and --interval must be positive numbers", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="llmfleet-scale-"))
    lines = []
    for c in chunks:
        for s in streams:
            line = measure(s, c, args.interval, workdir, args.relay_floor)
            lines.append(line)
            print(json.dumps({k: v for k, v in line.items() if not k.startswith("_")}), flush=True)
    a, b = fit([(ln["_chunks"], ln["_requests"], ln["_cpu"]) for ln in lines])
    tokens_per_s = 1 / TOKEN_INTERVAL_S
    per_1000 = cores_for(1000, tokens_per_s, MEAN_OUTPUT, a, b)
    busy = cores_for(USERS, tokens_per_s, MEAN_OUTPUT, a, b)
    cores = busy / TARGET_UTILISATION
    fleet = {} if (args.quick or args.no_fleet) else fleet_at_headline(args.fleet_minutes)
    summary = {
        "summary": True,
        "cpu_us_per_chunk": round(a * 1e6, 2),
        "cpu_us_per_request": round(b * 1e6, 1),
        "cores_per_1000_streams_at_40_tokens_s": round(per_1000, 2),
        **(relay_figures(lines, a) if args.relay_floor else {}),
        "headline": {
            "users": USERS,
            "ms_per_token": TOKEN_INTERVAL_S * 1000,
            "mean_output_tokens": MEAN_OUTPUT,
            "sse_events_per_s": round(USERS * tokens_per_s),
            "gateway_cores_busy": round(busy, 1),
            "gateway_cores_at_target": round(cores, 1),
            "gateway_cost_per_hour_usd": round(cores * args.core_hour_usd, 2),
            "core_hour_usd_input": args.core_hour_usd,
            "engines": fleet,
        },
        "worst_ttft_p95_added_ms": max(ln["ttft_p95_added_ms"] for ln in lines),
        "errors": sum(ln["errors"] for ln in lines),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
