"""Benchmark: the cache tier.

1. Semantic threshold curve on the labelled paraphrase pairs (bench/data/gptcache-paraphrase-pairs.json,
   MIT, Zilliz GPTCache) with the real all-MiniLM-L6-v2, measured the way a cache meets them (store the
   `origin` of the first half, look up every `similar` in order): one JSON line per threshold with
   hit_rate and false_hit_rate, then a recommendation (the highest hit rate with false hits ≤ 1%); with
   hard negatives, the curve with and without the guard, and the verified mode (maxFalseHitRate 1, 2, 5 %)
   replayed on the same lookups.
2. Latency through a real gateway on real Redis: exact hit, semantic hit, and a miss served by
   engine-sim (real-time performance model), against the direct path to a trivially fast upstream; then the
   same in verified mode (maxFalseHitRate 1 %, a threshold already learned).
3. Savings on a replayed workload: request sizes from the Azure LLM trace (CC-BY 4.0, Patel et al.,
   Splitwise, ISCA 2024); the text of each request is one of the paraphrase questions, drawn with a Zipf
   law (s=1.1) so popular questions repeat, half of them reworded (the `similar` text).

4. With ``--encoder MODEL.onnx --encoder-tokenizer tokenizer.json``: another sentence encoder (any BERT-style
   ONNX graph with a ``last_hidden_state`` output) against all-MiniLM-L6-v2 in the same run on the same
   lookups: each one's curve without the guard on a finer grid, its CPU per query, and per point of the
   other encoder MiniLM's best hit rate at no more false hits over every threshold MiniLM could have had, not
   a grid's (``OnnxEncoder``, ``best_fixed``, ``compare_encoders``). With ``--tune-pairs TUNE.json`` as well:
   per encoder, and for the mean of the two cosines (``Joint``), the threshold tuned on TUNE for 0.5 and 1 %
   false hits replayed on ``--pairs``, beside each encoder's best fixed threshold there in hindsight
   (``transfer``): tuned on one part of a corpus and replayed on its held-out part, or on another corpus.

    python bench/cache.py [--pairs PATH] [--trace PATH] [--requests 400] [--quick]
    python bench/cache.py --pairs mqp-heldout.json --encoder bge-small-en-v1.5-q.onnx \
        --encoder-tokenizer bge-small-en-v1.5-q-tokenizer.json --encoder-pooling cls [--tune-pairs mqp-tune.json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from llmfleet.cache.embedding import Embedder, MiniLMEmbedder  # noqa: E402

DATA = ROOT / "bench" / "data"
SYSTEM = "You are the support assistant of an ML platform. Answer in two sentences."
THRESHOLDS = (0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.98)


class OnnxEncoder:
    """A sentence encoder from an ONNX file (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``; first
    output the last hidden state) and its HF ``tokenizers`` file, pooled by the mean of the tokens or the [CLS]
    token, unit length: the pipeline sentence-transformers runs for BERT-style models. One text a call."""

    def __init__(self, model: Path, tokenizer: Path, pooling: str = "mean", threads: int = 1) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]
        from tokenizers import Tokenizer

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling {pooling!r}: mean or cls")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(str(tokenizer))
        self.tok.enable_truncation(256)
        self.pooling = pooling
        self.name = model.stem
        self.dim = 0

    def embed(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        out = []
        for text in texts:
            e = self.tok.encode(text)
            ids = np.array([e.ids], dtype=np.int64)
            mask = np.array([e.attention_mask], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self.session.run(None, feed)[0][0]
            v = hidden[0] if self.pooling == "cls" else hidden.mean(axis=0)
            out.append(v / max(float(np.linalg.norm(v)), 1e-12))
        vectors = np.array(out, dtype=np.float32)
        self.dim = vectors.shape[1] if len(vectors) else self.dim
        return vectors


class Memo:
    """An encoder that embeds each text once: the tuned-transfer evaluation meets the same texts many times."""

    def __init__(self, emb: Embedder) -> None:
        self.emb, self.name, self.dim = emb, emb.name, emb.dim
        self.seen: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.seen]
        if new:
            self.seen.update(zip(new, self.emb.embed(new), strict=True))
        self.dim = self.emb.dim
        return np.array([self.seen[t] for t in texts], dtype=np.float32).reshape(len(texts), -1)


class Joint:
    """Two encoders as one: their unit vectors side by side over sqrt(2), so that one cosine of it is the mean
    of the two encoders' cosines. Serving on it is "both encoders agree on average"."""

    def __init__(self, a: Embedder, b: Embedder) -> None:
        self.a, self.b, self.name = a, b, f"mean({a.name}, {b.name})"
        self.dim = 0

    def embed(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        v = np.hstack([self.a.embed(texts), self.b.embed(texts)]) / np.float32(np.sqrt(2.0))
        self.dim = v.shape[1]
        return v.astype(np.float32)


def transfer(
    tune: list[dict[str, str]],
    held: list[dict[str, str]],
    encoders: list[Embedder],
    targets: tuple[float, ...],
) -> list[dict[str, Any]]:
    """What a fixed threshold tuned on one set of pairs does on another: per encoder (and the mean of the first
    two's cosines, ``Joint``) and per target false-hit rate, the threshold with the most hits on ``tune`` whose
    false hits there stay at or under the target (the strictest of equals), replayed on ``held``; beside it, each single encoder's
    best on ``held`` in hindsight at no more false hits (``best_fixed``): the bar a tuned rule has to clear."""
    encoders = [Memo(e) for e in encoders]
    candidates: list[Embedder] = (
        [*encoders, Joint(encoders[0], encoders[1])] if len(encoders) > 1 else encoders
    )
    bars = {e.name: best_fixed(held, e) for e in encoders}
    rows: list[dict[str, Any]] = []
    for emb in candidates:
        frontier = best_fixed(tune, emb)
        for target in targets:
            within = [(h, t, f) for t, h, f in frontier if f <= target]
            if within:
                tuned_hit, threshold, tuned_false = max(within)
                point = guard_curve(held, emb, False, (threshold,))[0]
            else:  # even its top similarity is a wrong hit: the tuned rule serves nothing
                tuned_hit, threshold, tuned_false = 0.0, None, 0.0
                point = {"hit_rate": 0.0, "false_hit_rate": 0.0}
            rows.append(
                {
                    "transfer": emb.name,
                    "target": target,
                    "threshold": threshold,
                    "tune_hit_rate": round(tuned_hit, 4),
                    "tune_false_hit_rate": round(tuned_false, 4),
                    "hit_rate": point["hit_rate"],
                    "false_hit_rate": point["false_hit_rate"],
                    "best_fixed_hit_rate": {
                        name: max(
                            (round(h, 4) for _, h, f in bar if round(f, 4) <= point["false_hit_rate"]),
                            default=0.0,
                        )
                        for name, bar in bars.items()
                    },
                }
            )
    return rows


def best_fixed(pairs: list[dict[str, str]], emb: Embedder) -> list[tuple[float, float, float]]:
    """Every fixed threshold of ``emb`` on ``guard_curve``'s lookups (no guard), in hindsight: one point per
    distinct similarity (threshold, hit rate, false-hit rate), from the strictest. No grid: a grid's
    best at a false-hit rate can sit well under the best threshold between two of its points."""
    half, queries, _, best, score = _lookups(pairs, emb, False)
    right = _right(half, best)
    order = np.argsort(-score, kind="stable")
    s, hits, falses = score[order], np.cumsum(right[order]), np.cumsum(~right[order])
    last = np.r_[s[1:] != s[:-1], True]  # the last lookup of each run of equal similarities
    return [
        (float(t), float(h) / half, float(f) / len(queries))
        for t, h, f in zip(s[last], hits[last], falses[last], strict=True)
    ]


def compare_encoders(pairs: list[dict[str, str]], encoders: list[Embedder]) -> list[dict[str, Any]]:
    """Each encoder's plain curve (no guard) on the same lookups (``_lookups``), on a grid of 0.01 from 0.80,
    and its CPU per query; then, per point of every encoder after the first, the first's best hit rate at no
    more false hits over every threshold it could have had (``best_fixed``: ``baseline_hit_rate``, with that
    threshold): a point above it is one no fixed threshold of the first reaches."""
    grid = tuple(round(0.80 + 0.01 * i, 2) for i in range(19))
    rows: list[dict[str, Any]] = []
    texts = [p["similar"] for p in pairs[:50]]
    memos = [Memo(e) for e in encoders]  # the curve and best_fixed meet the same texts: embed them once
    for emb, memo in zip(encoders, memos, strict=True):
        emb.embed(texts[:5])
        cpu = []
        for t in texts:  # timed on the encoder itself, not the memo
            t0 = time.process_time()
            emb.embed([t])
            cpu.append(time.process_time() - t0)
        ms = round(1000 * statistics.median(cpu), 2)
        rows += [
            {**p, "encoder": emb.name, "cpu_ms_per_query": ms} for p in guard_curve(pairs, memo, False, grid)
        ]
    frontier = best_fixed(pairs, memos[0])
    for r in rows:
        if r["encoder"] != encoders[0].name:
            # guard_curve rounds to 4 places: compare on the same footing.
            within = [(round(h, 4), t) for t, h, f in frontier if round(f, 4) <= r["false_hit_rate"]]
            hit, at = max(within, default=(0.0, None))
            r["baseline"] = encoders[0].name
            r["baseline_hit_rate"] = hit
            r["baseline_threshold"] = at  # unrounded: the similarity itself, so that it can be replayed
    return rows


def curve(pairs: list[dict[str, str]], emb: MiniLMEmbedder) -> list[dict[str, float]]:
    origins = emb.embed([p["origin"] for p in pairs])
    similars = emb.embed([p["similar"] for p in pairs])
    half = len(pairs) // 2
    stored = origins[:half]
    sims = similars @ stored.T  # cosine: vectors are unit length
    best = sims.argmax(axis=1)
    score = sims.max(axis=1)
    out = []
    for t in THRESHOLDS:
        over = score >= t
        own = np.arange(len(pairs)) < half
        correct = int(np.sum(over & own & (best == np.arange(len(pairs)))))
        wrong = int(np.sum(over & own & (best != np.arange(len(pairs)))))
        false = int(np.sum(over & ~own))
        out.append(
            {
                "threshold": t,
                "hit_rate": round(correct / half, 4),
                "false_hit_rate": round((wrong + false) / len(pairs), 4),
                "pairs": len(pairs),
                "correct_hits": correct,
                "wrong_hits": wrong,
                "false_hits": false,
            }
        )
    return out


NEGATIONS = ((" is ", " is not "), (" can ", " cannot "), (" does ", " does not "), (" are ", " are not "))


def near_misses(pairs: list[dict[str, str]]) -> list[dict[str, str]]:
    """Hard negatives made from the stored questions the way wrong hits look: one number changed, or a negation
    added (deterministic; labelled "negative", with the kind of change)."""
    import re

    out = []
    for p in pairs:
        o = p["origin"]
        m = re.search(r"\d+", o)
        if m:
            changed = o[: m.start()] + str(int(m.group()) * 3 + 1) + o[m.end() :]
            out.append({"origin": o, "similar": changed, "label": "negative", "kind": "number"})
        for a, b in NEGATIONS:
            if a in o:
                out.append(
                    {"origin": o, "similar": o.replace(a, b, 1), "label": "negative", "kind": "negation"}
                )
                break
    return out


def _lookups(
    pairs: list[dict[str, str]], emb: Embedder, guard: bool
) -> tuple[int, list[str], list[dict[str, str]], np.ndarray, np.ndarray]:
    """The lookups of `guard_curve` and `verified`: the first half of the paraphrases' origins stored, every
    paraphrase then every negative looked up. (stored count, queries, negatives, best match, its similarity);
    with ``guard`` a query only meets stored questions with its signature (numbers with units, negation)."""
    from llmfleet.cache.guards import signature

    positives = [p for p in pairs if p.get("label", "paraphrase") != "negative"]
    negatives = [p for p in pairs if p.get("label") == "negative"]
    half = len(positives) // 2
    stored = [p["origin"] for p in positives[:half]]
    queries = [p["similar"] for p in positives] + [p["similar"] for p in negatives]
    vs, vq = emb.embed(stored), emb.embed(queries)
    sims = vq @ vs.T
    if guard:
        sig_s = np.array([signature(t) for t in stored])
        sig_q = np.array([signature(t) for t in queries])
        sims = np.where(sig_q[:, None] == sig_s[None, :], sims, -1.0)
    return half, queries, negatives, sims.argmax(axis=1), sims.max(axis=1)


def _right(half: int, best: np.ndarray) -> np.ndarray:
    """Per lookup of ``_lookups``, whether serving it would be right: it is one of the first half's paraphrases
    (their origins are stored) and its best match is its own origin. Every other served lookup is a false hit."""
    idx = np.arange(len(best))
    return (idx < half) & (best == idx)


def guard_curve(
    pairs: list[dict[str, str]], emb: Embedder, guard: bool, thresholds: tuple[float, ...] = THRESHOLDS
) -> list[dict[str, Any]]:
    """The cache's protocol with labelled hard negatives: store the ``origin`` of the first half of the
    paraphrase pairs; look up every paraphrase (the first half's should hit their own origin, the second
    half's nothing) and every negative (nothing: a hit serves a wrong answer). With ``guard``, a lookup only
    meets stored questions with the same signature (numbers with units, negation), as the gateway does."""
    half, queries, negatives, best, score = _lookups(pairs, emb, guard)
    n_pos = len(queries) - len(negatives)
    out = []
    right = _right(half, best)
    for t in thresholds:
        over = score >= t
        correct = int(np.sum(over & right))
        wrong = int(np.sum(over[:n_pos] & ~right[:n_pos]))
        neg_hits = int(np.sum(over[n_pos:]))
        out.append(
            {
                "threshold": t,
                "guard": "numbers+negation" if guard else "none",
                "hit_rate": round(correct / half, 4),
                "false_hit_rate": round((wrong + neg_hits) / len(queries), 4),
                "hard_negative_false_hit_rate": round(neg_hits / len(negatives), 4) if negatives else None,
                "lookups": len(queries),
                "hard_negatives": len(negatives),
            }
        )
    return out


async def latency(
    args: argparse.Namespace, pairs: list[dict[str, str]], verified_rate: float | None = None
) -> dict[str, Any]:
    """Hit and miss latency through the gateway. With ``verified_rate`` the semantic tier runs in verified mode
    (maxFalseHitRate) on a fleet that has already learned its threshold: Redis holds 3,000 agreeing checks
    between similarity 0.80 and 1.0 (as its replicas would have pushed them), so the hit path measured is the
    verified one (the learned threshold, the draw that sends 5 % of hits to be checked)."""
    import multiprocessing

    import httpx
    import redis
    from tests.integration.servers import engine, free_port, gateway
    from tests.integration.test_cache import Redis

    from harness import run_upstream

    rds = Redis()
    eng = engine("m", 1.0)
    gw = gateway(
        {
            "model": "m",
            "engines": {"static": [eng.url]},
            "limits": {"requestsPerMinute": 0, "tokensPerMinute": 0},
            "cache": {
                "redisURL": rds.url,
                "exact": {"enabled": True},
                "semantic": {
                    "enabled": True,
                    "embeddingModel": "all-MiniLM-L6-v2",
                    **(
                        {"threshold": 0.95}
                        if verified_rate is None
                        else {"threshold": 0.80, "maxFalseHitRate": verified_rate}
                    ),
                },
            },
        },
        {"bench": "sk-bench-cache"},
        "--no-access-log",
    )
    port = free_port()
    fast = multiprocessing.get_context("spawn").Process(
        target=run_upstream, args=(port, 32, 0.0, None), daemon=True
    )
    fast.start()
    headers = {"Authorization": "Bearer sk-bench-cache"}
    n = 20 if args.quick else 100

    def body(q: str) -> dict:
        return {
            "model": "m",
            "temperature": 0,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": q}],
        }

    try:
        if verified_rate is not None:
            from llmfleet.cache import verify
            from llmfleet.cache.store import CHECKS

            checks = [verify.encode(0.80 + 0.2 * i / 3000, True) for i in range(3000)]
            redis.Redis(port=rds.port).lpush(f"{CHECKS}:m", *checks)
        await asyncio.sleep(1)
        async with httpx.AsyncClient(timeout=60) as c:
            if verified_rate is not None:  # the first lookup starts the background read of the checks
                await c.post(gw.url + "/v1/chat/completions", json=body("warm up"), headers=headers)
                await asyncio.sleep(2.5)

            async def timed(url: str, b: dict, hdr: dict) -> tuple[float, str]:
                t0 = time.perf_counter()
                r = await c.post(url, json=b, headers=hdr)
                return time.perf_counter() - t0, r.headers.get("x-llmfleet-cache", "")

            direct = [
                (await timed(f"http://127.0.0.1:{port}/v1/chat/completions", body("x"), {}))[0]
                for _ in range(n)
            ]
            misses, exact, semantic = [], [], []
            for p in pairs[:n]:
                dt, kind = await timed(gw.url + "/v1/chat/completions", body(p["origin"]), headers)
                if kind == "miss":
                    misses.append(dt)
            await asyncio.sleep(0.5)
            for p in pairs[:n]:
                dt, kind = await timed(gw.url + "/v1/chat/completions", body(p["origin"]), headers)
                if kind == "exact":
                    exact.append(dt)
            for p in pairs[:n]:
                dt, kind = await timed(gw.url + "/v1/chat/completions", body(p["similar"]), headers)
                if kind == "semantic":
                    semantic.append(dt)
        base = statistics.median(direct)
        return {
            "latency": True,
            "verified_max_false_hit_rate": verified_rate,
            "direct_fast_upstream_p50_ms": round(base * 1000, 3),
            "miss_p50_ms": round(statistics.median(misses) * 1000, 2) if misses else None,
            "exact_hit_p50_ms": round(statistics.median(exact) * 1000, 3) if exact else None,
            "exact_hit_added_p50_ms": round((statistics.median(exact) - base) * 1000, 3) if exact else None,
            "semantic_hit_p50_ms": round(statistics.median(semantic) * 1000, 3) if semantic else None,
            "semantic_hit_added_p50_ms": round((statistics.median(semantic) - base) * 1000, 3)
            if semantic
            else None,
            "samples": {
                "miss": len(misses),
                "exact": len(exact),
                "semantic": len(semantic),
                "direct": len(direct),
            },
        }
    finally:
        gw.stop()
        eng.stop()
        rds.kill()
        fast.terminate()


async def savings(args: argparse.Namespace, pairs: list[dict[str, str]], trace: Path) -> dict[str, float]:
    import httpx
    from tests.integration.servers import engine, gateway, metric
    from tests.integration.test_cache import Redis

    from llmfleet.fleet.capacity import EngineProfile

    rows = []
    with trace.open() as f:
        for row in csv.DictReader(f):
            rows.append((int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    rng = np.random.default_rng(7)
    n = args.requests if not args.quick else 60
    picks = rng.choice(len(rows), size=n, replace=False)
    ranks = np.arange(1, len(pairs) + 1)
    zipf = (1 / ranks**1.1) / np.sum(1 / ranks**1.1)
    questions = rng.choice(len(pairs), size=n, p=zipf)
    reword = rng.random(n) < 0.5
    rds = Redis()
    eng = engine("m", 50.0)
    gw = gateway(
        {
            "model": "m",
            "engines": {"static": [eng.url]},
            "limits": {"requestsPerMinute": 0, "tokensPerMinute": 0},
            "cache": {"redisURL": rds.url, "semantic": {"enabled": True, "threshold": 0.95}},
        },
        {"bench": "sk-bench-cache"},
        "--no-access-log",
    )
    prof = EngineProfile()
    engine_s_total = engine_s_saved = 0.0
    tokens_total = tokens_saved = 0
    kinds: dict[str, int] = {}
    try:
        async with httpx.AsyncClient(timeout=120) as c:
            for i in range(n):
                ctx_tokens, gen_tokens = rows[picks[i]]
                q = pairs[questions[i]]["similar" if reword[i] else "origin"]
                # One application: a stable system prompt and fixed sampling parameters; the question varies.
                # The trace row gives this request's size for the accounting of what a hit saves.
                body = {
                    "model": "m",
                    "temperature": 0,
                    "max_tokens": 64,
                    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                }
                r = await c.post(
                    gw.url + "/v1/chat/completions",
                    json=body,
                    headers={"Authorization": "Bearer sk-bench-cache"},
                )
                kind = r.headers.get("x-llmfleet-cache", "?")
                kinds[kind] = kinds.get(kind, 0) + 1
                cost = ctx_tokens / prof.prefill_tokens_per_s + gen_tokens * prof.step_seconds(1, 0)
                engine_s_total += cost
                tokens_total += ctx_tokens + gen_tokens
                if kind in ("exact", "semantic"):
                    engine_s_saved += cost
                    tokens_saved += ctx_tokens + gen_tokens
            engine_metrics = (await c.get(eng.url + "/metrics")).text
    finally:
        gw.stop()
        eng.stop()
        rds.kill()
    return {
        "savings": True,
        "requests": n,
        "results": kinds,
        "zipf_s": 1.1,
        "reworded_share": 0.5,
        "hit_share": round((kinds.get("exact", 0) + kinds.get("semantic", 0)) / n, 4),
        "tokens_total": tokens_total,
        "tokens_saved": tokens_saved,
        "tokens_saved_share": round(tokens_saved / tokens_total, 4),
        "engine_seconds_total_batch1": round(engine_s_total, 1),
        "engine_seconds_saved_batch1": round(engine_s_saved, 1),
        "engine_generation_tokens": metric(engine_metrics, "vllm:generation_tokens_total"),
        "trace": "Azure LLM inference trace 2023 (conv), CC-BY 4.0, Patel et al., Splitwise, ISCA 2024",
    }


def verified(
    pairs: list[dict[str, str]], emb: MiniLMEmbedder, rate: float, floor: float, passes: int = 3
) -> dict[str, Any]:
    """The gateway's verified mode (llmfleet.cache.verify) replayed on the same lookups as `guard_curve` (the
    guard on), in a seeded random order, ``passes`` times over (a longer stretch of the same traffic): each
    candidate over ``floor`` is served once a learned threshold covers it (a 5 % share still checked), else
    checked, its outcome being whether its best match is its own question. The threshold is re-learned every
    50 lookups, as the gateway re-reads the checks. Reported over the last pass, the first ones having taught
    it; and the fixed threshold that serves as many hits, for comparison."""
    import random

    from llmfleet.cache import verify

    half, queries, _, best, score = _lookups(pairs, emb, guard=True)
    right = _right(half, best)
    rng = random.Random(1)
    obs: list[tuple[float, bool]] = []
    learned: float | None = None
    served = wrong = checks = 0
    for n_pass in range(passes):
        order = list(range(len(queries)))
        rng.shuffle(order)
        last = n_pass == passes - 1
        for k, i in enumerate(order):
            if k % 50 == 0:
                learned = verify.learned_threshold(obs, floor, rate)
            s = float(score[i])
            if s < floor:
                continue
            if learned is not None and s >= learned and rng.random() >= 0.05:
                served += last
                wrong += last and not right[i]
                continue
            obs.append((s, bool(right[i])))
            checks += 1
    lookups = len(queries)
    hits = served - wrong
    return {
        "verified": True,
        "max_false_hit_rate": rate,
        "floor": floor,
        "learned_threshold": learned,
        "checks": checks,
        "hit_rate": round(hits / half, 4),
        "false_hit_rate": round(wrong / lookups, 4),
        "wrong_share_of_served": round(wrong / served, 4) if served else None,
        "lookups_per_pass": lookups,
        "passes": passes,
    }


# One core's single-precision matrix product rate (FLOP/s), in a process whose BLAS runs one thread.
SGEMM = """
import time, numpy as np
a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
a @ a
t, k = time.perf_counter(), 0
while time.perf_counter() - t < 2.0:
    a @ a
    k += 1
print(2 * 1024**3 * k / (time.perf_counter() - t))
"""


def encoder_bound(pairs: list[dict[str, str]], emb: MiniLMEmbedder, n: int = 200) -> dict[str, Any]:
    """How much any batching of the encoder could gain on this CPU: its FLOP rate embedding one query a call
    (the floating-point work of its layers over the query's real word pieces, by CPU time) against what one core
    reaches on a large single-precision matrix product (numpy's BLAS, one thread). Same model, same vectors."""
    import os
    import subprocess

    queries = [p["similar"] for p in pairs[:n]]
    pieces = [sum(e.attention_mask) for e in emb.tok.encode_batch(queries)]
    d = emb.dim
    per_piece = emb.layers * (4 * d * d + 2 * d * 4 * d) * 2  # attention projections and the 4x feed-forward
    for q in queries[:20]:
        emb.embed([q])
    t = time.process_time()
    for q in queries:
        emb.embed([q])
    cpu = (time.process_time() - t) / len(queries)
    encoder = per_piece * statistics.mean(pieces) / cpu
    one = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    sgemm = float(
        subprocess.run(
            [sys.executable, "-c", SGEMM],
            env={**os.environ, **one},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return {
        "encoder_bound": True,
        "queries": len(queries),
        "word_pieces_mean": round(statistics.mean(pieces), 1),
        "mflop_per_word_piece": round(per_piece / 1e6, 1),
        "cpu_ms_per_query_batch1": round(cpu * 1000, 2),
        "encoder_gflops_batch1": round(encoder / 1e9, 1),
        "core_sgemm_gflops": round(sgemm / 1e9, 1),
        # Batching only raises the encoder's FLOP rate; the work per query stays: this is the most it can gain.
        "max_batching_gain": round(sgemm / encoder, 2),
        "cpus": os.cpu_count(),
    }


def other_encoder(args: argparse.Namespace, pairs: list[dict[str, str]]) -> int:
    """``--encoder``: the other encoder against MiniLM on ``pairs`` (``compare_encoders``), or with
    ``--tune-pairs`` a threshold tuned on those replayed on ``pairs`` (``transfer``)."""
    for flag, path in (("--encoder", args.encoder), ("--encoder-tokenizer", args.encoder_tokenizer)):
        if path is None or not path.is_file():
            print(f"bench/cache.py: error: {flag} {path}: no such file", file=sys.stderr)
            return 2
    other = OnnxEncoder(args.encoder, args.encoder_tokenizer, args.encoder_pooling)
    if args.tune_pairs is not None:
        if not args.tune_pairs.is_file():
            print(f"bench/cache.py: error: --tune-pairs {args.tune_pairs}: no such file", file=sys.stderr)
            return 2
        tune = json.loads(args.tune_pairs.read_text())
        for row in transfer(tune, pairs, [MiniLMEmbedder(), other], (0.005, 0.01)):
            print(json.dumps(row), flush=True)
        return 0
    for row in compare_encoders(pairs, [MiniLMEmbedder(), other]):
        print(json.dumps(row), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default=str(DATA / "gptcache-paraphrase-pairs.json"))
    ap.add_argument("--trace", default=str(DATA / "azure-llm-conv-2023.csv"))
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-servers", action="store_true", help="only the threshold curve")
    ap.add_argument("--latency-only", action="store_true", help="only the hit/miss latency")
    ap.add_argument(
        "--encoder-bound",
        action="store_true",
        help="only the most any batching of the encoder could gain on this CPU (its FLOP rate against one core's)",
    )
    ap.add_argument(
        "--near-misses",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add hard negatives made from the pairs (one number changed, a negation added) and report the "
        "curve with and without the guard",
    )
    ap.add_argument("--encoder", type=Path, help="an ONNX sentence encoder to compare with all-MiniLM-L6-v2")
    ap.add_argument("--encoder-tokenizer", type=Path, help="its tokenizer.json (HF tokenizers)")
    ap.add_argument("--encoder-pooling", choices=("mean", "cls"), default="mean")
    ap.add_argument(
        "--tune-pairs",
        type=Path,
        help="with --encoder: tune a fixed threshold per encoder (and on the mean of their cosines) on these pairs "
        "for 0.5 and 1 %% false hits, and replay it on --pairs against each encoder's best in hindsight",
    )
    args = ap.parse_args()
    pairs_path = Path(args.pairs)
    if not pairs_path.is_file():
        print(f"bench/cache.py: error: --pairs {pairs_path}: no such file", file=sys.stderr)
        return 2
    pairs = json.loads(pairs_path.read_text())
    if args.encoder is not None:
        return other_encoder(args, pairs)
    if args.tune_pairs is not None:
        print(
            "bench/cache.py: error: --tune-pairs needs --encoder (the encoder to compare with MiniLM)",
            file=sys.stderr,
        )
        return 2
    if args.encoder_bound:
        print(json.dumps(encoder_bound(pairs, MiniLMEmbedder())), flush=True)
        return 0
    if args.latency_only:
        print(json.dumps(asyncio.run(latency(args, pairs))), flush=True)
        print(json.dumps(asyncio.run(latency(args, pairs, 0.01))), flush=True)
        return 0
    emb = MiniLMEmbedder()
    points = curve([p for p in pairs if p.get("label") != "negative"], emb)
    for p in points:
        print(json.dumps(p), flush=True)
    ok = [p for p in points if p["false_hit_rate"] <= 0.01]
    best = max(ok, key=lambda p: p["hit_rate"]) if ok else None
    print(
        json.dumps(
            {
                "recommendation": True,
                "max_false_hit_rate": 0.01,
                "threshold": best["threshold"] if best else None,
                "hit_rate": best["hit_rate"] if best else None,
                "seed_default": 0.95,
            }
        ),
        flush=True,
    )
    hard = pairs + (
        near_misses([p for p in pairs if p.get("label") != "negative"]) if args.near_misses else []
    )
    if any(p.get("label") == "negative" for p in hard):
        for guard in (False, True):
            for point in guard_curve(hard, emb, guard):
                print(json.dumps(point), flush=True)
        for rate in (0.01, 0.02, 0.05):
            print(json.dumps(verified(hard, emb, rate, 0.8)), flush=True)
    if args.skip_servers:
        return 0
    print(json.dumps(asyncio.run(latency(args, pairs))), flush=True)
    print(json.dumps(asyncio.run(latency(args, pairs, 0.01))), flush=True)
    trace = Path(args.trace)
    if trace.is_file():
        print(json.dumps(asyncio.run(savings(args, pairs, trace))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
