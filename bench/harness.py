"""Benchmark plumbing: a trivially fast OpenAI-compatible upstream and a keep-alive HTTP/1.1 load generator.

Both are raw asyncio protocols on uvloop so that they cost far less than what they measure. The
upstream answers a chat completion with a fixed body, or streams N SSE chunks (optionally one every
``interval`` seconds, for the soak case). The load generator runs C connections, each sending the
next request when the previous response ended, and records latency and time to first body byte.

Also: the writes the chart's operators made, from the API server's audit log (``operator_writes``), for the
benchmarks and tests that hold leader election to one writer at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok " * 16}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 16, "total_tokens": 36},
    }
).encode()


def sse_chunk(i: int) -> bytes:
    body = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}],
        }
    )
    return b"data: " + body.encode() + b"\n\n"


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Ticker:
    """The clock of every slow stream of a server. A stream's first chunk goes out at once (TTFT then measures
    the path, not the clock); after that each stream gets a chunk every ``interval``. Streams are spread over
    ``slots`` phases, as the sequences of many engines stepping independently would be, and one timer serves
    them all instead of one sleeping task per stream."""

    def __init__(self, chunks: int, interval: float, slots: int = 10) -> None:
        self.chunks, self.interval = chunks, interval
        self.slots: list[dict[asyncio.Transport, int]] = [{} for _ in range(slots)]
        self.added = 0
        self.task: asyncio.Task[None] | None = None

    def add(self, transport: asyncio.Transport) -> None:
        self.write(self.slots[self.added % len(self.slots)], transport, 0)
        self.added += 1
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def write(self, slot: dict[asyncio.Transport, int], transport: asyncio.Transport, i: int) -> None:
        if i + 1 >= self.chunks:
            transport.write(_chunked(sse_chunk(i)) + _chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            slot.pop(transport, None)
        else:
            transport.write(_chunked(sse_chunk(i)))
            slot[transport] = i + 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        step = self.interval / len(self.slots)
        next_tick, n = loop.time(), 0
        while True:
            next_tick += step
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            slot = self.slots[n % len(self.slots)]
            n += 1
            for transport, i in list(slot.items()):
                if transport.is_closing():
                    del slot[transport]
                else:
                    self.write(slot, transport, i)


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, chunks: int, ticker: Ticker | None = None) -> None:
        self.chunks, self.ticker = chunks, ticker
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
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            path = head.split(" ", 2)[1]
            self.respond(path, body)

    def respond(self, path: str, body: bytes) -> None:
        assert self.transport is not None
        if path.endswith("/models"):
            data = b'{"object":"list","data":[{"id":"m","object":"model"}]}'
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(data)).encode()
                + b"\r\n\r\n"
                + data
            )
            return
        if b'"stream":true' not in body.replace(b" ", b""):
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(COMPLETION)).encode()
                + b"\r\n\r\n"
                + COMPLETION
            )
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        if self.ticker is None:
            for i in range(self.chunks):
                self.transport.write(_chunked(sse_chunk(i)))
            self.transport.write(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        else:
            assert self.ticker is not None
            self.ticker.add(self.transport)


async def serve_upstream(port: int, chunks: int = 32, interval: float = 0.0) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    ticker = Ticker(chunks, interval) if interval > 0 else None
    return await loop.create_server(
        lambda: UpstreamProtocol(chunks, ticker), "127.0.0.1", port, backlog=16384
    )


def _serve_forever(cpu: int | None, start: Callable[[], Awaitable[asyncio.AbstractServer]]) -> None:
    import uvloop

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def main() -> None:
        server = await start()
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def run_upstream(port: int, chunks: int, interval: float, cpu: int | None) -> None:
    """Process entry point (multiprocessing): serve forever."""
    _serve_forever(cpu, lambda: serve_upstream(port, chunks, interval))


class SinkProtocol(UpstreamProtocol):
    """An HTTP/1.1 sink: answers every request 200 with an empty body once its body is in (an OTLP/HTTP
    collector that keeps nothing, for measuring what exporting spans costs the sender)."""

    def __init__(self) -> None:
        super().__init__(0)

    def respond(self, path: str, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        )


def run_sink(port: int, cpu: int | None) -> None:
    """Process entry point (multiprocessing): an HTTP sink on 127.0.0.1:port, forever."""

    async def start() -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(SinkProtocol, "127.0.0.1", port)

    _serve_forever(cpu, start)


class _RelaySide(asyncio.Protocol):
    """One side of a byte relay: what it receives is written to its peer, unparsed."""

    def __init__(self, peer: _RelaySide | None = None) -> None:
        self.peer, self.transport, self.pending = peer, None, []  # type: ignore[var-annotated]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)  # type: ignore[attr-defined]
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()  # type: ignore[attr-defined]


async def serve_relay(port: int, upstream_port: int) -> asyncio.AbstractServer:
    """The floor of any Python proxy here: each client connection gets its own upstream connection and bytes
    are copied both ways unparsed: the same two reads and two writes per request as the gateway makes, and
    nothing between them."""
    loop = asyncio.get_running_loop()

    def client_side() -> _RelaySide:
        client = _RelaySide()

        async def connect() -> None:
            _, up = await loop.create_connection(lambda: _RelaySide(client), "127.0.0.1", upstream_port)
            client.peer = up
            for data in client.pending:
                up.transport.write(data)  # type: ignore[attr-defined]
            client.pending.clear()

        loop.create_task(connect())
        return client

    return await loop.create_server(client_side, "127.0.0.1", port, backlog=16384)


def run_relay(port: int, upstream_port: int, cpu: int | None = None) -> None:
    """Process entry point: relay forever."""
    _serve_forever(cpu, lambda: serve_relay(port, upstream_port))


def asgi_upstream(chunks: int) -> object:
    """The same fast upstream as an ASGI app for uvicorn (httptools, uvloop): how a Python engine server such as
    vLLM's (FastAPI on uvicorn) meets its clients. A stream's chunks go out in one body message."""
    stream_body = b"".join(sse_chunk(i) for i in range(chunks)) + b"data: [DONE]\n\n"
    models = b'{"object":"list","data":[{"id":"m","object":"model"}]}'

    async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        if scope["path"].endswith("/models") or scope["path"] == "/health":
            data, ctype = models, b"application/json"
        elif b'"stream":true' in body.replace(b" ", b""):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": stream_body})
            return
        else:
            data, ctype = COMPLETION, b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


def run_asgi_upstream(port: int, chunks: int, cpu: int | None) -> None:
    """Process entry point (multiprocessing): uvicorn serving ``asgi_upstream`` forever."""
    import uvicorn

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    uvicorn.run(
        asgi_upstream(chunks),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        backlog=16384,
    )


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int | str, int] = field(default_factory=dict)  # HTTP status, or how a connection failed
    elapsed: float = 0.0


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


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
        n = int(lower[i + 15 : lower.find(b"\r\n", i)].strip()) if i >= 0 else 0
        await reader.readexactly(n)
        res.ttfts.append(time.perf_counter() - t0)
    if status != 200:
        res.errors += 1


async def load(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    read_timeout: float = 120.0,
) -> Result:
    res = Result()
    req = request_bytes(host, port, path, body, headers)
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        except OSError:
            res.errors += 1
            return
        try:
            while time.perf_counter() < deadline:
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


class _HeldStream(asyncio.Protocol):
    """One streaming request on its own connection; notes the first body byte and the final chunk, parses
    nothing in between (so the load generator costs little per token)."""

    def __init__(self, req: bytes, res: Result, done: asyncio.Future[None]) -> None:
        self.req, self.res, self.done = req, res, done
        self.t0 = time.perf_counter()
        self.head = b""
        self.body_seen = False
        self.tail = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.t0 = time.perf_counter()
        transport.write(self.req)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.body_seen:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = int(self.head[9:12])
            self.res.statuses[status] = self.res.statuses.get(status, 0) + 1
            data = self.head[end + 4 :]
            self.body_seen = True
            if status != 200:
                self._finish(ok=False)
                return
        if data and not self.tail:
            self.res.ttfts.append(time.perf_counter() - self.t0)
        self.tail = (self.tail + data)[-5:]
        if self.tail == b"0\r\n\r\n":
            self._finish(ok=True)

    def _finish(self, ok: bool) -> None:
        if self.done.done():
            return
        if ok:
            self.res.latencies.append(time.perf_counter() - self.t0)
        else:
            self.res.errors += 1
        self.done.set_result(None)
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.res.errors += 1
            self.res.statuses["lost"] = self.res.statuses.get("lost", 0) + 1
            self.done.set_result(None)


async def hold_streams(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    streams: int,
    ramp: float,
    timeout: float,
) -> Result:
    """Open ``streams`` streaming requests, one per connection, evenly over ``ramp`` seconds (users arrive;
    they do not all click in the same millisecond), and wait until every one has ended or ``timeout``.

    Connections come from 127.0.0.2-127.0.0.9 in turn: tens of thousands of connections to one port from one
    address (with the TIME_WAIT of an earlier phase) would exhaust the ephemeral ports of a single source."""
    loop = asyncio.get_running_loop()
    sources = [f"127.0.0.{i}" for i in range(2, 10)]
    res = Result()
    req = request_bytes(host, port, path, body, headers)
    futures: list[asyncio.Future[None]] = []

    async def open_one(source: str) -> None:
        done = loop.create_future()
        futures.append(done)
        try:
            await loop.create_connection(
                lambda: _HeldStream(req, res, done), host, port, local_addr=(source, 0)
            )
        except OSError as exc:
            res.errors += 1
            res.statuses[f"connect {exc.errno}"] = res.statuses.get(f"connect {exc.errno}", 0) + 1
            done.set_result(None)

    start = time.perf_counter()
    opening = []
    for i in range(streams):
        delay = start + ramp * i / streams - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        opening.append(loop.create_task(open_one(sources[i % len(sources)])))
    await asyncio.gather(*opening)
    _, pending = await asyncio.wait(futures, timeout=max(1.0, timeout - (time.perf_counter() - start)))
    if pending:  # still streaming at the timeout: counted once here, not again as lost when the loop closes
        for f in pending:
            f.set_result(None)
        res.errors += len(pending)
        res.statuses["open at timeout"] = len(pending)
    res.elapsed = time.perf_counter() - start
    return res


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process and its live descendants have used (from /proc): servers such as
    granian run their workers as child processes."""
    from pathlib import Path

    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stats[int(d.name)] = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended while we looked
                continue
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo.extend(c for c, f in stats.items() if int(f[1]) == p and c not in tree)
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


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


# The chart's operators in the audit log: their ServiceAccount, and the pod and token its pod-bound tokens name.
OPERATOR_USER = "system:serviceaccount:llmfleet-system:llmfleet"
POD_EXTRA = "authentication.kubernetes.io/pod-name"
TOKEN_EXTRA = (
    "authentication.kubernetes.io/credential-id"  # one per token: a restarted container gets another
)


def operator_writes(
    audit_log: Path, since: float, until: float = float("inf"), leases: bool = False
) -> list[tuple[float, str, str]]:
    """(time, writer, what) of every successful write the chart's operators made in [since, until], leases aside
    (with ``leases``: only their lease writes: acquiring and renewing), in time order. Tokens are bound to their pods (as a kubelet's are), so the log names the pod and the token: a
    writer is "pod/credential-id" (a container restarted in the same pod is another writer)."""
    out = []
    with open(audit_log) as f:
        for line in f:
            if OPERATOR_USER not in line:
                continue
            ev = json.loads(line)
            user, ref = ev.get("user") or {}, ev.get("objectRef") or {}
            if ev.get("stage") != "ResponseComplete" or ev.get("verb") in ("get", "list", "watch"):
                continue
            if user.get("username") != OPERATOR_USER or (ref.get("resource") == "leases") != leases:
                continue
            if (ev.get("responseStatus") or {}).get("code", 500) >= 400:
                continue
            t = datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if since <= t <= until:
                extra = user.get("extra") or {}
                writer = "/".join([(extra.get(POD_EXTRA) or ["?"])[0], *(extra.get(TOKEN_EXTRA) or [])])
                out.append((t, writer, f"{ev['verb']} {ref.get('resource')}/{ref.get('name')}"))
    return sorted(out)


def max_writers(writes: list[tuple[float, str, str]], window: float = 2.0) -> int:
    """The most distinct writers within any ``window`` seconds: 1 when leader election holds."""
    return max((len({w for t2, w, _ in writes if t <= t2 < t + window}) for t, _, _ in writes), default=0)
