"""`llmfleet dev down | status | load` without a cluster: the run tag finds and stops every process a run
started, and bad input is a usage error."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from llmfleet.cli import main
from llmfleet.dev import demo


def _tagged_sleeper(run_dir: Path) -> subprocess.Popen[bytes]:
    # A shell that starts a child: both carry the tag, as an engine started by the pod runner would.
    return subprocess.Popen(
        ["bash", "-c", "sleep 300 & wait"],
        env={**os.environ, demo.TAG: str(run_dir)},
        start_new_session=True,
    )


def test_down_sweeps_every_tagged_process_and_only_those(tmp_path: Path) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    a, b = _tagged_sleeper(mine), _tagged_sleeper(other)
    try:
        deadline = time.monotonic() + 10
        while len(demo.tagged(mine)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(demo.tagged(mine)) == 2  # bash and its sleep
        assert main(["dev", "down", "--run-dir", str(mine)]) == 0
        a.wait(timeout=10)
        assert demo.tagged(mine) == []
        assert len(demo.tagged(other)) == 2  # another run's processes are left alone
    finally:
        for p in (a, b):
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()


def test_status_of_nothing_is_exit_1_and_load_without_a_fleet_is_a_usage_error(
    tmp_path: Path, capsys
) -> None:
    assert main(["dev", "status", "--run-dir", str(tmp_path)]) == 1
    assert "no kept fleet" in capsys.readouterr().out
    assert main(["dev", "load", "--run-dir", str(tmp_path)]) == 2
    assert "dev up --keep" in capsys.readouterr().err
    assert main(["dev", "load", "--minutes", "0"]) == 2
    assert main(["dev", "load", "--url", "http://127.0.0.1:1/v1"]) == 2
    assert "--api-key and --model" in capsys.readouterr().err


def test_the_printed_snippets_name_the_kept_fleet() -> None:
    k = demo.Kept("http://127.1.0.1:8080/v1", "sk-x", "/k", "m", "ns", "n", None, "/r")
    assert k.curl().startswith(
        "curl -sN http://127.1.0.1:8080/v1/chat/completions -H 'Authorization: Bearer sk-x'"
    )
    compile(k.openai(), "<snippet>", "exec")  # valid Python
    assert 'base_url="http://127.1.0.1:8080/v1"' in k.openai()
