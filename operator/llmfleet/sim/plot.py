"""``llmfleet simulate --plot FILE.png``: one picture of a replay, drawn from the per-minute ``series`` of each
policy's run (``sim.fleet.series_of``). Three panels on one time axis: the load arriving, the replicas serving
(per pool for the first policy, the total for the others) with spot reclaim notices marked, and each minute's
TTFT p95 against the CR's target. matplotlib is an optional extra (``pip install 'llmfleet[plot]'``),
imported here only, with the non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_EXTRA = "pip install 'llmfleet[plot]'"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Draw ``runs`` (each with ``policy`` or ``fleet`` and ``series``) to ``path`` (PNG, SVG or PDF by suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(f"--plot needs matplotlib: {PLOT_EXTRA}") from exc

    fig, (load, reps, ttft) = plt.subplots(3, 1, sharex=True, figsize=(11, 8.5), constrained_layout=True)
    first = runs[0]["series"]
    minutes = first["minute"]
    load.bar(minutes, first["requests_per_s"], width=1.0, align="edge", color="#8da0cb", label="requests/s")
    load.set_ylabel("requests/s")
    tokens = load.twinx()
    tokens.plot(
        [m + 0.5 for m in minutes],
        [t / 1000 for t in first["prompt_tps"]],
        color="#444444",
        lw=1,
        label="prompt ktokens/s",
    )
    tokens.set_ylabel("prompt ktokens/s")
    load.set_title(title, fontsize=10)
    load.legend(loc="upper left", fontsize=8)
    tokens.legend(loc="upper right", fontsize=8)

    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]
    for i, run in enumerate(runs):
        s, name, color = run["series"], _name(run), colors[i % len(colors)]
        if i == 0:
            reps.stackplot(
                s["tick_minute"],
                s["on_demand"],
                s["spot"],
                labels=[f"{name}: on-demand", f"{name}: spot"],
                colors=["#fc8d62", "#66c2a5"],
                step="post",
                alpha=0.8,
            )
            for m in s["reclaim_minute"]:
                reps.axvline(m, color="#b2182b", lw=0.8, ls=":")
            if s["reclaim_minute"]:
                reps.plot([], [], color="#b2182b", lw=0.8, ls=":", label=f"{name}: spot reclaim notice")
        else:
            total = [a + b for a, b in zip(s["spot"], s["on_demand"], strict=True)]
            reps.step(s["tick_minute"], total, where="post", color=color, lw=1.2, label=f"{name}: total")
        p95 = [None if v is None else v * 1000 for v in s["ttft_p95_s"]]
        ttft.plot(
            [m + 0.5 for m in s["minute"]],
            [float("nan") if v is None else v for v in p95],
            color="#1b9e77" if i == 0 else color,
            lw=1.6 if i == 0 else 1.0,
            marker=".",
            ms=3,
            label=name,
        )
    top = max(
        max((a + b for a, b in zip(r["series"]["spot"], r["series"]["on_demand"], strict=True)), default=1)
        for r in runs
    )
    reps.set_ylim(0, top * 1.45 + 0.5)  # room for the legend above the lines
    reps.set_ylabel("replicas serving")
    reps.legend(loc="upper left", fontsize=8, ncol=2)
    target_ms = first["ttft_target_s"] * 1000
    ttft.axhline(target_ms, color="#b2182b", lw=1, ls="--", label=f"target {target_ms:.0f} ms")
    ttft.set_yscale("log")
    ttft.set_ylabel("TTFT p95 of the minute (ms)")
    ttft.set_xlabel("minutes")
    ttft.legend(loc="upper left", fontsize=8, ncol=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _name(run: dict[str, Any]) -> str:
    name = str(run.get("policy") or run.get("fleet"))
    att = run.get("ttft_slo_attainment")
    cost = run.get("cost_usd")
    figures = [f"{att:.1%} in SLO" if att is not None else None, f"${cost:.2f}" if cost is not None else None]
    return f"{name} ({', '.join(f for f in figures if f)})" if any(figures) else name
