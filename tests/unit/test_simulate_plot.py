"""``llmfleet simulate --plot`` and its progress bars: the per-minute series the picture is drawn from, the
picture itself, and the errors a user gets."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from llmfleet.api.load import parse_spec
from llmfleet.sim.fleet import SimConfig, policies, read_azure_trace, shape, simulate
from tests.conftest import DATA, EXAMPLES

CONV = DATA / "azure-llm-conv-2023.csv"
SPEC = {
    "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "maxModelLen": 8192},
    "accelerator": {"type": "H100-80GB"},
    "pools": {"onDemand": {"minReplicas": 1, "maxReplicas": 4}, "spot": {"maxReplicas": 12}},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 16},
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmfleet", *args], capture_output=True, text=True, timeout=120
    )


def test_the_series_adds_up_to_the_run() -> None:
    trace = shape(read_azure_trace(CONV), speed=6.0, copies=3, minutes=6)
    out = simulate(parse_spec(SPEC), trace, SimConfig(spot_reclaims_per_hour=20.0, seed=3), series=True)
    s = out["series"]
    assert round(sum(s["requests_per_s"]) * 60) == len(trace)
    assert sum(s["prompt_tps"]) * 60 == pytest.approx(sum(r.prompt_tokens for r in trace), rel=1e-3)
    assert len(s["reclaim_minute"]) == out["preemptions"] > 0
    assert len(s["tick_minute"]) == len(s["spot"]) == len(s["on_demand"]) == len(s["target"]) > 0
    assert max(a + b for a, b in zip(s["spot"], s["on_demand"], strict=True)) <= out["peak_replicas"]
    served = [v for v in s["ttft_p95_s"] if v is not None]
    assert served and max(served) <= max(out["ttft_p99_s"], out["ttft_p95_s"]) * 100  # seconds, not ms
    late = [v for v in s["ttft_late_share"] if v is not None]
    assert all(0 <= v <= 1 for v in late)


def test_a_static_fleet_replaces_its_reclaimed_replicas_and_is_sampled_too() -> None:
    trace = shape(read_azure_trace(CONV), speed=2.0, minutes=20)
    config = SimConfig(
        spot_reclaims_per_hour=3.0, seed=1, static_replicas=6, static_pools=True, policy="static"
    )
    out = simulate(parse_spec(SPEC), trace, config, series=True)
    s = out["series"]
    assert out["preemptions"] > 0 and s["tick_minute"]
    total = [a + b for a, b in zip(s["spot"], s["on_demand"], strict=True)]
    first = s["reclaim_minute"][0]
    assert min(total) < 6  # a reclaim took one away ...
    # ... and its Deployment brought it back after a cold start (2 min), as the operator's would.
    assert any(n == 6 for m, n in zip(s["tick_minute"], total, strict=True) if m > first + 2.5)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_draws_a_png_of_every_policy(tmp_path: Path) -> None:
    png = tmp_path / "out" / "conv.png"
    out = run(
        "simulate", "-f", str(EXAMPLES[0]), "--trace", str(CONV), "--minutes", "4",
        "--policy", "llmfleet", "--policy", "keda-queue", "--json", "--plot", str(png), "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"drew {png}" in out.stderr
    width, height = _png_size(png)
    assert width > 800 and height > 600
    assert "series" not in out.stdout  # the per-minute figures go to the picture, not to the JSON
    assert "sim-s" not in out.stderr  # --no-progress


def test_progress_bars_count_simulated_seconds_to_the_end() -> None:
    out = run("simulate", "-f", str(EXAMPLES[0]), "--trace", str(CONV), "--minutes", "3", "--policy", "llmfleet",
              "--progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "llmfleet" in out.stderr and "sim-s" in out.stderr and "100%" in out.stderr
    quiet = run(
        "simulate", "-f", str(EXAMPLES[0]), "--trace", str(CONV), "--minutes", "3", "--policy", "llmfleet"
    )
    assert "sim-s" not in quiet.stderr  # stderr is not a terminal here: no bar by default


def test_plot_needs_a_picture_suffix_and_says_how_to_get_matplotlib(tmp_path: Path) -> None:
    out = run("simulate", "-f", str(EXAMPLES[0]), "--trace", str(CONV), "--plot", str(tmp_path / "x.txt"))
    assert out.returncode == 2 and "--plot" in out.stderr and ".png" in out.stderr
    code = (
        "import sys; sys.modules['matplotlib'] = None; from llmfleet.cli import main; "
        f"sys.exit(main(['simulate', '-f', {str(EXAMPLES[0])!r}, '--trace', {str(CONV)!r}, "
        f"'--plot', {str(tmp_path / 'x.png')!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "llmfleet[plot]" in out.stderr, out.stderr


def test_policies_pass_the_series_through_for_static_peak_too() -> None:
    trace = shape(read_azure_trace(CONV), minutes=3)
    runs = list(policies(parse_spec(SPEC), trace, SimConfig(), ("static-peak",), series=True))
    assert runs[0]["series"]["on_demand"] and set(runs[0]["series"]["spot"]) == {0}
