"""The keep-alive HTTP/1.1 client from the gateway to its self-hosted engines: asyncio protocols with
httptools' response parser, one pool of idle connections per engine.

Why not aiohttp here: on the bench (bench/gateway.py, non-streaming, concurrency 64) aiohttp's client was a
third of the gateway's CPU per request, most of it in building request/response objects the gateway does not
use. Engines are plain HTTP inside the cluster, so this client does only what that needs: one write per
request, status and headers, the body as it arrives (de-chunked by httptools), back-pressure on slow
readers, a total deadline per request, and a connection that is closed the moment the client goes away
(vLLM aborts a request whose connection closes). The managed API (TLS, proxies) keeps aiohttp.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

# A reader slower than its stream: stop reading from the engine above this many buffered bytes.
HIGH_WATER = 256 * 1024
# Engines behind uvicorn (vLLM) close idle keep-alive connections after 5 s; do not reuse older ones.
IDLE_SECONDS = 4.0


class UpstreamError(ConnectionError):
    """The engine connection failed or closed before the response was complete."""


class Response:
    """One response: status and headers once the head has arrived, then the body as it comes."""

    __slots__ = (
        "_buf",
        "_buffered",
        "_conn",
        "_deadline",
        "_done",
        "_error",
        "_loop",
        "_pool",
        "_paused",
        "_sink",
        "_waiter",
        "aborted",
        "got_bytes",
        "headers",
        "status",
    )

    def __init__(self, conn: _Conn, pool: Pool, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._conn: _Conn | None = conn
        self._pool: Pool | None = pool  # until the response ends: the pool's deadline sweep watches it
        self._loop = loop
        self._deadline = deadline
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.got_bytes = (
            False  # any byte of the response arrived (a reused connection that died before: retry)
        )
        self.aborted = False  # closed by the gateway (the client left): never retried
        self._buf: list[bytes] = []
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], None] | None = None  # pipe mode: the body's reader, called per read
        self._paused = False  # reading paused by the pipe's reader

    @property
    def content_type(self) -> bytes:
        return self.headers.get(b"content-type", b"application/json")

    # --------------------------------------------------------------- fed by the connection

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self.pause_reading()  # until readany takes the buffer, or a pipe or read() takes over
        self._wake()

    def _flush(self) -> None:
        """Pipe mode: what has arrived goes to the sink as one piece. A sink that raises cuts the response."""
        buf, sink = self._buf, self._sink
        if buf and sink is not None:
            data = buf[0] if len(buf) == 1 else b"".join(buf)
            buf.clear()
            self._buffered = 0
            try:
                sink(data)
            except Exception as exc:  # the reader's own failure: the connection cannot be trusted any more
                self._cut(exc)

    def _finish(self, error: BaseException | None) -> None:
        if self._done:
            return
        self._flush()  # a pipe gets the body's last bytes before its end
        if self._done:  # the sink failed and cut the response
            return
        self._done = True
        self._error = error
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._inflight.discard(self)
        self._wake()

    # --------------------------------------------------------------- read by the gateway

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        await self._waiter

    async def head(self) -> None:
        """Wait for status and headers."""
        while not self.status:
            if self._done:
                raise self._error or UpstreamError("the engine closed the connection before answering")
            await self._wait()

    async def readany(self) -> bytes:
        """The next piece of the body (as much as has arrived), b"" at its end; raises if it was cut."""
        while not self._buf:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            await self._wait()
        buf = self._buf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        self._buf = []
        self._buffered = 0
        self.resume_reading()
        return data

    async def read(self) -> bytes:
        """The whole body (piped into one list: a body past the high-water mark is read on, not paused)."""
        parts: list[bytes] = []
        self.pipe(parts.append)
        await self.ended()
        return b"".join(parts)

    def pipe(self, sink: Callable[[bytes], None]) -> None:
        """From now on the body goes to ``sink`` from the connection's own read callback, without waking a task
        per piece: first what has arrived since the last read, then each read's pieces joined into one call. The
        sink may pause and resume reading (back-pressure from its own destination); `ended` waits for the end.
        Measured on bench/scale.py (a token every 25 ms per stream): see gateway.app's module docstring."""
        self._sink = sink
        self.resume_reading()  # if the buffer reached the high-water mark (_feed), the pipe reads on
        self._flush()

    async def ended(self) -> None:
        """Pipe mode: return at the end of the body; raises if it was cut."""
        while not self._done:
            await self._wait()
        if self._error is not None:
            raise self._error

    def pause_reading(self) -> None:
        """Read nothing more from the engine until `resume_reading` (the reader's destination or, without a
        reader yet, the buffer is full)."""
        conn = self._conn
        if conn is not None and conn.transport is not None and not self._paused:
            self._paused = True
            conn.transport.pause_reading()

    def resume_reading(self) -> None:
        conn = self._conn
        if conn is not None and conn.transport is not None and self._paused:
            self._paused = False
            conn.transport.resume_reading()

    def _cut(self, error: BaseException) -> None:
        """Drop the connection (the engine sees it close and aborts the request) and end the response with
        `error`, unless it had already ended."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.drop()
        self._finish(self._error or error)

    def close(self) -> None:
        """Drop the connection now (the engine sees it close and aborts the request)."""
        if not self._done:
            self.aborted = True
        self._cut(UpstreamError("closed by the gateway"))

    def release(self) -> None:
        """Done with the response: a complete one hands its connection back to the pool, anything else closes it."""
        conn = self._conn
        if conn is None:
            return
        if self._done and self._error is None and conn.reusable():
            self.resume_reading()  # an idle connection must see the engine close it
            self._conn = None
            conn.to_pool()
        else:
            self._cut(UpstreamError("released before the end of the body"))


class _Conn(asyncio.Protocol):
    __slots__ = ("idle_since", "keep_alive", "key", "parser", "pool", "resp", "transport")

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self.pool, self.key = pool, key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.idle_since = 0.0
        self.keep_alive = False  # read at the end of the head: the parser forgets it once the message ends

    # asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:  # bytes on an idle connection: nothing can be trusted on it any more
            self.drop()
            return
        resp.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            resp._cut(UpstreamError(f"malformed response from the engine: {exc}"))
        if resp._sink is not None:
            resp._flush()

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        resp, self.resp = self.resp, None
        if resp is None:  # an idle connection the engine closed (keep-alive timeout, pod gone): forget it
            idle = self.pool._idle.get(self.key)
            if idle is not None and self in idle:
                idle.remove(self)
                if not idle:
                    del self.pool._idle[self.key]
        if resp is not None and not resp._done:
            if (
                resp.status
                and b"content-length" not in resp.headers
                and b"transfer-encoding" not in resp.headers
            ):
                resp._finish(None)  # a body delimited by the connection's end
            else:
                resp._finish(
                    UpstreamError(f"the engine closed the connection{': ' + str(exc) if exc else ''}")
                )

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.resp is not None:
            self.resp.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.resp is not None:
            self.resp.status = self.parser.get_status_code()
            self.resp._wake()

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is not None:
            if resp._sink is not None:  # pipe mode: handed over once the whole read is parsed
                resp._buf.append(body)
            else:
                resp._feed(body)

    def on_message_complete(self) -> None:
        if self.resp is not None:
            self.resp._finish(None)

    # pool side
    def reusable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and self.keep_alive

    def to_pool(self) -> None:
        self.resp = None
        self.idle_since = time.monotonic()
        self.pool._idle.setdefault(self.key, []).append(self)

    def drop(self) -> None:
        t, self.transport = self.transport, None
        if t is not None:
            t.abort()


class Pool:
    """Idle keep-alive connections per engine; a request takes the most recently used one or opens one."""

    def __init__(self, timeout: float = 600.0, connect_timeout: float = 2.0) -> None:
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}
        self.opened = 0  # connections opened so far (tests check that keep-alive holds)
        # Deadlines: one timer sweeps the requests in flight, instead of a timer per request (uvloop's
        # call_later + cancel cost 2.7 µs, measured: ~4% of the gateway's CPU per request). A request is cut
        # between `timeout` and `timeout` + `_sweep_every` after it was sent.
        self._inflight: set[Response] = set()
        self._sweep_every = min(1.0, timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        # Bound on first use. asyncio.get_running_loop() makes a getpid() syscall each time (CPython checks for a
        # fork): measured twice per request with strace before the pool kept its loop.
        self.loop: asyncio.AbstractEventLoop | None = None

    def _target(self, base: str) -> tuple[tuple[str, int], bytes]:
        t = self._targets.get(base)
        if t is None:
            u = urlsplit(base)
            if u.scheme != "http" or not u.hostname:
                raise ValueError(f"engine URL must be http://host:port, got {base!r}")
            # netloc keeps an IPv6 address in its brackets, as the Host header needs it
            t = self._targets[base] = ((u.hostname, u.port or 80), u.netloc.encode("idna"))
        return t

    def _checkout(self, key: tuple[str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if (
                conn.transport is not None
                and not conn.transport.is_closing()
                and now - conn.idle_since < IDLE_SECONDS
            ):
                return conn
            conn.drop()
        return None

    async def _open(self, key: tuple[str, int]) -> _Conn:
        assert self.loop is not None
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Conn(self, key), key[0], key[1]), self.connect_timeout
            )
        except TimeoutError:
            raise UpstreamError(f"connect to {key[0]}:{key[1]} timed out") from None
        self.opened += 1
        return conn

    def _send(self, conn: _Conn, request: bytes) -> Response:
        """Write the request and start its total deadline (past it the connection is dropped and the reader
        gets TimeoutError). A connection reaches here only after a complete response, so its parser is clean."""
        loop = self.loop
        assert loop is not None and conn.transport is not None
        resp = conn.resp = Response(conn, self, loop, loop.time() + self.timeout)
        conn.transport.write(request)
        self._inflight.add(resp)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        return resp

    def _sweep(self) -> None:
        """Expire the responses past their deadline; re-armed while any request is in flight."""
        assert self.loop is not None
        now = self.loop.time()
        for resp in [r for r in self._inflight if r._deadline <= now]:
            self._expire(resp)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep) if self._inflight else None

    def _expire(self, resp: Response) -> None:
        resp._cut(TimeoutError(f"no complete answer from the engine within {self.timeout:g} s"))

    async def post(
        self,
        base: str,
        path: str,
        body: bytes,
        request_id: str,
        sent: Callable[[Response], None] | None = None,
        traceparent: bytes | None = None,
    ) -> Response:
        """Send a JSON POST and return once status and headers are in; `sent` gets the response as soon as the
        request is written (whoever holds it may close it). Raises UpstreamError (an OSError) or TimeoutError;
        a kept-alive connection that turns out dead before any answer is replaced once."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        key, host = self._target(base)
        request = b"".join(
            (
                b"POST ",
                path.encode(),
                b" HTTP/1.1\r\nHost: ",
                host,
                b"\r\nContent-Type: application/json\r\nX-Request-Id: ",
                request_id.encode("latin-1"),
                b"" if traceparent is None else b"\r\ntraceparent: " + traceparent,
                b"\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        conn = self._checkout(key)
        if conn is not None:
            resp = self._send(conn, request)
            if sent is not None:
                sent(resp)
            try:
                await resp.head()
                return resp
            except UpstreamError:
                stale = not resp.got_bytes and not resp.aborted
                resp.close()
                if not stale:
                    raise
            except BaseException:
                resp.close()
                raise
        resp = self._send(await self._open(key), request)
        if sent is not None:
            sent(resp)
        try:
            await resp.head()
        except BaseException:
            resp.close()
            raise
        return resp

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self._idle.values():
            for c in conns:
                c.drop()
        self._idle.clear()
