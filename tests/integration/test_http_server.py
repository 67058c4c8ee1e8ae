"""The gateway's HTTP/1.1 server (gateway.http) on a real loopback socket, with small ASGI apps: framing,
keep-alive, pipelining, limits, errors, disconnects, back-pressure and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from llmfleet.gateway.http import MAX_HEAD_BYTES, HttpServer
from tests.integration.servers import free_port

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "code": status}}).encode()


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the method, path, query and body it got; `?sleep=S` waits S seconds first."""
    msg = await receive()
    query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if "=" in p)
    if "sleep" in query:
        await asyncio.sleep(float(query["sleep"]))
    body = json.dumps(
        {"method": scope["method"], "path": scope["path"], "body": msg["body"].decode()}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def started(app: App, **kw: Any) -> tuple[HttpServer, asyncio.Event, asyncio.Task[None], int]:
    port = free_port()
    grace = kw.pop("grace", 5.0)
    server = HttpServer(app, max_body=kw.pop("max_body", 1000), error_body=error_body, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve("127.0.0.1", port, stop=stop, grace=grace))
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.01)
    return server, stop, task, port


async def read_response(r: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await r.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if line)}
    if "content-length" in headers:
        body = await r.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await r.readuntil(b"\r\n")).strip(), 16)
            chunk = await r.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = await r.read()
    return status, headers, body


def post(path: str, body: bytes = b"{}", extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    async def go() -> None:
        server, stop, task, port = await started(echo)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(post("/a?sleep=0.2", b"first") + post("/b%20c", b"second"))  # the slow one first, one write
        first, second = await read_response(r), await read_response(r)
        assert json.loads(first[2])["body"] == "first" and json.loads(second[2]) == {
            "method": "POST",
            "path": "/b c",
            "body": "second",
        }
        w.write(post("/again", b"third"))  # the same connection still serves
        assert json.loads((await read_response(r))[2])["body"] == "third"
        w.close()
        stop.set()
        await task

    run(go())


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read() -> None:
    async def go() -> None:
        seen: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(scope["path"])
            await echo(scope, receive, send)

        server, stop, task, port = await started(app, max_body=100)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")  # the body never comes
        status, headers, body = await read_response(r)
        assert status == 413 and "5000" in json.loads(body)["error"]["message"]
        assert headers.get("connection") == "close" and await r.read() == b""
        r, w = await asyncio.open_connection("127.0.0.1", port)  # a chunked body that grows past the limit
        w.write(
            b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"40\r\n"
            + b"x" * 64
            + b"\r\n"
            + b"40\r\n"
            + b"y" * 64
            + b"\r\n0\r\n\r\n"
        )
        assert (await read_response(r))[0] == 413
        assert seen == []
        stop.set()
        await task

    run(go())


def test_expect_100_continue_a_head_too_large_and_garbage() -> None:
    async def go() -> None:
        server, stop, task, port = await started(echo)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert await r.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        w.write(b"hi")
        assert json.loads((await read_response(r))[2])["body"] == "hi"
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n")
        assert (await read_response(r))[0] == 431
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"THIS IS NOT HTTP\r\n\r\n")
        status, _, body = await read_response(r)
        assert status == 400 and "Malformed" in json.loads(body)["error"]["message"]
        stop.set()
        await task

    run(go())


def test_app_failures_answer_500_and_bad_headers_never_reach_the_wire() -> None:
    async def go() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            if scope["path"] == "/split":
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"x-id", b"a\r\nset-cookie: evil=1")],
                    }
                )
            raise ValueError("boom")

        server, stop, task, port = await started(app)
        for path in ("/boom", "/split"):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(post(path))
            status, headers, body = await read_response(r)
            assert status == 500 and "set-cookie" not in headers and b"evil" not in body
        stop.set()
        await task

    run(go())


def test_a_client_that_leaves_is_reported_to_the_app_at_once() -> None:
    async def go() -> None:
        left = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            scope["extensions"]["llmfleet.on_disconnect"](left.set)
            await asyncio.sleep(30)  # an engine that takes long: only the callback can end this

        server, stop, task, port = await started(app, grace=0.5)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(post("/slow"))
        await asyncio.sleep(0.1)
        w.close()
        await asyncio.wait_for(left.wait(), 5)
        stop.set()
        await task

    run(go())


async def stalled_stream(
    app: App,
) -> tuple[asyncio.Event, asyncio.Task[None], tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A server running `app`, and a client that asked for /stream and then read nothing for half a second (its
    writer is returned too: a writer that is collected closes the connection)."""
    _, stop, task, port = await started(app)
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    w.write(post("/stream"))
    await asyncio.sleep(0.5)
    return stop, task, (r, w)


def test_a_slow_reader_holds_the_app_back_instead_of_filling_memory() -> None:
    piece, pieces = b"x" * 65536, 1024  # 64 MiB if nothing pushed back
    sent = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sent
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for _ in range(pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent += 1
        await send({"type": "http.response.body", "body": b""})

    async def go() -> None:
        stop, task, (r, _w) = await stalled_stream(app)
        assert 0 < sent < pieces // 4
        _, _, body = await read_response(r)
        assert len(body) == len(piece) * pieces and sent == pieces
        stop.set()
        await task

    run(go())


def test_idle_connections_close_and_shutdown_lets_in_flight_requests_finish() -> None:
    async def go() -> None:
        server, stop, task, port = await started(echo, keepalive=0.2)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(r.read(), 5) == b""  # closed by the idle timeout
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(post("/slow?sleep=0.5", b"in flight"))
        await asyncio.sleep(0.1)
        stop.set()
        status, headers, body = await read_response(r)
        assert status == 200 and json.loads(body)["body"] == "in flight" and headers["connection"] == "close"
        await task
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(go())


def test_a_request_not_received_in_whole_in_time_gets_408_and_the_connection_closes() -> None:
    async def go() -> None:
        server, stop, task, port = await started(echo, request_timeout=0.3)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(post("/echo", b"complete"))
        status, _, body = await read_response(r)
        assert status == 200 and json.loads(body)["body"] == "complete"  # a whole request is not affected
        w.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")  # and then nothing more
        status, headers, body = await asyncio.wait_for(read_response(r), 5)
        assert status == 408 and "not received in whole" in json.loads(body)["error"]["message"]
        assert await asyncio.wait_for(r.read(), 5) == b""
        stop.set()
        await task

    run(go())


def test_timeouts_can_be_switched_off() -> None:
    async def go() -> None:
        server, stop, task, port = await started(echo, keepalive=0, request_timeout=0)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(post("/echo", b"x"))
        status, _, _ = await read_response(r)
        assert status == 200 and server._sweeper is None  # nothing to sweep for
        stop.set()
        await task

    run(go())


def test_http10_clients_get_a_close_delimited_stream_and_keep_alive_when_they_ask() -> None:
    async def streamer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/fixed":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i in range(3):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def go() -> None:
        server, stop, task, port = await started(streamer)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /fixed HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
        head = (await r.readuntil(b"\r\n\r\n")).lower()
        assert b"connection: keep-alive" in head and await r.readexactly(2) == b"ok"
        w.write(
            b"POST /stream HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        )  # same connection
        data = await asyncio.wait_for(r.read(), 5)  # to the end of the connection
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower()
        assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        stop.set()
        await task

    run(go())


def test_the_direct_writer_frames_pieces_reports_a_full_client_and_calls_back_when_it_drains() -> None:
    """scope["extensions"]["llmfleet.writer"]: the gateway's streaming fast path writes a started body's pieces
    without messages; it learns that the client stopped reading, and when it reads again."""
    piece, pieces = b"y" * 65536, 256  # 16 MiB if nothing pushed back
    log: dict[str, int] = {"written": 0, "refused": 0, "resumed": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        writer = scope["extensions"]["llmfleet.writer"]
        with pytest.raises(RuntimeError):
            writer.write(b"before the start")
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def pump() -> None:  # as a relay's read callback would: write until the client is full, then wait
            while log["written"] < pieces:
                log["written"] += 1
                if not writer.write(piece):
                    log["refused"] += 1
                    writer.on_writable(resumed)
                    return
            done.set_result(None)

        def resumed() -> None:
            log["resumed"] += 1
            pump()

        pump()
        await done
        await send({"type": "http.response.body", "body": b"end"})

    async def go() -> None:
        stop, task, (r, _w) = await stalled_stream(app)
        # Held back: the client's socket and its reader's buffer are full, one callback is waiting.
        assert 0 < log["written"] < pieces // 2 and log["refused"] == log["resumed"] + 1
        _, headers, body = await read_response(r)
        assert headers["transfer-encoding"] == "chunked"
        assert body == piece * pieces + b"end"
        assert log["resumed"] == log["refused"] >= 1
        stop.set()
        await task

    run(go())
