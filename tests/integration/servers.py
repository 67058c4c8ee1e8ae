"""Start llmfleet servers (engine-sim, gateway) as real processes on loopback ports, and stop them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Server:
    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix="llmfleet-srv-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmfleet", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        wait_port(port, self.proc)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return Path(self.log.name).read_text()


def engine(model: str = "m", speedup: float = 20.0, *extra: str) -> Server:
    port = free_port()
    return Server(
        [
            "engine-sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--served-model-name",
            model,
            "--speedup",
            str(speedup),
            *extra,
        ],
        port,
    )


def gateway(config: dict[str, Any], keys: dict[str, str] | None = None, *extra: str) -> Server:
    port = free_port()
    d = Path(tempfile.mkdtemp(prefix="llmfleet-gw-"))
    (d / "gateway.json").write_text(json.dumps(config))
    args = ["gateway", "--host", "127.0.0.1", "--port", str(port), "--config", str(d / "gateway.json")]
    if keys:
        (d / "keys").write_text("".join(f"{k}: {v}\n" for k, v in keys.items()))
        args += ["--keys-file", str(d / "keys")]
    return Server([*args, *extra], port)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of a metric in Prometheus text whose labels include the given ones."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
