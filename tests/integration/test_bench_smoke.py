"""Smoke runs of the benchmarks (short versions): they start, measure and print their JSON contract.
No figure is checked against a threshold here; the full runs are for the closing notes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_gateway_bench_quick_prints_its_contract() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gateway.py"), "--quick", "--no-litellm", "--duration", "1"],
                       capture_output=True, text=True, timeout=600)
    lines = json_lines(r.stdout)
    cases = [line for line in lines if "target" in line]
    assert {(c["target"], c["stream"], c["concurrency"]) for c in cases} >= {
        (t, s, c) for t in ("direct", "llmfleet") for s in (False, True) for c in (1, 16, 64)}
    for c in cases:
        assert {"rps", "p50_ms", "p99_ms", "ttft_p50_ms", "errors"} <= c.keys()
        assert c["errors"] == 0 and c["rps"] > 0
    summary = lines[-1]
    assert summary["summary"] and {"added_p50_ms", "added_p99_ms", "share_of_direct", "stream_share_of_direct"} <= summary.keys()
    assert r.returncode == 0, r.stderr


def test_reconcile_bench_quick_on_the_session_cluster(cluster, operator) -> None:
    operator.stop()  # the bench runs its own operator
    try:
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "reconcile.py"), "--quick", "--crs", "3", "--idle", "3",
                            "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, timeout=600,
                           env=cluster.env)
    finally:
        operator.start()
    (line,) = [x for x in json_lines(r.stdout) if x.get("bench") == "reconcile"]
    assert line["crs"] == 3 and line["ready_crs"] == 3
    assert {"all_ready_s", "apply_to_children_p50_s", "apply_to_children_p95_s", "idle_writes_per_min",
            "operator_rss_mib"} <= line.keys()
    assert line["idle_writes_per_min"] == 0
