"""The gateway's HTTP/1.1 server: an asyncio protocol on httptools' request parser that runs the gateway's
ASGI application (one worker, uvloop).

Why not uvicorn: measured on bench/gateway.py (non-streaming, concurrency 64, same run, everything else
equal) the gateway cost 107 µs of CPU per request on uvicorn and 90 µs on a first version of this server;
it also writes a response head with its body (one send instead of two) and tells the application of a
client's disconnect by callback instead of a watcher task per request. What it does, and only that
(RFC 9112; the byte-level tests in tests/unit/test_http_protocol.py follow uvicorn's protocol tests):
- keep-alive with an idle timeout (a connection that sends nothing but empty lines stays idle), a 408 for a
  request not received in whole within a time limit, a client that reads nothing of its response for as long
  is cut (one periodic sweep, not a timer per response);
- the request head counted as its bytes arrive, also inside a field that never ends (431), header names and
  values checked (llhttp refuses control characters and bad tokens: tested, not re-checked here, ~1 µs a
  request), exactly one Host in HTTP/1.1, HTTP/1.0 and 1.1 only (505);
- request bodies up to a limit (413, checked on the declared length before reading and while reading);
  `Expect: 100-continue` answered only when that request's body is wanted and only after every response
  before it; trailer fields read and dropped (they never reach the application); an HTTP/1.0 request with
  Transfer-Encoding (framing it cannot keep) and any Upgrade are refused with one 400, then the connection
  closes;
- pipelined requests answered in order, one response each; an application's `connection: close` honoured and
  its Content-Length held to the bytes it sends; at most `max_connections` connections (503 beyond);
- write back-pressure, the response head written together with the first piece of the body, and a graceful
  shutdown (stop accepting, let in-flight requests finish within a grace period, then close what is left).

Extensions for the application: ``scope["extensions"]["llmfleet.on_disconnect"](callback)`` registers a
callback run once if the client goes away before the response is complete; ``scope["extensions"]
["llmfleet.body"]`` is the whole request body (the server reads it, within the limit, before it calls the
application), so the application need not go through ``receive``; ``scope["extensions"]["llmfleet.writer"]``
(`_Cycle.write`, `_Cycle.on_writable`) writes pieces of a started body at once from any callback, with no
message and no task switch, and says when the client stops reading and when it drains: the streaming relay's
fast path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

log = logging.getLogger("llmfleet.gateway.http")

App = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]
ErrorBody = Callable[[int, str], bytes]

MAX_HEAD_BYTES = 64 * 1024  # request line + headers
MAX_PIPELINED = 32  # parsed requests waiting behind the one being answered before reading pauses
HTTP_VERSIONS = ("1.1", "1.0")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status


class _Cycle:
    """One request and its response."""

    __slots__ = (
        "app",
        "body",
        "body_sent",
        "chunked",
        "complete",
        "conn",
        "head",
        "keep_alive",
        "length",
        "on_disconnect",
        "scope",
        "started",
        "task",
    )

    def __init__(
        self, conn: _Connection, scope: dict[str, Any], body: bytes, keep_alive: bool, app: App | None = None
    ) -> None:
        self.conn, self.scope, self.body, self.keep_alive = conn, scope, body, keep_alive
        self.app = app or conn.server.app
        self.body_sent = False
        self.started = False
        self.complete = False
        self.chunked = False
        self.length = -1  # the Content-Length the application declared: the bytes it may still send
        self.head: bytes | None = None  # written with the first piece of the body
        self.on_disconnect: list[Callable[[], None]] = []
        self.task: asyncio.Task[None] | None = None  # held here: the loop keeps only weak references to tasks
        scope["extensions"] = {
            "llmfleet.on_disconnect": self.on_disconnect.append,
            "llmfleet.body": body,
            "llmfleet.writer": self,
        }

    async def receive(self) -> dict[str, Any]:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        conn = self.conn
        if not conn.disconnected and not self.complete:
            await conn.wait_closed()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:  # noqa: C901 - the ASGI send hot path, one frame per message
        conn = self.conn
        if conn.write_paused and not conn.disconnected:
            await conn.drain()
        if conn.disconnected or self.complete:
            return
        if not self.started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message['type']}")
            status = message["status"]
            parts = [_status_line(status)]
            length = False
            headers = message.get("headers", ())
            for name, value in headers:
                if name == b"content-length":
                    length = True
                    self.length = int(value)
                elif name == b"connection" and value.lower() == b"close":
                    self.keep_alive = (
                        False  # said by the application: the connection closes after this response
                    )
                    continue  # written once below
                parts += (name, b": ", value, b"\r\n")
            # No CR or LF inside a name or value (response splitting): the block holds exactly one line end
            # per header and one for the status line, and no CR or LF anywhere else.
            block = b"".join(parts)
            lines = (len(parts) - 1) // 4 + 1
            if block.count(b"\r") != lines or block.count(b"\n") != lines:
                raise RuntimeError("invalid response header")
            self.started = True
            parts = [block]
            http10 = self.scope.get("http_version") == "1.0"
            if not length and status not in (204, 304) and self.scope["method"] != "HEAD":
                if http10:  # no chunked encoding in HTTP/1.0: the body ends when the connection closes
                    self.keep_alive = False
                else:
                    self.chunked = True
                    parts.append(b"transfer-encoding: chunked\r\n")
            if not self.keep_alive or conn.server.closing:
                self.keep_alive = False
                parts.append(b"connection: close\r\n")
            elif http10:  # an HTTP/1.0 client that asked to keep the connection is told it is kept
                parts.append(b"connection: keep-alive\r\n")
            parts.append(b"\r\n")
            self.head = b"".join(parts)
            return
        if message["type"] != "http.response.body":
            raise RuntimeError(f"expected http.response.body, got {message['type']}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            body = b""
        if self.chunked:
            out = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                out += b"0\r\n\r\n"
        else:
            out = body
            if self.length >= 0 and self.scope["method"] != "HEAD":
                self.length -= len(body)
                if self.length < 0 or (not more and self.length > 0):
                    # More or fewer bytes than declared: the client would misread this and every later response.
                    self.complete = True
                    self.on_disconnect.clear()
                    if conn.transport is not None:
                        conn.transport.abort()
                    raise RuntimeError("the response body does not match its Content-Length")
        if self.head is not None:
            out, self.head = self.head + out, None
        if out:
            conn.write(out)
        if not more:
            self.complete = True
            self.on_disconnect.clear()
            conn.response_done(self)

    def write(self, body: bytes) -> bool:
        """One more piece of a started response body of unknown length, written at once (scope extension
        ``llmfleet.writer``): no message, no coroutine, no task switch. A relay calls it from its source's own
        read callback. False while the client takes no more for now (its transport is paused): stop reading the
        source until the callback given to `on_writable` runs. The body ends with an ordinary
        ``http.response.body`` message without ``more_body``."""
        conn = self.conn
        transport = conn.transport
        if conn.disconnected or self.complete or transport is None:
            return True
        if not self.started or self.length >= 0:
            raise RuntimeError("write() needs a started response without a Content-Length")
        if body and self.scope["method"] != "HEAD":
            out = b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else body
            if self.head is not None:
                out, self.head = self.head + out, None
            transport.write(out)
        return not conn.write_paused

    def on_writable(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, when the client next drains what it was sent (or goes away)."""
        self.conn.writable.append(callback)

    def disconnected(self) -> None:
        callbacks = list(self.on_disconnect)
        self.on_disconnect.clear()
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("disconnect callback failed")


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.disconnected = False
        self.write_paused = False
        # Callbacks run once at the next resume_writing or at the connection's loss (drain, _Cycle.on_writable).
        self.writable: list[Callable[[], None]] = []
        self._closed: asyncio.Future[None] | None = None
        self.active: _Cycle | None = None
        self.queue: collections.deque[_Cycle] = collections.deque()
        self.idle_since = 0.0  # loop time since when nothing is in flight or being received; 0 while busy
        self.receiving_since = 0.0  # loop time the request being received began; 0 between requests
        self.reading_paused = False
        self.broken = False  # an error answer is queued: nothing more from this client is read or parsed
        self.in_head = True  # the parser is between messages or inside a request head
        self.heads_done = 0  # request heads completed on this connection
        self.head_pending = 0  # bytes received while inside one head (counted as they arrive)
        self.write_paused_since = 0.0  # loop time the client stopped reading its response; 0 while it reads
        self.continue_pending = False  # a 100 Continue to write once the responses before it are out
        self._reset_request()

    def _reset_request(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.declared: bytes | None = None  # Content-Length as sent
        self.expect = False  # Expect: 100-continue
        self.hosts = 0  # Host fields
        self.chunked_te = False  # Transfer-Encoding was sent
        self.continue_pending = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.idle_since = self.loop.time()
        if len(self.server.connections) >= self.server.max_connections:
            body = self.server.error_body(
                503, "The gateway holds as many connections as it may; retry shortly."
            )
            transport.write(
                b"".join(
                    (
                        _status_line(503),
                        b"content-type: application/json\r\ncontent-length: ",
                        str(len(body)).encode(),
                        b"\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
                        body,
                    )
                )
            )
            self.broken = True
            transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self.server.connections.discard(self)
        for cycle in ([self.active] if self.active else []) + list(self.queue):
            cycle.disconnected()
        self._run_writable()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return
        in_head, heads = self.in_head, self.heads_done
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "Protocol upgrades are not supported.")
        except httptools.HttpParserError as exc:
            self._reject(400, f"Malformed HTTP request: {exc}")
        if self.in_head and not self.broken:
            # httptools hands over a header only once it is complete: bytes are counted here as they arrive, so a
            # name or value that never ends is refused too. A head that began inside this read is counted from
            # the next one (at most one read, 256 KiB, goes uncounted).
            self.head_pending = self.head_pending + len(data) if in_head and heads == self.heads_done else 0
            if self.head_pending > MAX_HEAD_BYTES:
                self._reject(431, "Request header fields too large.")

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_since = self.loop.time()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_paused_since = 0.0
        self._run_writable()

    def _run_writable(self) -> None:
        callbacks, self.writable = self.writable, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("writable callback failed")

    async def drain(self) -> None:
        w: asyncio.Future[None] = self.loop.create_future()
        self.writable.append(lambda: None if w.done() else w.set_result(None))
        await w

    async def wait_closed(self) -> None:
        if self._closed is None:
            self._closed = self.loop.create_future()
        await asyncio.shield(self._closed)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.disconnected:
            self.transport.write(data)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._reset_request()
        self.idle_since = 0.0
        self.receiving_since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        if self.broken:
            return
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD_BYTES:
            self._reject(431, "Request header fields too large.")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.broken:
            return
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD_BYTES:
            self._reject(431, "Request header fields too large.")
            return
        if not self.in_head:
            return  # a trailer field: never routing, auth or anything else the application reads
        name = name.lower()
        self.headers.append((name, value))
        if name == b"content-length":
            self.declared = value
        elif name == b"host":
            self.hosts += 1
        elif name == b"transfer-encoding":
            self.chunked_te = True
        elif name == b"expect":
            self.expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.heads_done += 1
        self.head_pending = 0
        if self.broken:
            return
        parser = self.parser
        version = parser.get_http_version()
        if version not in HTTP_VERSIONS:
            self._reject(505, f"HTTP/{version} is not supported; send HTTP/1.1.")
            return
        if parser.should_upgrade():
            self._reject(400, "Protocol upgrades are not supported.")
            return
        if version == "1.0" and self.chunked_te:
            self._reject(400, "An HTTP/1.0 request cannot use Transfer-Encoding.")
            return
        if self.hosts != 1 and (version == "1.1" or self.hosts > 1):
            self._reject(400, "An HTTP/1.1 request must have exactly one Host header.")
            return
        declared = self.declared
        if declared is not None and declared.isdigit() and int(declared) > self.server.max_body:
            self._reject(
                413,
                f"Request body of {int(declared)} bytes exceeds the limit of {self.server.max_body} bytes.",
            )
            return
        if self.expect and (self.chunked_te or (declared is not None and declared != b"0")):
            if self.active is None and not self.queue:
                self.write(_CONTINUE)
            else:  # after the responses before it, never inside one
                self.continue_pending = True

    def on_body(self, body: bytes) -> None:
        if self.broken:
            return
        self.body_size += len(body)
        if self.body_size > self.server.max_body:
            self._reject(413, f"Request body exceeds the limit of {self.server.max_body} bytes.")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.receiving_since = 0.0
        self.in_head = True
        self.continue_pending = False
        if self.broken:
            return
        url = self.url
        if b"?" in url or b"%" in url or b"#" in url or not url.startswith(b"/"):
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        else:
            raw_path, query = url, b""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": self.parser.get_http_version(),
            "method": self.parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")) if b"%" in raw_path else raw_path.decode("latin-1"),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": self.headers,
            "server": self.server.sockname,
            "client": None,
        }
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self._enqueue(_Cycle(self, scope, body, self.parser.should_keep_alive()))

    # ------------------------------------------------------------------ cycles

    def _enqueue(self, cycle: _Cycle) -> None:
        if self.active is None:
            self._start(cycle)
        else:
            self.queue.append(cycle)
            if len(self.queue) >= MAX_PIPELINED and self.transport is not None and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()

    def _start(self, cycle: _Cycle) -> None:
        self.active = cycle
        self.server.running += 1
        cycle.task = self.loop.create_task(self._run(cycle))

    async def _run(self, cycle: _Cycle) -> None:
        try:
            await cycle.app(cycle.scope, cycle.receive, cycle.send)
        except Exception:
            log.exception("the application failed on %s %s", cycle.scope["method"], cycle.scope["path"])
            if not cycle.started and not self.disconnected:
                cycle.keep_alive = False
                await cycle.send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await cycle.send(
                    {
                        "type": "http.response.body",
                        "body": self.server.error_body(500, "Internal server error."),
                    }
                )
        finally:
            self.server.running -= 1
        if not cycle.complete and not self.disconnected:
            log.error("the application returned without completing the response to %s", cycle.scope["path"])
            if self.transport is not None:
                self.transport.close()

    def response_done(self, cycle: _Cycle) -> None:
        if self.active is cycle:
            self.active = None
        if not cycle.keep_alive or self.server.closing:
            if self.transport is not None:
                self.transport.close()
            return
        if self.queue:
            self._start(self.queue.popleft())
            if (
                self.reading_paused
                and not self.broken
                and len(self.queue) < MAX_PIPELINED // 2
                and self.transport
            ):
                self.reading_paused = False
                self.transport.resume_reading()
        elif self.continue_pending:  # the request being received waited for the responses before it
            self.continue_pending = False
            self.write(_CONTINUE)
        elif not self.receiving_since:
            self.idle_since = self.loop.time()

    def _reject(self, status: int, message: str) -> None:
        """Answer with an error (in order, after the requests before it), read nothing more, then close."""
        if self.broken:
            return
        self.broken = True
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        body = self.server.error_body(status, message)

        async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        self._enqueue(
            _Cycle(self, {"type": "http", "method": "-", "path": "", "headers": []}, b"", False, answer)
        )


def default_max_connections() -> int:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(16, (soft - 256) // 2) if soft != resource.RLIM_INFINITY else 65536


class HttpServer:
    def __init__(
        self,
        app: App,
        *,
        max_body: int,
        error_body: ErrorBody,
        keepalive: float = 5.0,
        request_timeout: float = 60.0,
        max_connections: int | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.app, self.max_body, self.error_body, self.keepalive = app, max_body, error_body, keepalive
        self.request_timeout = request_timeout
        # Each client connection may hold an engine connection too: by default half the descriptors the process
        # may open, less a reserve, so that accept() never fails for lack of them.
        self.max_connections = max_connections if max_connections is not None else default_max_connections()
        self.on_startup, self.on_shutdown = on_startup, on_shutdown
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.connections: set[_Connection] = set()
        self.running = 0  # requests whose application call has not returned
        self.closing = False
        self.sockname: tuple[str, int] | None = None
        # Timeouts are kept by one sweep over the connections rather than a timer per response (uvloop's
        # call_later + cancel cost 2.7 µs, ~4% of the gateway's CPU per request): an idle connection goes
        # between `keepalive` and `keepalive` + `_sweep_every` after its last response, and a request that is
        # not in whole `request_timeout` after its first byte (a slow or stalled client) gets a 408.
        self._sweep_every = min([1.0, *(t / 4 for t in (keepalive, request_timeout) if t > 0)])
        self._sweeper: asyncio.TimerHandle | None = None

    async def serve(
        self,
        host: str,
        port: int,
        *,
        backlog: int = 16384,
        grace: float = 55.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Serve until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully."""
        self.loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.add_signal_handler(sig, stop.set)
        if self.on_startup is not None:
            await self.on_startup()
        server = await self.loop.create_server(lambda: _Connection(self), host, port, backlog=backlog)
        sock = server.sockets[0].getsockname()
        self.sockname = (sock[0], sock[1])
        if self.keepalive > 0 or self.request_timeout > 0:
            self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)
        await stop.wait()
        await self.shutdown(server, grace)

    def _sweep(self) -> None:
        now = self.loop.time()
        if self.keepalive > 0:
            horizon = now - self.keepalive
            for conn in [c for c in self.connections if 0 < c.idle_since <= horizon]:
                if conn.active is None and not conn.queue and conn.transport is not None:
                    conn.transport.close()
        if self.request_timeout > 0:
            horizon = now - self.request_timeout
            for conn in [c for c in self.connections if 0 < c.receiving_since <= horizon and not c.broken]:
                conn._reject(408, f"The request was not received in whole within {self.request_timeout:g} s.")
            # A client that has read nothing of its response for as long: cut (its upstream request is aborted).
            for conn in [c for c in self.connections if 0 < c.write_paused_since <= horizon]:
                if conn.transport is not None:
                    conn.transport.abort()
        self._sweeper = None if self.closing else self.loop.call_later(self._sweep_every, self._sweep)

    async def shutdown(self, server: asyncio.AbstractServer, grace: float) -> None:
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        server.close()
        for conn in list(self.connections):  # idle keep-alive connections go at once
            if conn.active is None and not conn.queue and conn.transport is not None:
                conn.transport.close()
        deadline = self.loop.time() + grace
        # A 50 ms poll, once, at shutdown: an Event set by every finishing request would cost the hot path.
        while self.running and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.connections):  # past the grace period: whatever is left is cut
            if conn.transport is not None:
                conn.transport.abort()
        if self.on_shutdown is not None:
            await self.on_shutdown()
