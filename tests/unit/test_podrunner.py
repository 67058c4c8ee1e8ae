"""The local pod runner's process hygiene: a pod's process dies with its runner, and a taken pod IP:port is seen.

A chaos run once failed with 99 % 404s: an engine-sim left behind by an earlier, killed runner still held
127.64.0.43:8000, kwok gave that IP to a new engine pod, and the gateway's requests for `chaos` reached the old
process serving another model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from llmfleet.dev.podrunner import taken

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited already
        return f.read().split(") ", 1)[1][0] != "Z"


def test_a_pods_process_dies_when_its_runner_is_killed() -> None:
    """The runner (here a parent started the way `llmfleet dev pod-runner` is) is SIGKILLed, so its clean-up
    never runs; the child it started in a session of its own must not outlive it."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import subprocess, sys, time
                from llmfleet.dev.podrunner import _die_with_runner
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                         start_new_session=True, preexec_fn=_die_with_runner)
                print(child.pid, flush=True)
                time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10  # a bound on waiting, not a performance threshold
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the pod's process outlived its runner"


def test_taken_sees_a_listener_on_the_pod_ip_and_nothing_else() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert taken("127.0.0.1", port)
        assert not taken("127.0.0.2", port)  # another pod IP, the same port: free
    assert not taken("127.0.0.1", port)
