"""Which model of a route serves a request (``spec.routing``): rules first, then the learned "auto" policy.
Pure: the gateway hands in what it read of the request.

Rules match on the API key, a header, the path, the prompt's length and its detected task (`detect_task`:
code, math, choice or chat, from cheap text cues); the first rule that matches names the member, or "auto".

"auto" sends a request to the small model unless it is expected to need the large one. The expectation is a
k-nearest-neighbour vote over a bank of labelled questions: each bank entry is a centroid of training
questions with the share of them that the small model answered wrong where the large one answered right; a
request's score is the similarity-weighted mean of its k nearest centroids' shares. At or above the route's
threshold (the one knob along the cost-quality curve) it goes to the large model.

The features are hashed word n-grams (llmfleet.textfeatures, 2,048 buckets, the query's first 400
characters), not the semantic cache's sentence encoder: measured on the held-out questions
(bench/routing.py) they vote as well (APGR 0.632 against MiniLM's 0.631) at ~0.3 ms a request (features and
vote) against ~5 ms of CPU for an encoder call. A bank built on MiniLM vectors works too (its ``encoder`` says
which; the gateway then reuses the vector the semantic cache computed). The shipped bank
(``data/router-bank.npz``, built by ``bench/routing.py --write-bank`` from the training part of RouteLLM's
public MMLU and GSM8K results) needs nothing fetched at run time; the held-out part is what bench/routing.py
reports on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmfleet.textfeatures import hashed_ngrams

BANK_PATH = Path(__file__).resolve().parent / "data" / "router-bank.npz"
AUTO = "auto"
TASKS = ("code", "math", "choice", "chat")
DEFAULT_K = 8
# Word pieces of the query a MiniLM bank's encoder call reads: the question's start carries what the vote needs
# (held-out APGR 0.631 at 64, 0.628 at the encoder's 256; 8.5 vs 25 ms p50 for an MMLU question on 2 threads),
# and a 256-piece vector the semantic cache already computed scores as well against the same bank (0.634).
ROUTER_MAX_TOKENS = 64
NGRAM = "ngram-"  # a bank of hashed word n-grams: "ngram-<buckets>"
NGRAM_DIM = 2048
NGRAM_CHARS = 400  # held-out APGR 0.637 at 400 characters, 0.635 at 1,200, 0.596 at 200 (4,096 buckets)


def ngram_features(text: str, dim: int = NGRAM_DIM) -> np.ndarray:
    """The n-gram vector of a query's start, as the bank's vectors were made."""
    return np.asarray(hashed_ngrams([text[:NGRAM_CHARS]], dim)[0])


# Why a member was chosen (the access log's and the metric's label).
WHY_EXPLICIT, WHY_RULE, WHY_AUTO, WHY_DEFAULT, WHY_SENSITIVE = (
    "explicit",
    "rule",
    "auto",
    "default",
    "sensitive",
)

_CODE = re.compile(
    r"```|^\s*(def|class|import|from \S+ import|#include|public |func |fn |let |const |var )\b|"
    r"console\.log|System\.out|=>|\bSELECT\b.+\bFROM\b|</?\w+>|;\s*$",
    re.MULTILINE,
)
_CHOICE = re.compile(r"^\s*\(?[A-D][.)]\s+\S", re.MULTILINE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?")
_ARITH = re.compile(r"\d\s*[-+*/×÷^=]\s*\d")
_MATH_WORDS = re.compile(
    r"\b(how (many|much|long|far|old)|calculate|compute|solve|sum|total|percent|average|equation|"
    r"integral|derivative|probability|remainder)\b",
    re.IGNORECASE,
)


def detect_task(text: str) -> str:
    """The prompt's task from cheap cues (a few µs per KiB): "choice" (lettered options), "code", "math"
    (numbers with arithmetic or quantity questions), else "chat"."""
    head = text[:4096]
    if len(_CHOICE.findall(head)) >= 3:
        return "choice"
    if _CODE.search(head):
        return "code"
    if _ARITH.search(head) or (_MATH_WORDS.search(head) and len(_NUMBER.findall(head)) >= 2):
        return "math"
    return "chat"


@dataclass(frozen=True, slots=True)
class Match:
    """What a rule tests; every field that is set must hold (an empty one matches anything)."""

    keys: frozenset[str] = frozenset()
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, exact value)
    paths: frozenset[str] = frozenset()
    min_prompt_chars: int | None = None
    max_prompt_chars: int | None = None
    tasks: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Rule:
    match: Match
    to: str  # a member's name, or AUTO


@dataclass(frozen=True, slots=True)
class Auto:
    small: str
    large: str
    threshold: float  # a score at or above it goes to the large model
    k: int = DEFAULT_K


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    members: tuple[str, ...]
    default: str  # where a request goes when no rule matches and there is no auto policy
    rules: tuple[Rule, ...] = ()
    auto: Auto | None = None


@dataclass(slots=True)
class Request:
    """What the rules read of one request."""

    key: str | None
    path: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, only those rules name
    prompt: str = ""  # the text the task is detected in (the last user turn)
    chars: int | None = None  # the prompt's length over every turn (None: len(prompt))
    task: str | None = None  # detected lazily, only when a rule asks


@dataclass(frozen=True, slots=True)
class Choice:
    member: str
    why: str
    score: float | None = None  # the auto policy's score, when it decided


def matches(m: Match, r: Request) -> bool:
    if m.keys and r.key not in m.keys:
        return False
    if m.paths and r.path not in m.paths:
        return False
    for name, value in m.headers:
        if r.headers.get(name) != value:
            return False
    n = len(r.prompt) if r.chars is None else r.chars
    if m.min_prompt_chars is not None and n < m.min_prompt_chars:
        return False
    if m.max_prompt_chars is not None and n > m.max_prompt_chars:
        return False
    if m.tasks:
        if r.task is None:
            r.task = detect_task(r.prompt)
        if r.task not in m.tasks:
            return False
    return True


def first_rule(policy: RoutePolicy, r: Request) -> Rule | None:
    """The first rule that matches the request, if any."""
    for rule in policy.rules:
        if matches(rule.match, r):
            return rule
    return None


def choose(policy: RoutePolicy, r: Request) -> Choice | None:
    """The member by rules, or the default; None when the auto policy must decide (a rule said "auto", or none
    matched and auto is set): the caller then scores the query and calls `auto_choice`."""
    rule = first_rule(policy, r)
    if rule is not None and rule.to != AUTO:
        return Choice(rule.to, WHY_RULE)
    if policy.auto is None:
        return Choice(policy.default, WHY_DEFAULT)
    return None


def auto_choice(auto: Auto, score: float) -> Choice:
    return Choice(auto.large if score >= auto.threshold else auto.small, WHY_AUTO, score)


@dataclass(frozen=True)
class Bank:
    """Labelled points in the encoder's space: unit vectors (n × d) and each point's share of questions that
    needed the large model (n), with how many training questions each stands for (n)."""

    vectors: np.ndarray
    need_large: np.ndarray
    weight: np.ndarray
    encoder: str = NGRAM + str(NGRAM_DIM)  # the features: "ngram-<dim>", or a sentence encoder's name

    @property
    def ngram_dim(self) -> int | None:
        """The buckets of an n-gram bank (None: a sentence encoder's bank)."""
        return int(self.encoder[len(NGRAM) :]) if self.encoder.startswith(NGRAM) else None

    def features(self, text: str) -> np.ndarray | None:
        """The query's vector for an n-gram bank (None: an encoder bank, whose vectors the caller computes)."""
        dim = self.ngram_dim
        return None if dim is None else ngram_features(text, dim)

    def score(self, v: np.ndarray, k: int = DEFAULT_K) -> float:
        """The similarity-weighted share of the k nearest points' questions that needed the large model."""
        sims = self.vectors @ v.astype(np.float32)
        k = min(k, len(sims))
        idx = np.argpartition(-sims, k - 1)[:k]
        w = np.maximum(sims[idx], 0.0) * self.weight[idx]
        total = float(w.sum())
        if total <= 0.0:
            return float(self.need_large.mean())
        return float((w * self.need_large[idx]).sum() / total)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            vectors=self.vectors.astype(np.float16),
            need_large=self.need_large.astype(np.float32),
            weight=self.weight.astype(np.float32),
            encoder=np.array(self.encoder),
        )

    @classmethod
    def load(cls, path: Path = BANK_PATH) -> Bank:
        with np.load(path) as z:
            vectors = z["vectors"].astype(np.float32)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            return cls(vectors, z["need_large"], z["weight"], str(z["encoder"]))


def fit_bank(
    vectors: np.ndarray,
    need_large: np.ndarray,
    centroids: int = 1024,
    iterations: int = 12,
    seed: int = 0,
    encoder: str = NGRAM + str(NGRAM_DIM),
) -> Bank:
    """Compress labelled training questions into ``centroids`` points (spherical k-means): each centroid keeps
    the mean label and the count of the questions nearest to it. Deterministic for a seed."""
    x = vectors.astype(np.float32)
    n = len(x)
    if centroids >= n:
        return Bank(x.copy(), need_large.astype(np.float32), np.ones(n, np.float32), encoder)
    rng = np.random.default_rng(seed)
    c = x[rng.choice(n, centroids, replace=False)].copy()
    assign = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        assign = np.argmax(x @ c.T, axis=1)
        for j in range(centroids):
            members = x[assign == j]
            if len(members):
                m = members.sum(axis=0)
                c[j] = m / max(float(np.linalg.norm(m)), 1e-12)
    counts = np.bincount(assign, minlength=centroids).astype(np.float32)
    sums = np.bincount(assign, weights=need_large.astype(np.float64), minlength=centroids)
    keep = counts > 0
    share = (sums[keep] / counts[keep]).astype(np.float32)
    return Bank(c[keep], share, counts[keep], encoder)
