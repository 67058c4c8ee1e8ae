"""The `llmfleet` CLI: plan, render and crd, and exit code 2 with a named field for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, ROOT


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmfleet", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_plan_and_render_every_example(path: Path) -> None:
    plan = run("plan", "-f", str(path))
    assert plan.returncode == 0, plan.stderr
    assert "Tensor parallel" in plan.stdout and "$/h per replica" in plan.stdout
    rendered = run("render", "-f", str(path))
    assert rendered.returncode == 0, rendered.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered.stdout)]
    assert kinds.count("Deployment") >= 3 and "Service" in kinds and "ConfigMap" in kinds


def test_plan_json_for_70b() -> None:
    out = run("plan", "-f", str(EXAMPLES[1]), "-o", "json")
    d = json.loads(out.stdout)
    assert d["tensorParallelSize"] == 4 and d["gpusPerReplica"] == 4
    assert d["perReplicaHour"]["spot"] < d["perReplicaHour"]["onDemand"]
    assert d["fleetHour"]["min"]["onDemand"] == 2


def bad(text: str) -> subprocess.CompletedProcess[str]:
    return run("plan", "-f", "-", stdin=text)


HEAD = "apiVersion: llmfleet.io/v1alpha1\nkind: LLMDeployment\nmetadata: {name: x}\n"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("spec: {model: {name: m}, bogus: 1}", "spec.bogus: unknown field; allowed here: model, engine"),
        (
            "spec: {model: {name: meta-llama/Meta-Llama-3-8B-Instruct}, accelerator: {type: B300}}",
            "spec.accelerator.type: unknown GPU type 'B300'; known: H100-80GB",
        ),
        (
            "spec: {model: {name: meta-llama/Meta-Llama-3-8B-Instruct}, engine: {tensorParallelSize: 3}}",
            "spec.engine.tensorParallelSize: Input should be 'auto', 1, 2, 4 or 8",
        ),
        (
            "spec: {model: {name: meta-llama/Llama-3.1-405B-Instruct}}",
            "does not fit on one node of 8× H100-80GB. Smallest fix: quantize: model.dtype=fp8",
        ),
        ("spec: [", "invalid YAML"),
    ],
)
def test_bad_input_exits_2_naming_the_field(body: str, needle: str) -> None:
    result = bad(HEAD + body + "\n")
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("llmfleet plan: error: <stdin>")


def test_missing_file_exits_2() -> None:
    result = run("render", "-f", "/nonexistent.yaml")
    assert result.returncode == 2 and "/nonexistent.yaml: no such file" in result.stderr


def test_crd_command_prints_the_committed_crd() -> None:
    from tests.unit.test_crd import CRD_PATH

    assert run("crd").stdout == CRD_PATH.read_text()


def test_no_command_prints_help_and_exits_2() -> None:
    result = run()
    assert result.returncode == 2 and "plan" in result.stdout


def test_simulate_replays_the_trace_and_prints_both_fleets(tmp_path: Path) -> None:
    from tests.conftest import DATA

    out = run(
        "simulate",
        "-f",
        str(EXAMPLES[0]),
        "--trace",
        str(DATA / "azure-llm-conv-2023.csv"),
        "--minutes",
        "2",
        "--static",
        "6",
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["fleet"] for line in lines] == ["autoscaled", "static-on-demand-6", "summary"]
    assert lines[0]["completed"] == lines[1]["completed"] == lines[0]["requests"] > 0
    assert 0 < lines[2]["cost_ratio_vs_static"] < 1
    assert "requests over" in out.stderr  # progress on stderr, JSON on stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trace", "/nonexistent.csv"], "--trace /nonexistent.csv: no such file"),
        (["--speed", "0"], "--speed must be > 0"),
        (["--warmup", "-1"], "--warmup must be >= 0"),
        (["--static", "0"], "--static must be >= 1"),
        (["--minutes", "0"], "--minutes must be > 0"),
        (["--minutes", "2", "--warmup", "3"], "--warmup 3 min leaves no request of the trace to measure"),
        (["--daily", "/nonexistent.csv"], "--daily /nonexistent.csv: no such file"),
        (["--daily", str(ROOT / "bench" / "data" / "azure-llm-conv-2023.csv")], "--daily: "),
    ],
)
def test_simulate_bad_input_exits_2_naming_the_flag(args: list[str], message: str) -> None:
    from tests.conftest import DATA

    base = ["simulate", "-f", str(EXAMPLES[0]), "--trace", str(DATA / "azure-llm-conv-2023.csv")]
    out = run(*base, *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_simulate_daily_replays_the_trace_once_per_hour_at_each_hours_level() -> None:
    from llmfleet.traces import read_azure_trace, read_hourly_profile, weekday_levels
    from tests.conftest import DATA

    profile = DATA / "azure-llm-code-2024-hourly.csv"
    out = run(
        "simulate", "-f", str(EXAMPLES[0]), "--trace", str(DATA / "azure-llm-code-2023.csv"),
        "--daily", str(profile), "--policy", "static-peak", "--json", "--minutes", "120",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (line,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert line["daily"] == profile.name and "a weekday of" in out.stderr
    hour = read_azure_trace(DATA / "azure-llm-code-2023.csv")
    span = hour[-1].at + 1e-3
    levels = weekday_levels(read_hourly_profile(profile))
    # The first 120 minutes: whole replays of the hour, then part of the next, each thinned to its level.
    whole = int(120 * 60 // span)
    want = len(hour) * (sum(levels[:whole]) + levels[whole] * (120 * 60 - whole * span) / span)
    assert abs(line["requests"] - want) < 0.05 * want


def test_simulate_names_a_bad_trace_line(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("when,prompt\n1,2\n")
    out = run("simulate", "-f", str(EXAMPLES[0]), "--trace", str(trace))
    assert out.returncode == 2 and "t.csv:2" in out.stderr, out.stderr


def test_status_table_shows_conditions_replicas_and_decisions_newest_first() -> None:
    from llmfleet.cli import format_status

    obj = {
        "metadata": {"name": "llama", "namespace": "ml", "generation": 3},
        "spec": {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"}},
        "status": {
            "observedGeneration": 3,
            "tensorParallelSize": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "3/3 ready"}],
            "ready": "3/3",
            "replicas": {"spot": {"desired": 2, "ready": 2}, "onDemand": {"desired": 1, "ready": 1}},
            "costPerHour": 12.5,
            "metrics": {"queueDepth": 0.0, "running": 4.0, "ttftP95": 0.21, "kvCacheUsage": 0.12},
            "autoscaling": {
                "history": [
                    {"time": "2026-12-05T09:00:00Z", "from": 1, "to": 3, "spot": 2, "onDemand": 1,
                     "reason": "QueueDepth", "message": "queue depth 9 > 4×1"},
                    {"time": "2026-12-05T09:10:00Z", "from": 3, "to": 2, "spot": 1, "onDemand": 1,
                     "reason": "LoadFits", "message": "load fits 2 replicas"},
                ]
            },
        },
    }  # fmt: skip
    text = format_status(obj)
    assert "ml/llama: meta-llama/Meta-Llama-3-8B-Instruct (TP 1)" in text
    assert "AllReplicasReady" in text and "spot 2/2, on-demand 1/1" in text and "$12.5/h" in text
    assert "TTFT p95 0.210s" in text and "KV cache 12%" in text
    assert text.index("LoadFits") < text.index("QueueDepth")  # newest first
    obj["metadata"]["generation"] = 4
    assert "has not observed generation 4" in format_status(obj)
    assert "No scaling decisions" in format_status({"metadata": {"name": "x"}, "spec": {}})


def test_status_without_a_reachable_cluster_exits_2_saying_why(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    out = run("status", "llama", "-n", "ml", "--kubeconfig", str(missing))
    assert out.returncode == 2 and "cannot reach the cluster" in out.stderr, out.stderr
