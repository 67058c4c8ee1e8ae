"""A one-hour trace made into a day (llmfleet.traces.daily) through hourly levels (weekday_levels), and the
hourly profile bench/policies.py's code-day trace is built from: read back off a plot by
hack/azure_week_profile.py, and checked against the figures a plot of a known week must give."""

from __future__ import annotations

import base64
import io
import math
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.traces import TraceRequest, daily, read_hourly_profile, weekday_levels
from tests.conftest import DATA, ROOT, hack_script

SCRIPT = ROOT / "hack" / "azure_week_profile.py"
PROFILE = DATA / "azure-llm-code-2024-hourly.csv"


TRACES = st.lists(
    st.tuples(st.floats(0, 3600), st.integers(1, 8000), st.integers(1, 500)), min_size=1, max_size=60
).map(lambda rows: [TraceRequest(a, p, g) for a, p, g in sorted(rows)])
LEVELS = st.lists(st.one_of(st.just(0.0), st.just(1.0), st.floats(0, 1)), min_size=1, max_size=30)


@given(trace=TRACES, levels=LEVELS, seed=st.integers(0, 2**32))
def test_each_replay_is_a_thinned_rotation_of_the_trace_in_its_own_slot(
    trace: list[TraceRequest], levels: list[float], seed: int
) -> None:
    out = daily(trace, levels, seed)
    span = trace[-1].at + 1e-3
    assert [r.at for r in out] == sorted(r.at for r in out)
    slots: dict[int, list[TraceRequest]] = {}
    for r in out:
        slots.setdefault(int(r.at // span), []).append(r)
    assert set(slots) <= {i for i, lvl in enumerate(levels) if lvl > 0}  # level 0 keeps nothing
    source = Counter((r.prompt_tokens, r.output_tokens) for r in trace)
    for kept in slots.values():
        # A request appears at most once per replay, with its own sizes.
        assert not Counter((r.prompt_tokens, r.output_tokens) for r in kept) - source
    for i, level in enumerate(levels):
        if level == 1.0:  # the whole trace, rotated: the same gaps between requests, wrapping round
            kept = slots.get(i, [])
            assert len(kept) == len(trace)
            assert Counter((r.prompt_tokens, r.output_tokens) for r in kept) == source


def test_thinning_keeps_each_level_on_average() -> None:
    trace = [TraceRequest(i * 0.5, 100, 10) for i in range(4000)]
    levels = [0.1, 0.5, 0.9, 1.0]
    out = daily(trace, levels, seed=7)
    span = trace[-1].at + 1e-3
    counts = Counter(int(r.at // span) for r in out)
    for i, level in enumerate(levels):
        sd = math.sqrt(len(trace) * level * (1 - level))
        assert abs(counts[i] - level * len(trace)) <= 5 * sd + 1


def test_a_level_outside_0_1_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"levels\[1\] = 1.5"):
        daily([TraceRequest(0.0, 1, 1)], [0.5, 1.5])


@given(
    rates=st.lists(st.floats(0, 10_000), min_size=24 * 7, max_size=24 * 7),
    start=st.integers(0, 6),
)
def test_weekday_levels_are_each_hours_mean_over_the_days_asked_for_as_a_share_of_the_busiest(
    rates: list[float], start: int
) -> None:
    t0 = datetime(2024, 5, 6 + start, tzinfo=UTC)
    profile = [(t0 + timedelta(hours=i), r) for i, r in enumerate(rates)]
    means = [
        sum(r for t, r in profile if t.hour == h and t.weekday() < 4)
        / sum(1 for t, _ in profile if t.hour == h and t.weekday() < 4)
        for h in range(24)
    ]
    if max(means) <= 0:
        with pytest.raises(ValueError, match="no load"):
            weekday_levels(profile)
        return
    levels = weekday_levels(profile)
    assert len(levels) == 24 and max(levels) == pytest.approx(1.0)
    for h in range(24):
        assert levels[h] == pytest.approx(means[h] / max(means))


def test_a_profile_without_the_days_asked_for_says_which_hour_is_missing() -> None:
    saturday = datetime(2024, 5, 11, tzinfo=UTC)
    with pytest.raises(ValueError, match="no hour 0:00"):
        weekday_levels([(saturday + timedelta(hours=i), 5.0) for i in range(24)])


def test_the_shipped_profile_is_a_week_of_hours_with_the_weekday_swing_of_the_code_service() -> None:
    profile = read_hourly_profile(PROFILE)
    assert len(profile) == 168
    assert profile[0][0] == datetime(2024, 5, 10, tzinfo=UTC)
    assert all(b[0] - a[0] == timedelta(hours=1) for a, b in zip(profile, profile[1:], strict=False))
    levels = weekday_levels(profile)
    # The busiest weekday hours are 18-19 UTC, when the one-hour 2023 sample was taken (18:15-19:14).
    assert max(range(24), key=lambda h: levels[h]) in (18, 19)
    assert min(levels) < 0.15  # the night: about a tenth of the peak


def test_a_bad_profile_row_is_named_by_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text("hour_utc,invocations_per_minute\n2024-05-10T00:00:00+00:00,12\nyesterday,3\n")
    with pytest.raises(ValueError, match=r"p.csv:3"):
        read_hourly_profile(bad)
    bad.write_text("hour_utc,invocations_per_minute\n2024-05-10T00:00:00+00:00,-4\n")
    with pytest.raises(ValueError, match=r"p.csv:2: .*invocations_per_minute '-4' is not a rate"):
        read_hourly_profile(bad)


@settings(deadline=None, max_examples=5)
@given(
    first=st.floats(200, 5000),
    steps=st.lists(st.floats(-0.25, 0.25), min_size=24 * 7 - 1, max_size=24 * 7 - 1),
)
def test_the_digitizer_reads_back_the_hourly_means_of_a_plotted_week(
    first: float, steps: list[float]
) -> None:
    """A week drawn as the dataset's notebook draws it (a minute series, matplotlib's defaults, 15×5 in, grid),
    each hour at its level (within a quarter of the hour before, as a real load moves) with minute-to-minute
    noise; read back within a few pixels' worth."""
    week = [first]
    for s in steps:
        week.append(min(5800.0, max(100.0, week[-1] * (1 + s))))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mod = hack_script("azure_week_profile")
    rng = np.random.default_rng(0)
    minutes = np.repeat(np.array(week), 60) * (1 + 0.05 * rng.standard_normal(24 * 7 * 60))
    fig, ax = plt.subplots(figsize=(15, 5))
    ax.plot(np.arange(minutes.size), minutes)
    ax.set_xlim(0, minutes.size)
    ax.set_ylim(0, 6200)
    ax.set_yticks(range(0, 7000, 1000))
    ax.grid(True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = buf.getvalue()
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": [
                    "for trace_name, df_trace in df_traces.items():\n",
                    "    plt_invocations_time(df_trace)",
                ],
                "outputs": [{"data": {"image/png": base64.b64encode(png).decode()}}],
            }
        ]
    }
    rows = mod.digitize(mod.invocations_plot(notebook))
    assert len(rows) == 168
    px = 6200 / 360  # invocations per minute per pixel, about
    for (_, got), want in zip(rows, week, strict=True):
        assert abs(got - want) <= 0.08 * want + 3 * px


def test_the_script_names_a_source_without_the_notebook_and_exits_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "azure_week_profile.py: error:" in r.stderr and "nowhere" in r.stderr
    assert not (tmp_path / "p.csv").exists()
