"""The semantic cache's guards (cache/guards.py): questions that differ in a quantity, a unit or a negation
never share a partition, and case, punctuation and number spelling do not matter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmfleet.cache.guards import signature
from llmfleet.cache.keys import split_last_user_turn

WORDS = st.sampled_from(
    [
        "how",
        "do",
        "i",
        "lose",
        "weight",
        "in",
        "a",
        "month",
        "the",
        "best",
        "way",
        "to",
        "learn",
        "python",
        "for",
        "data",
        "with",
        "my",
        "team",
    ]
)
UNITS = st.sampled_from(["kg", "kilos", "lbs", "km", "miles", "%", "GB", "hours", "days", "years", ""])


@given(st.lists(WORDS, min_size=2, max_size=12), st.integers(0, 10**6), st.integers(0, 10**6), UNITS)
def test_a_changed_quantity_always_changes_the_signature(words: list[str], a: int, b: int, unit: str) -> None:
    head = " ".join(words)
    one, two = signature(f"{head} {a} {unit}?"), signature(f"{head} {b} {unit}?")
    assert (one == two) == (a == b)


@given(st.lists(WORDS, min_size=2, max_size=12), st.integers(0, 999), UNITS)
def test_a_negation_flips_it_and_case_or_punctuation_do_not(words: list[str], n: int, unit: str) -> None:
    text = " ".join(words) + f" {n} {unit}"
    assert signature(text + "?") == signature(text.upper() + " !")
    assert signature("can I " + text) != signature("can't I " + text)
    assert signature("can I " + text) != signature("can I not " + text)
    assert signature("is it not " + text) == signature("isn't it " + text)


def test_the_near_misses_a_sentence_encoder_confuses() -> None:
    same = [
        ("How do I lose 5 kg in a month?", "How can I lose five kilos in a month?"),
        ("What is 30% of 5k?", "what's 30 percent of 5,000"),
        ("Is $1,000 enough for a trip to Paris?", "Are 1000 dollars enough for a Paris trip?"),
    ]
    different = [
        ("How do I lose 5 kg in a month?", "How do I lose 15 kg in a month?"),
        ("How do I lose 5 kg in a month?", "How do I lose 5 lbs in a month?"),
        ("Can I run Llama on 2 GPUs?", "Can't I run Llama on 2 GPUs?"),
        ("Is 8 GB of RAM enough?", "Is 8 TB of RAM enough?"),
    ]
    assert all(signature(a) == signature(b) for a, b in same)
    assert all(signature(a) != signature(b) for a, b in different)


def test_the_cache_partition_carries_the_guard() -> None:
    def ctx(q: str) -> str:
        split = split_last_user_turn("/v1/chat/completions", {"messages": [{"role": "user", "content": q}]})
        assert split is not None
        return split[1]

    assert ctx("How do I lose 5 kg in a month?") == ctx("how can i lose five kilos in a month")
    assert ctx("How do I lose 5 kg in a month?") != ctx("How do I lose 15 kg in a month?")
