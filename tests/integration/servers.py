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

import httpx


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


def engine(model: str = "m", speedup: float = 20.0, *extra: str, env: dict[str, str] | None = None) -> Server:
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
        env,
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


def chat(
    url: str,
    key: str,
    content: str,
    *,
    model: str = "m",
    max_tokens: int = 16,
    system: str | None = None,
    timeout: float = 60,
    **extra: Any,
) -> httpx.Response:
    """One deterministic (temperature 0) chat completion through a gateway, with a bearer key."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    body = {
        "model": model,
        "temperature": 0,
        "max_tokens": max_tokens,
        "messages": [*messages, {"role": "user", "content": content}],
        **extra,
    }
    return httpx.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )


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


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on a loopback port: POST /v1/traces with protobuf, decoded by the
    OpenTelemetry protocol's own generated classes (opentelemetry-proto), kept as plain dicts."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        lock = threading.Lock()
        receiver = self

        def value(v: Any) -> Any:
            kind = v.WhichOneof("value")
            return getattr(v, kind) if kind else None

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces" or "protobuf" not in (self.headers.get("content-type") or ""):
                    self.send_response(404)
                    self.end_headers()
                    return
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                out = []
                for rs in req.resource_spans:
                    resource = {a.key: value(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            out.append(
                                {
                                    "name": sp.name,
                                    "kind": sp.kind,
                                    "trace_id": sp.trace_id.hex(),
                                    "span_id": sp.span_id.hex(),
                                    "parent_span_id": sp.parent_span_id.hex(),
                                    "start": sp.start_time_unix_nano,
                                    "end": sp.end_time_unix_nano,
                                    "attributes": {a.key: value(a.value) for a in sp.attributes},
                                    "events": [(e.name, e.time_unix_nano) for e in sp.events],
                                    "status": sp.status.code,
                                    "resource": resource,
                                }
                            )
                with lock:
                    receiver.spans.extend(out)
                    receiver.requests += 1
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in list(self.spans) if predicate(s)]
            if found:
                return found
            time.sleep(0.1)
        return []

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_aiohttp(app: Any) -> tuple[int, str]:
    """Serve an aiohttp application on a loopback port from a daemon thread (a stand-in engine); returns once
    it answers: (port, base URL)."""
    import asyncio
    import threading

    from aiohttp import web

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    runner = web.AppRunner(app)

    def serve() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/")
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return port, url
