"""bench/cache.py's ``best_fixed``: the best any fixed threshold could do in hindsight, the bar an encoder or a
guard is compared with. It must be every threshold's outcome, not a grid's."""

from __future__ import annotations

import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
try:
    from cache import Joint, Memo, _lookups, best_fixed, guard_curve, transfer  # type: ignore[import-not-found]
finally:
    sys.path.remove(str(ROOT / "bench"))


class Table:
    """An encoder that looks each text up in a table of vectors."""

    name = "table"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.dim = 3

    def embed(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        return np.array([self.vectors[t] for t in texts], dtype=np.float32).reshape(len(texts), 3)


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_a_threshold_between_two_grid_points_counts() -> None:
    """o0 and o1 are stored; s0 should hit o0 (0.905), s2's own origin is not stored, so its hit on o0 (0.903)
    is wrong. Thresholds 0.90 and 0.91 of a 0.01 grid give (0.5, 1/4) and (0, 0); 0.905 gives half the hits
    and no false one."""
    pairs = [{"origin": f"o{i}", "similar": f"s{i}"} for i in range(4)]
    emb = Table(
        {
            "o0": unit(1, 0, 0),
            "o1": unit(0, 1, 0),
            "o2": unit(0, 0, 1),
            "o3": unit(0, 0, 1),
            "s0": unit(0.905, 0, np.sqrt(1 - 0.905**2)),
            "s1": unit(0, 0.85, np.sqrt(1 - 0.85**2)),
            "s2": unit(0.903, 0, np.sqrt(1 - 0.903**2)),
            "s3": unit(0, 0, 1),
        }
    )
    frontier = best_fixed(pairs, emb)
    assert max(h for _, h, f in frontier if f == 0) == 0.5
    grid = guard_curve(pairs, emb, False, (0.89, 0.90, 0.91))
    assert max(p["hit_rate"] for p in grid if p["false_hit_rate"] == 0) == 0


VEC = st.tuples(*[st.floats(-1, 1, allow_nan=False) for _ in range(3)]).filter(
    lambda v: sum(x * x for x in v) > 1e-3
)


@settings(max_examples=150, deadline=None)
@given(
    positives=st.lists(st.tuples(VEC, VEC), min_size=2, max_size=12),
    negatives=st.lists(VEC, max_size=5),
    snap=st.booleans(),
)
def test_best_fixed_is_every_threshold_of_the_cache_protocol(
    positives: list[tuple[tuple[float, ...], tuple[float, ...]]],
    negatives: list[tuple[float, ...]],
    snap: bool,
) -> None:
    """Against ``guard_curve`` (the protocol the bench reports) run at every similarity that occurs: the same
    hit and false-hit rates, threshold for threshold. ``snap`` rounds the vectors so that similarities tie."""

    def vec(v: tuple[float, ...]) -> np.ndarray:
        x = np.round(v, 1) if snap else np.asarray(v)
        return unit(*x) if np.linalg.norm(x) > 0 else unit(1, 0, 0)

    vectors: dict[str, np.ndarray] = {}
    pairs: list[dict[str, str]] = []
    for i, (o, s) in enumerate(positives):
        vectors[f"o{i}"], vectors[f"s{i}"] = vec(o), vec(s)
        pairs.append({"origin": f"o{i}", "similar": f"s{i}"})
    for i, n in enumerate(negatives):
        vectors[f"n{i}"] = vec(n)
        pairs.append({"origin": "o0", "similar": f"n{i}", "label": "negative"})
    emb = Table(vectors)
    frontier = best_fixed(pairs, emb)
    thresholds = tuple(t for t, _, _ in frontier)
    assert list(thresholds) == sorted(set(thresholds), reverse=True)
    want = guard_curve(pairs, emb, False, thresholds)
    for (t, hit, false), point in zip(frontier, want, strict=True):
        assert point["threshold"] == t
        assert round(hit, 4) == point["hit_rate"] and round(false, 4) == point["false_hit_rate"]
    # Below the loosest similarity every lookup is served: nothing is left out of the frontier.
    loosest = guard_curve(pairs, emb, False, (min(thresholds) - 1.0,))[0]
    assert (round(frontier[-1][1], 4), round(frontier[-1][2], 4)) == (
        loosest["hit_rate"],
        loosest["false_hit_rate"],
    )


def _pairs(prefix: str, positives: list[tuple[int, int]], negatives: list[int]) -> list[dict[str, str]]:
    out = [{"origin": f"{prefix}o{i}", "similar": f"{prefix}s{i}"} for i in range(len(positives))]
    return out + [
        {"origin": f"{prefix}o0", "similar": f"{prefix}n{i}", "label": "negative"}
        for i in range(len(negatives))
    ]


def _tables(draw: st.DrawFn, texts: list[str]) -> tuple[Table, Table]:
    def table() -> Table:
        t = Table({x: unit(*draw(VEC)) for x in texts})
        t.name = f"table{draw(st.integers(0, 10**6))}"
        return t

    a, b = table(), table()
    b.name = a.name + "-b"
    return a, b


@st.composite
def two_sets(draw: st.DrawFn) -> tuple[list[dict[str, str]], list[dict[str, str]], Table, Table]:
    sets = []
    for prefix in ("t", "h"):
        n = draw(st.integers(2, 10))
        sets.append(_pairs(prefix, [(i, i) for i in range(n)], list(range(draw(st.integers(0, 4))))))
    texts = sorted({t for s in sets for p in s for t in (p["origin"], p["similar"])})
    a, b = _tables(draw, texts)
    return sets[0], sets[1], a, b


@settings(max_examples=60, deadline=None)
@given(
    data=two_sets(),
    targets=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5]), min_size=1, max_size=3, unique=True),
)
def test_transfer_tunes_the_best_threshold_on_one_set_and_replays_it_on_the_other(
    data: tuple[list[dict[str, str]], list[dict[str, str]], Table, Table], targets: list[float]
) -> None:
    tune, held, a, b = data
    rows = transfer(tune, held, [a, b], tuple(targets))
    joint = Joint(a, b)
    by_name = {a.name: a, b.name: b, joint.name: joint}
    assert sorted({r["transfer"] for r in rows}) == sorted(by_name)
    for r in rows:
        emb = by_name[r["transfer"]]
        scores = _lookups(tune, emb, False)[4]  # every lookup's top similarity, as guard_curve computes it
        every = guard_curve(tune, emb, False, (*np.unique(scores), 2.0))  # 2.0 serves nothing
        ok = [p["hit_rate"] for p in every if p["false_hit_rate"] <= r["target"]]
        if r["threshold"] is None:  # nothing served: no threshold that serves anything met the target
            assert max(ok, default=0.0) == 0.0 and r["hit_rate"] == r["false_hit_rate"] == 0.0
            continue
        assert r["tune_false_hit_rate"] <= r["target"] and r["tune_hit_rate"] == max(ok)
        replay = guard_curve(held, emb, False, (r["threshold"],))[0]
        assert (r["hit_rate"], r["false_hit_rate"]) == (replay["hit_rate"], replay["false_hit_rate"])
        if emb is not joint:  # an encoder's tuned threshold is one of its fixed ones: hindsight does no worse
            assert r["best_fixed_hit_rate"][emb.name] >= r["hit_rate"]


@settings(max_examples=60, deadline=None)
@given(v=st.lists(VEC, min_size=4, max_size=4))
def test_joint_cosine_is_the_mean_of_the_two_encoders_cosines(v: list[tuple[float, ...]]) -> None:
    a = Table({"x": unit(*v[0]), "y": unit(*v[1])})
    b = Table({"x": unit(*v[2]), "y": unit(*v[3])})
    j = Memo(Joint(a, b))
    x, y = j.embed(["x", "y"])
    assert np.isclose(np.linalg.norm(x), 1.0, atol=1e-5)
    want = (a.embed(["x"])[0] @ a.embed(["y"])[0] + b.embed(["x"])[0] @ b.embed(["y"])[0]) / 2
    assert np.isclose(float(x @ y), float(want), atol=1e-5)
    np.testing.assert_array_equal(j.embed(["y", "x"]), np.stack([y, x]))
