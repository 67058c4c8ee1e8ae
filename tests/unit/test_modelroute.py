"""Model selection for a route (llmfleet.modelroute): task detection, rules in order, the auto policy's
nearest-neighbour vote, and the bank's fit and file round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet import modelroute
from llmfleet.modelroute import AUTO, Auto, Bank, Choice, Match, Request, RoutePolicy, Rule, detect_task


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:", "choice"),
        ("```python\nprint(1)\n```", "code"),
        ("def add(a, b):\n    return a + b\nWhy does this fail?", "code"),
        ("SELECT name FROM users WHERE id = 3", "code"),
        ("Janet has 16 eggs and eats 3. How many are left?", "math"),
        ("What is 12 * 7?", "math"),
        ("Write a haiku about autumn.", "chat"),
        ("I have 2 cats.", "chat"),  # a number alone is not math
        ("", "chat"),
    ],
)
def test_detect_task_reads_cheap_cues(text: str, task: str) -> None:
    assert detect_task(text) == task


POLICY = RoutePolicy(
    members=("self", "small"),
    default="self",
    rules=(
        Rule(Match(keys=frozenset({"batch"})), "small"),
        Rule(Match(headers=(("x-tier", "cheap"),), paths=frozenset({"/v1/completions"})), "small"),
        Rule(Match(max_prompt_chars=10), AUTO),
        Rule(Match(tasks=frozenset({"code"})), "self"),
    ),
    auto=Auto("small", "self", 0.5),
)


def test_the_first_matching_rule_wins_and_every_field_of_a_match_must_hold() -> None:
    assert modelroute.choose(POLICY, Request("batch", "/v1/chat/completions", prompt="x" * 50)) == Choice(
        "small", "rule"
    )
    # The header alone is not enough: the path must hold too.
    cheap = {"x-tier": "cheap"}
    assert modelroute.choose(POLICY, Request("a", "/v1/chat/completions", cheap, "x" * 50)) is None
    assert modelroute.choose(POLICY, Request("a", "/v1/completions", cheap, "x" * 50)).member == "small"
    # A short prompt: a rule that says auto; the caller scores it.
    assert modelroute.choose(POLICY, Request("a", "/v1/chat/completions", prompt="hi")) is None
    # The length counts every turn when the caller says so.
    assert modelroute.choose(POLICY, Request("a", "/v1/x", prompt="```x``` long enough", chars=5)) is None
    assert modelroute.choose(POLICY, Request("a", "/v1/x", prompt="```x``` long enough")).member == "self"


def test_without_auto_a_request_no_rule_matches_goes_to_the_default() -> None:
    p = RoutePolicy(("self", "small"), "small", (Rule(Match(keys=frozenset({"k"})), "self"),))
    assert modelroute.choose(p, Request("other", "/v1/chat/completions")) == Choice("small", "default")


words = st.sampled_from(["a", "def", "```", "1", "+", "2", "how many", "A.", "\n", "SELECT", "x"])


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from([None, "batch", "a"]),
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
    tier=st.sampled_from([None, "cheap", "other"]),
    prompt=st.lists(words, max_size=30).map(" ".join),
)
def test_every_request_gets_a_member_of_the_route_or_is_handed_to_auto(key, path, tier, prompt) -> None:
    r = Request(key, path, {} if tier is None else {"x-tier": tier}, prompt)
    c = modelroute.choose(POLICY, r)
    rule = modelroute.first_rule(POLICY, r)
    if c is None:  # auto decides: a rule said so, or none matched
        assert rule is None or rule.to == AUTO
    else:
        assert c.member in POLICY.members and rule is not None and rule.to == c.member


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_a_query_near_questions_that_needed_the_large_model_scores_high() -> None:
    rng = np.random.default_rng(0)
    hard, easy = _unit(rng.normal(size=16)), _unit(rng.normal(size=16))
    vectors = _unit(
        np.stack(
            [hard + 0.05 * rng.normal(size=16) for _ in range(20)]
            + [easy + 0.05 * rng.normal(size=16) for _ in range(20)]
        )
    )
    labels = np.array([1.0] * 20 + [0.0] * 20, np.float32)
    bank = Bank(vectors.astype(np.float32), labels, np.ones(40, np.float32))
    assert bank.score(hard, 8) > 0.9 and bank.score(easy, 8) < 0.1
    auto = Auto("small", "large", 0.5)
    assert modelroute.auto_choice(auto, bank.score(hard, 8)).member == "large"
    assert modelroute.auto_choice(auto, bank.score(easy, 8)).member == "small"


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 64))
def test_scores_are_shares_between_zero_and_one(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    bank = Bank(
        _unit(rng.normal(size=(50, 8))).astype(np.float32),
        rng.random(50).astype(np.float32),
        rng.integers(1, 5, 50).astype(np.float32),
    )
    s = bank.score(_unit(rng.normal(size=8)), k)
    assert 0.0 <= s <= 1.0


def test_fit_bank_keeps_the_training_labels_mean_and_is_deterministic(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = _unit(rng.normal(size=(500, 12))).astype(np.float32)
    y = (rng.random(500) < 0.2).astype(np.float32)
    a, b = modelroute.fit_bank(x, y, 32), modelroute.fit_bank(x, y, 32)
    assert np.array_equal(a.vectors, b.vectors)
    assert a.weight.sum() == 500
    assert float((a.need_large * a.weight).sum() / a.weight.sum()) == pytest.approx(float(y.mean()), abs=1e-5)
    a.save(tmp_path / "bank.npz")
    loaded = Bank.load(tmp_path / "bank.npz")
    assert loaded.encoder == a.encoder and np.allclose(loaded.vectors, a.vectors, atol=2e-3)


def test_the_shipped_bank_is_hashed_ngrams_scored_like_its_training_vectors() -> None:
    bank = Bank.load()
    assert bank.encoder == "ngram-2048" and bank.ngram_dim == 2048 and bank.vectors.shape[1] == 2048
    v = bank.features("Janet has 16 eggs and eats 3 for breakfast. How many does she sell?")
    assert v is not None and v.shape == (2048,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert 0.0 <= bank.score(v) <= 1.0
    assert np.allclose(np.linalg.norm(bank.vectors, axis=1), 1.0, atol=1e-3)
    # The training questions' share that needed the large model (RouteLLM's MMLU + GSM8K: ~18 %).
    share = float((bank.need_large * bank.weight).sum() / bank.weight.sum())
    assert 0.1 < share < 0.3
