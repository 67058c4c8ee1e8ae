"""Benchmark: the model route's "auto" policy on public per-question results, against always-large,
always-small, random routing at the same cost and a hand-written task rule; then the fleet the mix needs.

Data: bench/data/routellm-mmlu-gsm8k.jsonl.gz (RouteLLM's published MMLU and GSM8K results, Apache-2.0: for
each question whether Mixtral-8x7B-Instruct, the small model, and GPT-4-1106, the large one, answered it
correctly; see bench/data/README.md). A fixed 30 % of the questions (by a hash of the prompt) is held out: the
shipped bank (operator/llmfleet/data/router-bank.npz, `--write-bank`) is built from the other 70 % alone, and
every figure below is measured on the held-out part only.

Quality is the share of held-out questions answered correctly by the model each policy picks, relative to
always-large. Cost is relative to always-large too: a request to the small model costs ``cost_ratio_small``
of one to the large model, the ratio of their cost per generated token in the fleet's own sizing (catalog
GPU prices over decode capacity: Llama-3-8B on one H100 vs Llama-3-70B on four). Random routing at the same
cost sends the same share to the large model, chosen at random (its expected quality). APGR is RouteLLM's
"average performance gap recovered" over call shares 0-100 % (random: 0.5, a perfect router: ~1).

The fleet part replays the Azure conversation trace (CC-BY 4.0) through the fleet simulator for three fleets
in the same run: all requests on the large model, all on the small one, and the split the auto policy makes
at the default threshold (each request sent to large with the policy's large share): replicas per model and
cost per hour.

    python bench/routing.py [--thresholds 0.1,0.2,...] [--quick] [--write-bank] [--copies 10] [--minutes 10]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from llmfleet import modelroute  # noqa: E402
from llmfleet.api.load import parse_spec  # noqa: E402
from llmfleet.api.sizing import size  # noqa: E402
from llmfleet.fleet.capacity import EngineProfile, capacity_of  # noqa: E402
from llmfleet.sim.fleet import SimConfig, simulate  # noqa: E402
from llmfleet.traces import read_azure_trace, shape  # noqa: E402

DATA = ROOT / "bench" / "data" / "routellm-mmlu-gsm8k.jsonl.gz"
TRACE = ROOT / "bench" / "data" / "azure-llm-conv-2023.csv"
CACHE = Path.home() / ".cache" / "llmfleet" / "routing"
HOLDOUT_PERCENT = 30
DEFAULT_THRESHOLD = 0.175  # the API's default (spec.routing.auto.threshold)
CENTROIDS = 1024
SMALL_SPEC = {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "maxModelLen": 8192}}
LARGE_SPEC = {"model": {"name": "meta-llama/Meta-Llama-3-70B-Instruct", "maxModelLen": 8192}}
FLEET = {
    "pools": {"onDemand": {"minReplicas": 1, "maxReplicas": 40}, "spot": {"maxReplicas": 60}},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 100},
}


def held_out(prompt: str) -> bool:
    return hashlib.blake2b(prompt.encode(), digest_size=8).digest()[0] % 100 < HOLDOUT_PERCENT


def load_rows() -> list[dict]:
    with gzip.open(DATA, "rt") as f:
        return [json.loads(line) for line in f]


def features(prompts: list[str], label: str, encoder: str) -> np.ndarray:
    """The router's vectors for the prompts: hashed n-grams, or MiniLM's (cached by content)."""
    if encoder == "ngram":
        return np.stack([modelroute.ngram_features(p) for p in prompts])
    from llmfleet.cache.embedding import load_embedder

    digest = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()[:16]
    path = CACHE / f"{label}-{modelroute.ROUTER_MAX_TOKENS}-{digest}.npy"
    if path.exists():
        return np.load(path)
    enc = load_embedder("all-MiniLM-L6-v2", 2)
    out, t0 = [], time.perf_counter()
    for i in range(0, len(prompts), 16):
        out.append(enc.embed(prompts[i : i + 16], modelroute.ROUTER_MAX_TOKENS))
        if i % 1600 == 0 and i:
            print(f"# embedded {i}/{len(prompts)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    v = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, v)
    return v


def cost_ratio_small() -> float:
    """Cost per generated token of the small model over the large one's, from the fleet's sizing."""

    def per_token(spec: dict) -> float:
        s = size(parse_spec(spec))
        cap = capacity_of(EngineProfile.from_sizing(s))
        return s.on_demand_per_replica_hour / cap.decode_tps

    return per_token(SMALL_SPEC) / per_token(LARGE_SPEC)


def apgr(scores: np.ndarray, small: np.ndarray, large: np.ndarray) -> float:
    """RouteLLM's average performance gap recovered: the mean over large-call shares 0..100 % of
    (quality − small's) / (large's − small's), sending the highest-scored questions to large."""
    order = np.argsort(-scores, kind="stable")
    qs, ql = small.mean(), large.mean()
    n = len(scores)
    gains = []
    for pct in range(0, 101):
        m = round(n * pct / 100)
        to_large = np.zeros(n, dtype=bool)
        to_large[order[:m]] = True
        q = np.where(to_large, large, small).mean()
        gains.append((q - qs) / (ql - qs))
    return float(np.mean(gains))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thresholds", default="0.05,0.1,0.125,0.15,0.175,0.2,0.225,0.25,0.3,0.35,0.4,0.5")
    ap.add_argument(
        "--quick", action="store_true", help="a smoke run: 400 held-out questions, a short fleet run"
    )
    ap.add_argument("--write-bank", action="store_true", help="build the shipped bank from the training part")
    ap.add_argument(
        "--encoder",
        choices=("ngram", "minilm"),
        default="ngram",
        help="the router's features: hashed word n-grams (the shipped bank) or the semantic cache's MiniLM",
    )
    ap.add_argument("--copies", type=int, default=10, help="overlaid copies of the trace in the fleet part")
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of the trace replayed")
    args = ap.parse_args()
    try:
        thresholds = [float(t) for t in args.thresholds.split(",")]
        if any(not 0 <= t <= 1 for t in thresholds):
            raise ValueError
    except ValueError:
        print(f"--thresholds {args.thresholds!r}: want numbers in [0, 1], e.g. 0.1,0.3", file=sys.stderr)
        return 2
    rows = load_rows()
    test = [r for r in rows if held_out(r["prompt"])]
    train = [r for r in rows if not held_out(r["prompt"])]
    encoder = modelroute.NGRAM + str(modelroute.NGRAM_DIM) if args.encoder == "ngram" else "all-MiniLM-L6-v2"
    need = np.array([r["large"] and not r["small"] for r in train], dtype=np.float32)
    if args.write_bank or args.encoder != "ngram":  # the shipped bank is the n-gram one
        v = features([r["prompt"] for r in train], "train", args.encoder)
        bank = modelroute.fit_bank(v, need, CENTROIDS, encoder=encoder)
        path = modelroute.BANK_PATH if args.encoder == "ngram" else CACHE / "bank-minilm.npz"
        bank.save(path)
        print(f"# bank: {len(bank.vectors)} centroids from {len(train)} questions -> {path}", file=sys.stderr)
        bank = modelroute.Bank.load(path)  # as stored (float16), as the gateway reads it
    else:
        bank = modelroute.Bank.load()
    if args.quick:
        test = random.Random(0).sample(test, 400)
    t0 = time.perf_counter()
    vectors = features([r["prompt"] for r in test], "test-quick" if args.quick else "test", args.encoder)
    features_us = (time.perf_counter() - t0) / len(test) * 1e6
    t0 = time.perf_counter()
    timings = []
    scores = np.empty(len(test), dtype=np.float32)
    for i, v in enumerate(vectors):
        t = time.perf_counter()
        scores[i] = bank.score(v, modelroute.DEFAULT_K)
        timings.append(time.perf_counter() - t)
    score_s = time.perf_counter() - t0
    small = np.array([r["small"] for r in test], dtype=np.float64)
    large = np.array([r["large"] for r in test], dtype=np.float64)
    q_small, q_large = float(small.mean()), float(large.mean())
    r = cost_ratio_small()

    def line(policy: str, threshold: float | None, to_large: np.ndarray | float) -> dict:
        share = float(np.mean(to_large))
        q = (
            float(np.where(to_large, large, small).mean())
            if isinstance(to_large, np.ndarray)
            else (share * q_large + (1 - share) * q_small)
        )
        out = {
            "policy": policy,
            "threshold": threshold,
            "quality_vs_large": round(q / q_large, 4),
            "cost_vs_large": round(share + (1 - share) * r, 4),
            "large_share": round(share, 4),
            "questions": len(test),
        }
        print(json.dumps(out), flush=True)
        return out

    line("large", None, np.ones(len(test), dtype=bool))
    line("small", None, np.zeros(len(test), dtype=bool))
    tasks = np.array([modelroute.detect_task(r["prompt"]) == "math" for r in test])
    line("rule-math-to-large", None, tasks)
    curve = {}
    for t in thresholds:
        a = line("auto", t, scores >= t)
        rnd = line("random", t, a["large_share"])
        curve[t] = (a, rnd)
    d = curve.get(DEFAULT_THRESHOLD) or (line("auto", DEFAULT_THRESHOLD, scores >= DEFAULT_THRESHOLD), None)
    auto_d = d[0]
    rnd_q = auto_d["large_share"] * q_large + (1 - auto_d["large_share"]) * q_small
    enc_ms = encode_latency([r["prompt"] for r in test[:100]]) if args.encoder == "minilm" else None
    fleet = fleet_split(auto_d["large_share"], args)
    meeting = [a for a, _ in curve.values() if a["quality_vs_large"] >= 0.9 and a["cost_vs_large"] <= 0.5]
    summary = {
        "summary": True,
        "default_threshold": DEFAULT_THRESHOLD,
        "auto_quality_vs_large": auto_d["quality_vs_large"],
        "auto_cost_vs_large": auto_d["cost_vs_large"],
        "auto_large_share": auto_d["large_share"],
        "random_quality_at_same_cost": round(rnd_q / q_large, 4),
        "apgr_auto": round(apgr(scores, small, large), 4),
        "apgr_random": 0.5,
        "cheapest_at_90pct_quality": min(meeting, key=lambda a: a["cost_vs_large"]) if meeting else None,
        "small_quality_vs_large": round(q_small / q_large, 4),
        "cost_ratio_small": round(r, 4),
        "encoder": encoder,
        "features_us_mean": round(features_us, 1) if args.encoder == "ngram" else None,
        "router_score_us_p50": round(statistics.median(timings) * 1e6, 1),
        "router_score_us_p99": round(float(np.quantile(timings, 0.99)) * 1e6, 1),
        "encode_ms_p50": enc_ms,
        "held_out_questions": len(test),
        "bank_centroids": len(bank.vectors),
        "score_seconds": round(score_s, 3),
        "fleet": fleet,
    }
    print(json.dumps(summary), flush=True)
    return 0


def encode_latency(prompts: list[str]) -> float:
    """p50 of one query's encoder call (what auto adds when the semantic cache did not embed the query)."""
    from llmfleet.cache.embedding import load_embedder

    enc = load_embedder("all-MiniLM-L6-v2", 2)
    enc.embed(["warm up"])
    times = []
    for p in prompts:
        t = time.perf_counter()
        enc.embed([p], modelroute.ROUTER_MAX_TOKENS)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def fleet_split(large_share: float, args: argparse.Namespace) -> dict:
    """The fleet simulator on the conversation trace: all-large, all-small and the auto split."""
    copies, minutes = (1, 3.0) if args.quick else (args.copies, args.minutes)
    trace = shape(read_azure_trace(TRACE), 1.0, copies, minutes, seed=0)
    rng = random.Random(1)
    to_large = [rng.random() < large_share for _ in trace]
    small_spec = parse_spec({**SMALL_SPEC, **FLEET})
    large_spec = parse_spec({**LARGE_SPEC, **FLEET})
    span = minutes * 60

    def run(spec: Any, reqs: list) -> dict:
        if not reqs:
            return {"cost_usd": 0.0, "peak_replicas": 0, "ttft_p95_ms": None}
        # Started warm at 1.3x the replicas the requests' token rates need (the fleet's own capacity model),
        # figures taken after a warm-up: steady fleets are compared, not cold starts.
        cap = capacity_of(EngineProfile.from_sizing(size(spec)))
        need = cap.replicas_for(
            sum(q.prompt_tokens for q in reqs) / span, sum(q.output_tokens for q in reqs) / span
        )
        config = SimConfig(
            warmup_s=60 * min(2.0, minutes / 4), initial_replicas=max(1, math.ceil(1.3 * need))
        )
        out = simulate(spec, reqs, config)
        keep = ("cost_usd", "peak_replicas", "ttft_p95_ms", "ttft_slo_attainment", "replica_hours")
        return {k: out[k] for k in keep}

    all_large = run(large_spec, trace)
    all_small = run(small_spec, trace)
    mix_large = run(large_spec, [q for q, big in zip(trace, to_large, strict=True) if big])
    mix_small = run(small_spec, [q for q, big in zip(trace, to_large, strict=True) if not big])
    mix_cost = mix_large["cost_usd"] + mix_small["cost_usd"]
    return {
        "requests_per_s": round(len(trace) / (minutes * 60), 1),
        "all_large": all_large,
        "all_small": all_small,
        "auto_split": {"large": mix_large, "small": mix_small, "cost_usd": round(mix_cost, 2)},
        "auto_split_cost_vs_large": round(mix_cost / all_large["cost_usd"], 3)
        if all_large["cost_usd"]
        else None,
    }


if __name__ == "__main__":
    sys.exit(main())
