"""Verified semantic hits: the similarity a deployment's semantic cache may serve from, learned from checks of
its own candidates, under a stated bound on the share of served hits that differ from the engine's answer
(``spec.cache.semantic.maxFalseHitRate``). Pure: no I/O, no clock.

How it works (after vCache, "Verified Semantic Prompt Caching", 2025, with one threshold per deployment
instead of one per entry: per-entry fits need many checks of each entry, which a cache with a one-hour TTL
rarely gets). A lookup whose nearest cached question clears ``threshold`` (the floor) is a *candidate*. Below
the learned threshold a candidate is always checked: the request goes to the engine as a miss, and its answer
is compared with the candidate's cached one. At or above it the cached answer is served, except for a random
share (``explore``) that is still checked, so the evidence keeps coming. Each check is one observation
(similarity, same answer?), kept by Redis for every replica of the deployment.

The learned threshold comes from fixed-sequence testing down a grid of similarities (steps of 0.0025 from 1):
a grid point is tested once at least ``checks_needed`` observations lie at or above it (the order depends on
the similarities alone, never on the outcomes), and passes when the one-sided Clopper-Pearson upper bound (at
``confidence``) on the share of different answers among those observations is at most ``max_rate``; the
descent stops at the first failure, so the family of tests keeps the stated confidence without a correction.
It never goes below the lowest similarity among the checks: no evidence speaks for candidates further down.
With no different answer, ``checks_needed`` is ln(1 - confidence) / ln(1 - max_rate): 299 for 1 % at 95 %.

"Same answer" is the strict judge: equal text once whitespace and case are normalised. A paraphrase the model
answers in other words counts as different, so the bound is on answers that could differ from what the
engine would have said, and errs towards fewer hits, never towards more wrong ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

GRID_STEP = 0.0025
MAX_OBSERVATIONS = 5000  # the most recent checks a deployment keeps (Redis list, trimmed)


def same_answer(cached: str, fresh: str) -> bool:
    """The strict judge: the same text, ignoring whitespace runs and case."""
    return " ".join(cached.split()).casefold() == " ".join(fresh.split()).casefold()


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (k is small where it matters)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        total += math.exp(
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        )
    return min(1.0, total)


def upper_bound(errors: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a binomial rate: the p at which seeing at most ``errors`` in
    ``n`` has probability 1 - confidence."""
    if n <= 0:
        return 1.0
    if errors >= n:
        return 1.0
    alpha = 1.0 - confidence
    if errors == 0:
        return 1.0 - alpha ** (1.0 / n)
    lo, hi = errors / n, 1.0
    for _ in range(60):  # bisection: the CDF falls as p grows
        mid = (lo + hi) / 2
        if _binom_cdf(errors, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def learned_threshold(
    observations: Iterable[tuple[float, bool]], floor: float, max_rate: float, confidence: float = 0.95
) -> float | None:
    """The lowest grid similarity at or above ``floor`` from which hits may be served, or None (not yet, or
    never on this evidence). ``observations``: (similarity, same answer) of the checked candidates."""
    obs = sorted(((s, same) for s, same in observations if s >= floor), reverse=True)
    need = checks_needed(max_rate, confidence)
    best: float | None = None
    n = errors = i = 0
    steps = max(0, math.floor((1.0 - floor) / GRID_STEP + 1e-9))
    for j in range(steps + 1):
        t = 1.0 - j * GRID_STEP
        if t < floor - 1e-12:
            break
        seen = n
        while i < len(obs) and obs[i][0] >= t - 1e-12:
            n += 1
            errors += not obs[i][1]
            i += 1
        if n < need:
            continue  # too few checks this high to pass even without a different answer: not tested yet
        if upper_bound(errors, n, confidence) > max_rate:
            break  # fixed-sequence testing: the first failure ends the descent
        if n > seen:
            best = t  # never below the similarities the checks have reached
    return best


def checks_needed(max_rate: float, confidence: float = 0.95) -> int:
    """Observations a threshold needs before it can pass: all of them the same answer."""
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - max_rate))


def parse(raw: Iterable[bytes | str]) -> list[tuple[float, bool]]:
    """Observations as Redis keeps them ("0.9612:1"); anything else is skipped."""
    out = []
    for item in raw:
        text = item.decode(errors="replace") if isinstance(item, bytes) else item
        sim, _, same = text.partition(":")
        try:
            s = float(sim)
        except ValueError:
            continue
        if same in ("0", "1") and 0.0 <= s <= 1.0:
            out.append((s, same == "1"))
    return out


def encode(similarity: float, same: bool) -> str:
    return f"{similarity:.4f}:{int(same)}"
