"""End to end: `llmfleet dev up` brings the whole stack up locally and streams a completion through it."""

from __future__ import annotations

import subprocess
import sys
import tempfile

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
