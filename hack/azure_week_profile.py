"""Reads the hourly load of Azure's LLM code-completion service over a week of May 2024 off the plot the dataset
publishes, and writes it as ``bench/data/azure-llm-code-2024-hourly.csv`` (``hour_utc, invocations_per_minute``).

Why a plot: the 2024 traces (Stojkovic et al., "DynamoLLM", HPCA 2025; CC-BY 4.0) are release downloads, not
files of the repository Azure/AzurePublicDataset, and nothing outside the package registries can be fetched
here. The repository's notebook ``analysis/AzureLLMInferenceDataset2024.ipynb`` keeps its outputs, among them
"Number of invocations per minute" over the week for the code trace (the first image of the cell that calls
``plt_invocations_time``): matplotlib's default blue line on white, x from 2024-05-10 00:00 to 2024-05-17 00:00
UTC at the axes' edges, y from 0 at the bottom edge with a grid line every 1,000. This script finds the axes
(the two longest dark vertical lines) and the grid lines (light grey rows), takes each pixel column's blue
extent (the minute values the column's ~7 minutes span) and its midpoint as the column's level, and averages
the columns of each hour. One pixel is ~7.2 minutes and ~17 invocations a minute (0.3 % of the busiest hour).

    python hack/azure_week_profile.py /work/.mirror/Azure+AzurePublicDataset/repo \\
        --out bench/data/azure-llm-code-2024-hourly.csv

The argument is a checkout or a bare snapshot of the repository, or the notebook itself.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snapshot import read_text

NOTEBOOK = "analysis/AzureLLMInferenceDataset2024.ipynb"
START = datetime(2024, 5, 10, tzinfo=UTC)  # the x axis' left edge
DAYS = 7
GRID_STEP = 1000.0  # invocations per minute between grid lines (the y axis' labels)
BLUE = (31, 119, 180)  # matplotlib's default line colour (tab:blue)
GRID = (176, 176, 176)  # matplotlib's default grid colour


def read_notebook(path: Path) -> dict[str, Any]:
    """The notebook: the file itself, or from a checkout or bare snapshot of the repository."""
    text = path.read_text(encoding="utf-8") if path.is_file() else read_text(path, NOTEBOOK)
    return json.loads(text)  # type: ignore[no-any-return]


def invocations_plot(notebook: dict[str, Any]) -> bytes:
    """The PNG of the code trace's invocations per minute: the first image of the cell calling
    ``plt_invocations_time`` on each trace (the notebook's TRACE_NAMES puts "Coding" first)."""
    for cell in notebook.get("cells", []):
        source = "".join(cell.get("source", []))
        if cell.get("cell_type") == "code" and "plt_invocations_time(df_trace)" in source:
            for out in cell.get("outputs", []):
                png = out.get("data", {}).get("image/png")
                if png:
                    return base64.b64decode(png)
    raise ValueError(f"{NOTEBOOK}: no cell with the plot of invocations per minute and its output")


def _near(img: np.ndarray, colour: tuple[int, int, int], tol: int) -> np.ndarray:
    return np.all(np.abs(img - np.array(colour)) <= tol, axis=2)


def digitize(
    png: bytes, start: datetime = START, days: int = DAYS, grid_step: float = GRID_STEP
) -> list[tuple[datetime, float]]:
    """Hourly mean of the plotted line: (hour start, invocations per minute), one row per hour of the x axis."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    h, w, _ = img.shape
    dark = img.sum(axis=2) < 150
    # The axes' frame: the two longest dark columns and the longest dark row below the middle (the x axis).
    cols = np.argsort(dark.sum(axis=0))[-2:]
    left, right = int(cols.min()), int(cols.max())
    rows = dark[:, left + 1 : right].sum(axis=1)
    bottom = int(np.argmax(np.where(np.arange(h) > h // 2, rows, -1)))
    if right - left < w // 2 or rows[bottom] < (right - left) // 2:
        raise ValueError("no axes frame found in the plot")
    grey = _near(img[:, left + 1 : right], GRID, 24).sum(axis=1) > (right - left) // 2
    grid = [r for r in range(bottom) if grey[r] and not grey[r - 1]]
    if len(grid) < 2:
        raise ValueError("fewer than two grid lines in the plot: no y scale")
    step = float(np.median(np.diff(grid)))
    per_px = grid_step / step  # invocations per minute per pixel
    blue = _near(img, BLUE, 40)
    minutes = days * 24 * 60
    hourly: list[list[float]] = [[] for _ in range(days * 24)]
    for c in range(left + 1, right):
        ys = np.flatnonzero(blue[:bottom, c])
        if ys.size == 0:
            continue
        level = ((bottom - ys.min()) + (bottom - ys.max())) / 2 * per_px
        minute = (c - left) / (right - left) * minutes
        hourly[min(len(hourly) - 1, int(minute // 60))].append(level)
    missing = [i for i, v in enumerate(hourly) if not v]
    if missing:
        raise ValueError(f"no line in hour {missing[0]} of the plot")
    return [(start + timedelta(hours=i), float(np.mean(v))) for i, v in enumerate(hourly)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "source", type=Path, help="a checkout or bare snapshot of Azure/AzurePublicDataset, or the notebook"
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    try:
        rows = digitize(invocations_plot(read_notebook(args.source)))
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"azure_week_profile.py: error: {args.source}: {exc}", file=sys.stderr)
        return 2
    with args.out.open("w", encoding="utf-8") as f:
        f.write("hour_utc,invocations_per_minute\n")
        for t, v in rows:
            f.write(f"{t.isoformat()},{v:.0f}\n")
    print(f"{args.out}: {len(rows)} hours, busiest {max(v for _, v in rows):.0f} invocations a minute")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
