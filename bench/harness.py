"""Benchmark plumbing: a trivially fast OpenAI-compatible upstream and a keep-alive HTTP/1.1 load generator.

Both are raw asyncio protocols on uvloop so that they cost far less than what they measure. The
upstream answers a chat completion with a fixed body, or streams N SSE chunks (optionally one every
``interval`` seconds, for the soak case). The load generator runs C connections, each sending the
next request when the previous response ended, and records latency and time to first body byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 16}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 16, "total_tokens": 36},
}).encode()


def sse_chunk(i: int) -> bytes:
    body = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}]})
    return b"data: " + body.encode() + b"\n\n"


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, chunks: int, interval: float) -> None:
        self.chunks, self.interval = chunks, interval
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            path = head.split(" ", 2)[1]
            self.respond(path, body)

    def respond(self, path: str, body: bytes) -> None:
        assert self.transport is not None
        if path.endswith("/models"):
            data = b'{"object":"list","data":[{"id":"m","object":"model"}]}'
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(data)).encode() + b"\r\n\r\n" + data)
            return
        if b'"stream":true' not in body.replace(b" ", b""):
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(COMPLETION)).encode() + b"\r\n\r\n" + COMPLETION)
            return
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        if self.interval <= 0:
            for i in range(self.chunks):
                self.transport.write(_chunked(sse_chunk(i)))
            self.transport.write(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        else:
            asyncio.get_running_loop().create_task(self._slow_stream())

    async def _slow_stream(self) -> None:
        assert self.transport is not None
        for i in range(self.chunks):
            await asyncio.sleep(self.interval)
            if self.transport.is_closing():
                return
            self.transport.write(_chunked(sse_chunk(i)))
        self.transport.write(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")


async def serve_upstream(port: int, chunks: int = 32, interval: float = 0.0) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: UpstreamProtocol(chunks, interval), "127.0.0.1", port, backlog=16384)


def run_upstream(port: int, chunks: int, interval: float, cpu: int | None) -> None:
    """Process entry point (multiprocessing): serve forever."""
    import uvloop

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def main() -> None:
        server = await serve_upstream(port, chunks, interval)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader, t0: float, res: Result) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    res.statuses[status] = res.statuses.get(status, 0) + 1
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        first = True
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            await reader.readexactly(size + 2)
            if first:
                res.ttfts.append(time.perf_counter() - t0)
                first = False
    else:
        i = lower.find(b"content-length:")
        n = int(lower[i + 15:lower.find(b"\r\n", i)].strip()) if i >= 0 else 0
        await reader.readexactly(n)
        res.ttfts.append(time.perf_counter() - t0)
    if status != 200:
        res.errors += 1


async def load(host: str, port: int, path: str, body: bytes, headers: dict[str, str], concurrency: int,
               duration: float, max_requests: int | None = None, read_timeout: float = 120.0) -> Result:
    res = Result()
    req = request_bytes(host, port, path, body, headers)
    deadline = time.perf_counter() + duration
    sent = 0

    async def worker() -> None:
        nonlocal sent
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        except OSError:
            res.errors += 1
            return
        try:
            while time.perf_counter() < deadline and (max_requests is None or sent < max_requests):
                sent += 1
                t0 = time.perf_counter()
                writer.write(req)
                try:
                    await asyncio.wait_for(_read_response(reader, t0, res), read_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                    res.errors += 1
                    return
                res.latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    res.elapsed = time.perf_counter() - start
    return res


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc)."""
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (from /proc)."""
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]
