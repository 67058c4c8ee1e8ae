"""Request traces: the Azure LLM inference trace format (TIMESTAMP, ContextTokens, GeneratedTokens) read into
arrivals, and reshaped (time compressed, copies overlaid) to reach a load the sample does not have, or replayed
through a day's hourly levels (``daily``: a one-hour sample made into a day of traffic). The fleet simulator
replays them against a model; ``llmfleet dev load`` replays them against a live gateway.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

_Row = TypeVar("_Row", bound=tuple[Any, ...])

__all__ = ["TraceRequest", "daily", "read_azure_trace", "read_hourly_profile", "shape", "weekday_levels"]


@dataclass(frozen=True)
class TraceRequest:
    at: float  # seconds from the trace's start
    prompt_tokens: int
    output_tokens: int


def _rows(path: Path, columns: str, parse: Callable[[dict[str, str]], _Row]) -> list[_Row]:
    """A CSV's rows parsed, sorted; a row that does not parse is named by its line."""
    rows: list[_Row] = []
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append(parse(row))
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{i}: not a row of {columns} ({exc})") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return sorted(rows)


def read_azure_trace(path: Path) -> list[TraceRequest]:
    """The Azure LLM inference trace (TIMESTAMP, ContextTokens, GeneratedTokens), times relative to its first row."""
    rows = _rows(
        path,
        "TIMESTAMP,ContextTokens,GeneratedTokens",
        lambda row: (
            datetime.fromisoformat(row["TIMESTAMP"].strip()[:26]),
            int(row["ContextTokens"]),
            int(row["GeneratedTokens"]),
        ),
    )
    t0 = rows[0][0]
    return [TraceRequest((t - t0).total_seconds(), max(1, p), max(1, g)) for t, p, g in rows]


def shape(
    trace: list[TraceRequest],
    speed: float = 1.0,
    copies: int = 1,
    minutes: float | None = None,
    seed: int = 0,
) -> list[TraceRequest]:
    """Compress time by ``speed`` and overlay ``copies`` of the trace, each shifted by a random offset within
    the trace (wrapping round), to reach a higher load than the sample has; then keep the first ``minutes``."""
    span = trace[-1].at + 1e-3
    rng = random.Random(seed)
    out: list[TraceRequest] = []
    for c in range(copies):
        shift = 0.0 if c == 0 else rng.uniform(0, span)
        out.extend(
            TraceRequest(((r.at + shift) % span) / speed, r.prompt_tokens, r.output_tokens) for r in trace
        )
    out.sort(key=lambda r: r.at)
    if minutes is not None:
        out = [r for r in out if r.at < minutes * 60]
    return out


def read_hourly_profile(path: Path) -> list[tuple[datetime, float]]:
    """An hourly load profile (``hour_utc``, ``invocations_per_minute``), e.g. ``bench/data``'s week of Azure's
    2024 code-completion service, oldest first."""
    return _rows(
        path,
        "hour_utc,invocations_per_minute",
        lambda row: (datetime.fromisoformat(row["hour_utc"]), _rate(row["invocations_per_minute"])),
    )


def _rate(text: str) -> float:
    rate = float(text)
    if not rate >= 0:  # NaN too
        raise ValueError(f"invocations_per_minute {text!r} is not a rate (>= 0)")
    return rate


def weekday_levels(
    profile: list[tuple[datetime, float]], days: tuple[int, ...] = (0, 1, 2, 3)
) -> list[float]:
    """The mean load of each hour of the day (0-23, the profile's time zone) over the profile's ``days`` of the
    week (Monday 0; default Monday to Thursday), as a share of the busiest hour."""
    sums, counts = [0.0] * 24, [0] * 24
    for t, rate in profile:
        if t.weekday() in days:
            sums[t.hour] += rate
            counts[t.hour] += 1
    if not all(counts):
        missing = [h for h in range(24) if not counts[h]]
        raise ValueError(f"the profile has no hour {missing[0]}:00 on the days asked for")
    means = [s / c for s, c in zip(sums, counts, strict=True)]
    peak = max(means)
    if peak <= 0:
        raise ValueError("the profile has no load on the days asked for")
    return [m / peak for m in means]


def daily(trace: list[TraceRequest], levels: list[float], seed: int = 0) -> list[TraceRequest]:
    """One replay of ``trace`` per entry of ``levels`` (e.g. the 24 hours of ``weekday_levels``), end to end:
    replay i keeps each request with probability ``levels[i]`` (independent thinning, so the trace's bursts
    keep their shape at the hour's level) and is rotated by a random offset (wrapping round, as ``shape``
    does) so the bursts do not recur at the same minute of every replay. A replay lasts as long as the trace."""
    if not trace:
        return []
    span = trace[-1].at + 1e-3
    rng = random.Random(seed)
    out: list[TraceRequest] = []
    for i, level in enumerate(levels):
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"levels[{i}] = {level}: a level is a share of the trace's load, 0..1")
        shift = rng.uniform(0, span)
        out.extend(
            TraceRequest(i * span + (r.at + shift) % span, r.prompt_tokens, r.output_tokens)
            for r in trace
            if rng.random() < level
        )
    out.sort(key=lambda r: r.at)
    return out
