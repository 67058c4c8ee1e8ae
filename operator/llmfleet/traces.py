"""Request traces: the Azure LLM inference trace format (TIMESTAMP, ContextTokens, GeneratedTokens) read into
arrivals, and reshaped (time compressed, copies overlaid) to reach a load the sample does not have. The fleet
simulator replays them against a model; ``llmfleet dev load`` replays them against a live gateway.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = ["TraceRequest", "read_azure_trace", "shape"]


@dataclass(frozen=True)
class TraceRequest:
    at: float  # seconds from the trace's start
    prompt_tokens: int
    output_tokens: int


def read_azure_trace(path: Path) -> list[TraceRequest]:
    """The Azure LLM inference trace (TIMESTAMP, ContextTokens, GeneratedTokens), times relative to its first row."""
    rows: list[tuple[datetime, int, int]] = []
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                stamp = datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
                rows.append((stamp, int(row["ContextTokens"]), int(row["GeneratedTokens"])))
            except (KeyError, ValueError) as exc:
                raise ValueError(
                    f"{path}:{i}: not a row of TIMESTAMP,ContextTokens,GeneratedTokens ({exc})"
                ) from None
    if not rows:
        raise ValueError(f"{path}: no requests")
    rows.sort()
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
