"""End to end: `llmfleet dev up` brings the whole stack up locally and streams a completion through it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_dev_up_serves_a_streaming_completion_through_the_gateway() -> None:
    run_dir = tempfile.mkdtemp(prefix="llmfleet-devup-")
    r = subprocess.run(
        [sys.executable, "-m", "llmfleet", "dev", "up", "--run-dir", run_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Ready: 1/1 engine replicas" in r.stdout
    assert "streamed through the gateway (self-hosted)" in r.stdout
    assert "the autoscaler read from Prometheus" in r.stdout and "'ttftP95'" in r.stdout
    assert "stopped everything it started" in r.stdout


def test_dev_up_rejects_a_bad_file_with_exit_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "llmfleet", "dev", "up", "-f", "/nonexistent.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no such file" in r.stderr


def _tagged(run_dir: str) -> list[int]:
    """Processes whose environment carries the run's tag (every process `dev up` started, and theirs)."""
    from llmfleet.dev.demo import tagged

    return tagged(Path(run_dir))


def _query(prometheus: str, expr: str) -> list[dict]:
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{q}", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_a_kept_fleet_streams_with_the_printed_snippets_feeds_every_dashboard_query_and_goes_down_whole() -> (
    None
):
    from llmfleet import monitoring

    run_dir = tempfile.mkdtemp(prefix="llmfleet-devkeep-")
    llmfleet = [sys.executable, "-m", "llmfleet", "dev"]
    try:
        up = subprocess.run(
            [*llmfleet, "up", "--keep", "--json", "--run-dir", run_dir],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        kept = json.loads(up.stdout.strip().splitlines()[-1])  # the last line is the JSON
        assert {"gateway_url", "api_key", "kubeconfig", "model"} <= kept.keys()
        assert kept["gateway_url"].endswith("/v1") and "[dev up 7/7" in up.stderr
        assert _tagged(run_dir), "the kept fleet's processes run"

        # The printed curl streams a reply.
        curl = subprocess.run(["bash", "-c", kept["curl"]], capture_output=True, text=True, timeout=60)
        chunks = [json.loads(x[6:]) for x in curl.stdout.splitlines() if x.startswith("data: {")]
        assert chunks and "data: [DONE]" in curl.stdout, curl.stdout + curl.stderr
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        # So does the printed OpenAI SDK snippet.
        sdk = subprocess.run(
            [sys.executable, "-c", kept["openai_python"]], capture_output=True, text=True, timeout=60
        )
        assert sdk.returncode == 0 and sdk.stdout.strip(), sdk.stdout + sdk.stderr

        status = subprocess.run(
            [*llmfleet, "status", "--run-dir", run_dir, "--json"], capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0 and json.loads(status.stdout)["conditions"]["Ready"] == "True"

        # Load from the Azure trace, then every dashboard expression, recording rule and alert signal returns
        # data from the dev Prometheus (scraping the engines, gateways and operator, evaluating the rules).
        load = subprocess.run(
            [*llmfleet, "load", "--run-dir", run_dir, "--minutes", "0.5", "--no-progress"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert load.returncode == 0, load.stdout + load.stderr
        summary = json.loads(load.stdout.strip().splitlines()[-1])
        assert summary["ok"] == summary["requests"] > 0, summary
        expressions = [
            e.replace("$namespace", ".*").replace("$model", ".*") for e in monitoring.expressions()
        ]
        expressions += [r["record"] for r in monitoring.recording_rules()]
        expressions += [a.signal for a in monitoring.alerts()]
        deadline = time.monotonic() + 120
        empty = expressions
        while empty and time.monotonic() < deadline:
            empty = [e for e in empty if not _query(kept["prometheus_url"], e)]
            time.sleep(2)
        assert not empty, f"no data for: {empty}"
        # The operator's own series say what the CR says.
        ready = _query(kept["prometheus_url"], 'llmfleet_deployment_condition{type="Ready"}')
        assert [(r["metric"]["namespace"], r["metric"]["name"], r["value"][1]) for r in ready] == [
            (kept["namespace"], kept["name"], "1")
        ]
        # Nothing fires on a healthy fleet.
        firing = [
            r["metric"]["alertname"] for r in _query(kept["prometheus_url"], 'ALERTS{alertstate="firing"}')
        ]
        assert firing == [], firing
    finally:
        down = subprocess.run(
            [*llmfleet, "down", "--run-dir", run_dir], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert _tagged(run_dir) == [], "dev down left processes running"
    after = subprocess.run(
        [*llmfleet, "status", "--run-dir", run_dir], capture_output=True, text=True, timeout=60
    )
    assert after.returncode == 1 and "no kept fleet" in after.stdout
