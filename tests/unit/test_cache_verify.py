"""Verified semantic hits (cache.verify): the Clopper-Pearson bound, the learned threshold's guarantee on
generated evidence, and the strict judge."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfleet.cache import verify

sims = st.floats(min_value=0.8, max_value=1.0, allow_nan=False)
evidence = st.lists(st.tuples(sims, st.booleans()), max_size=400)


@pytest.mark.parametrize(
    ("errors", "n", "expected"),
    # One-sided 95 % Clopper-Pearson upper limits: the beta quantile, found here by integrating the beta density.
    [(0, 10, 0.2589), (0, 299, 0.0100), (1, 100, 0.0466), (3, 1000, 0.0077), (10, 50, 0.3156)],
)
def test_upper_bound_is_clopper_pearson(errors: int, n: int, expected: float) -> None:
    assert verify.upper_bound(errors, n, 0.95) == pytest.approx(expected, abs=1e-4)


def test_checks_needed_before_anything_is_served() -> None:
    assert verify.checks_needed(0.01) == 299
    assert verify.learned_threshold([(0.99, True)] * 298, 0.9, 0.01) is None
    assert verify.learned_threshold([(0.99, True)] * 299, 0.9, 0.01) == pytest.approx(0.99)


@given(evidence, st.sampled_from([0.01, 0.05, 0.2]))
def test_a_learned_threshold_is_backed_by_its_evidence(obs: list[tuple[float, bool]], rate: float) -> None:
    t = verify.learned_threshold(obs, 0.8, rate)
    if t is not None:
        above = [same for s, same in obs if s >= t - 1e-12]
        assert len(above) >= verify.checks_needed(rate)
        assert verify.upper_bound(above.count(False), len(above), 0.95) <= rate
        assert 0.8 - 1e-9 <= t <= 1.0


@given(evidence, sims)
def test_a_different_answer_never_lowers_the_threshold(obs: list[tuple[float, bool]], s: float) -> None:
    before = verify.learned_threshold(obs, 0.8, 0.05)
    after = verify.learned_threshold([*obs, (s, False)], 0.8, 0.05)
    assert after is None or (before is not None and after >= before - 1e-12)


def test_served_hits_stay_under_the_bound_on_evidence_with_a_known_error_curve() -> None:
    """Candidates' similarities uniform in [0.8, 1]; the chance a candidate's answer differs falls with
    similarity, 20 % at 0.8 to 0 at 1 (cubic: most wrong answers sit near the floor). Across 200 fleets of
    1,500 checks each, the true rate of different answers among the hits a learned threshold serves exceeds 2 %
    in at most 5 % of them (the stated confidence)."""
    rng = random.Random(7)

    def wrong(s: float) -> float:
        return 0.2 * ((1.0 - s) / 0.2) ** 3

    over = served = 0
    for _ in range(200):
        obs = []
        for _ in range(1500):
            s = rng.uniform(0.8, 1.0)
            obs.append((s, rng.random() >= wrong(s)))
        t = verify.learned_threshold(obs, 0.8, 0.02)
        if t is None:
            continue
        served += 1
        true_rate = 0.05 * ((1.0 - t) / 0.2) ** 3  # the mean of wrong(s) over s uniform in [t, 1]
        over += true_rate > 0.02
    assert served > 150  # the bound is not so loose that nothing is ever served
    assert over <= 10


def test_the_judge_is_strict_text_equality() -> None:
    assert verify.same_answer("Paris.", "  paris.\n")
    assert not verify.same_answer("Paris.", "Paris, France.")
    assert not verify.same_answer("Lose 5 kg", "Lose 15 kg")


@given(st.lists(st.tuples(sims, st.booleans())), st.lists(st.binary(max_size=12)))
def test_checks_round_trip_through_their_encoding_and_junk_is_skipped(
    obs: list[tuple[float, bool]], junk: list[bytes]
) -> None:
    raw = [verify.encode(s, same).encode() for s, same in obs]
    parsed = verify.parse(raw + junk)
    assert parsed[: len(obs)] == [(round(s, 4), same) for s, same in obs]
    assert all(0.0 <= s <= 1.0 for s, _ in parsed)
