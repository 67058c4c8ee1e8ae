"""The gateway's engine client (gateway.upstream) against real sockets: the engine-sim for the happy paths,
small scripted asyncio servers on loopback for the failures a real engine shows only now and then."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest

from llmfleet.gateway.upstream import HIGH_WATER, Pool, Response, UpstreamError
from tests.integration.servers import engine, free_port

CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8})
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await r.readexactly(length)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


async def scripted(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    """A server that numbers its connections and lets `handler` script each one."""
    count: list[int] = []

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        count.append(1)
        try:
            await handler(r, w, len(count))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    port = free_port()
    server = await asyncio.start_server(on_conn, "127.0.0.1", port)
    return server, f"http://127.0.0.1:{port}", count


@pytest.fixture(scope="module")
def sim():
    s = engine()
    yield s
    s.stop()


def test_keeps_one_connection_alive_across_sequential_requests(sim) -> None:
    async def go() -> None:
        pool = Pool(timeout=30)
        for i in range(20):
            resp = await pool.post(sim.url, "/v1/chat/completions", CHAT, f"req-{i}")
            body = orjson.loads(await resp.read())
            resp.release()
            assert resp.status == 200 and body["usage"]["completion_tokens"] == 8
        assert pool.opened == 1
        pool.close()

    asyncio.run(go())


def test_streams_arrive_piece_by_piece_de_chunked() -> None:
    stream = orjson.dumps({**orjson.loads(CHAT), "stream": True, "max_tokens": 12})
    sim = engine("m", 1.0)  # real-time pacing: the stream lasts several inter-token latencies

    async def go() -> None:
        pool = Pool(timeout=30)
        resp = await pool.post(sim.url, "/v1/chat/completions", stream, "s")
        assert resp.status == 200 and resp.content_type.startswith(b"text/event-stream")
        pieces = [await resp.readany()]
        assert not resp._done  # the first piece is handed over while the engine is still generating
        while piece := await resp.readany():
            pieces.append(piece)
        resp.release()
        text = b"".join(pieces)
        assert text.count(b"data: ") == 1 + 12 + 1 and text.rstrip().endswith(
            b"data: [DONE]"
        )  # role, 12 tokens (the last on the finishing chunk, as vLLM sends it), DONE
        assert b"\r\n" not in text.replace(b"\r\n\r\n", b"")  # no chunk-size lines leaked into the body
        resp2 = await pool.post(sim.url, "/v1/chat/completions", CHAT, "after-stream")
        await resp2.read()
        resp2.release()
        assert pool.opened == 1
        pool.close()

    try:
        asyncio.run(go())
    finally:
        sim.stop()


def test_a_kept_alive_connection_that_died_is_replaced_without_failing_the_request() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(ok(b'{"n": %d}' % n))
        await w.drain()
        if n == 1:
            await read_request(r)  # the second request on the first connection: hang up without a byte
            return
        while True:
            await read_request(r)
            w.write(ok(b'{"n": %d}' % n))

    async def go() -> None:
        server, url, count = await scripted(handler)
        pool = Pool(timeout=30)
        answers = []
        for i in range(3):
            resp = await pool.post(url, "/v1/completions", b"{}", str(i))
            answers.append(orjson.loads(await resp.read())["n"])
            resp.release()
        assert answers == [1, 2, 2] and len(count) == 2
        pool.close()
        server.close()

    asyncio.run(go())


def test_a_fresh_connection_that_dies_before_answering_fails_the_request() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)

    async def go() -> None:
        server, url, count = await scripted(handler)
        with pytest.raises(UpstreamError):
            await Pool(timeout=30).post(url, "/v1/completions", b"{}", "x")
        assert len(count) == 1  # not retried: only a reused connection may be stale
        server.close()

    asyncio.run(go())


def test_a_body_cut_short_raises_instead_of_returning_part_of_it() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await w.drain()

    async def go() -> None:
        server, url, _ = await scripted(handler)
        resp = await Pool(timeout=30).post(url, "/v1/completions", b"{}", "x")
        with pytest.raises(UpstreamError):
            await resp.read()
        resp.release()
        server.close()

    asyncio.run(go())


def test_the_total_deadline_drops_an_engine_that_never_answers() -> None:
    async def go() -> None:
        seen_eof = asyncio.Event()

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
            await read_request(r)
            await r.read()  # returns once the client has dropped the connection
            seen_eof.set()

        server, url, _ = await scripted(handler)
        with pytest.raises(TimeoutError):
            await Pool(timeout=0.3).post(url, "/v1/completions", b"{}", "x")
        await asyncio.wait_for(seen_eof.wait(), 10)
        server.close()

    asyncio.run(go())


def test_close_drops_the_connection_so_the_engine_sees_the_client_leave() -> None:
    async def go() -> None:
        gone = asyncio.Event()

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
            await read_request(r)
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"6\r\ndata: \r\n"
            )
            await w.drain()
            await r.read()
            gone.set()

        server, url, _ = await scripted(handler)
        pool = Pool(timeout=30)
        resp = await pool.post(url, "/v1/completions", b"{}", "x")
        assert await resp.readany() == b"data: "
        resp.close()
        await asyncio.wait_for(gone.wait(), 10)
        with pytest.raises(UpstreamError):
            await resp.readany()
        resp.release()
        assert not pool._idle.get(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        server.close()

    asyncio.run(go())


PAYLOAD = bytes(range(256)) * (4 * HIGH_WATER // 256)


async def past_high_water() -> tuple[asyncio.Server, Response]:
    """A response whose body (PAYLOAD: four times the high-water mark) came faster than anyone read it: the
    connection has stopped reading the engine's socket."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(ok(PAYLOAD))
        await w.drain()
        await r.read()

    server, url, _ = await scripted(handler)
    resp = await Pool(timeout=30).post(url, "/v1/completions", b"{}", "x")
    for _ in range(200):
        await asyncio.sleep(0.01)
        if resp._buffered > HIGH_WATER:
            break
    assert resp._conn is not None and resp._conn.transport is not None
    assert not resp._conn.transport.is_reading()
    return server, resp


def test_a_slow_reader_pauses_the_engine_socket_and_still_gets_every_byte() -> None:
    async def go() -> None:
        server, resp = await past_high_water()
        got = b""
        while piece := await resp.readany():
            got += piece
        assert got == PAYLOAD
        resp.release()
        server.close()

    asyncio.run(go())


def test_nothing_listening_is_an_oserror_and_a_bad_url_a_valueerror() -> None:
    async def go() -> None:
        with pytest.raises(OSError):
            await Pool(timeout=5).post(f"http://127.0.0.1:{free_port()}", "/v1/completions", b"{}", "x")
        with pytest.raises(ValueError, match="http://host:port"):
            await Pool(timeout=5).post("https://example.com", "/v1/completions", b"{}", "x")

    asyncio.run(go())


def test_a_request_closed_by_the_gateway_is_not_sent_again() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            req = await read_request(r)
            if b"slow" in req:
                await r.read()  # never answers; returns when the gateway drops the connection
                return
            w.write(ok(b"{}"))

    async def go() -> None:
        server, url, count = await scripted(handler)
        pool = Pool(timeout=30)
        resp = await pool.post(url, "/v1/completions", b"{}", "fast")
        await resp.read()
        resp.release()  # now a kept-alive connection waits in the pool
        slow = asyncio.create_task(
            pool.post(url, "/v1/completions", b'"slow"', "slow", sent=lambda r: r.close())
        )
        with pytest.raises(UpstreamError):
            await slow
        assert len(count) == 1  # the closed request was not retried on a new connection
        server.close()

    asyncio.run(go())


def test_idle_connections_the_engine_closes_leave_the_pool() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(ok(b"{}"))
        await w.drain()  # then close: a keep-alive timeout, or a pod that went away

    async def go() -> None:
        server, url, _ = await scripted(handler)
        pool = Pool(timeout=30)
        resps = await asyncio.gather(*(pool.post(url, "/v1/completions", b"{}", str(i)) for i in range(5)))
        for resp in resps:
            await resp.read()
            resp.release()
        for _ in range(200):
            if not pool._idle:
                break
            await asyncio.sleep(0.01)
        assert pool._idle == {}
        server.close()

    asyncio.run(go())


def test_an_ipv6_engine_gets_its_address_in_brackets_in_the_host_header() -> None:
    async def go() -> None:
        hosts: list[bytes] = []

        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            req = await read_request(r)
            hosts.extend(
                line.split(b": ", 1)[1] for line in req.split(b"\r\n") if line.lower().startswith(b"host:")
            )
            w.write(ok(b"{}"))
            await w.drain()
            w.close()

        try:
            server = await asyncio.start_server(on_conn, "::1", 0)
        except OSError:
            pytest.skip("no IPv6 loopback here")
        port = server.sockets[0].getsockname()[1]
        resp = await Pool(timeout=30).post(f"http://[::1]:{port}", "/v1/completions", b"{}", "x")
        assert resp.status == 200 and hosts == [f"[::1]:{port}".encode()]
        resp.release()
        server.close()

    asyncio.run(go())


def chunked(*events: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events)


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_a_pipe_gets_each_read_whole_in_one_call_then_the_end_and_keeps_the_connection() -> None:
    """Pipe mode (the gateway's streaming fast path): events that arrive together reach the sink in one call, from
    the connection's read callback, and the connection goes back to the pool once the body has ended."""
    burst = [b"data: %d\n\n" % i for i in range(5)]
    go_on = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(SSE_HEAD + chunked(*burst))  # five events in one write
        await w.drain()
        await go_on.wait()
        w.write(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await w.drain()
        await read_request(r)
        w.write(ok(b"{}"))
        await w.drain()
        await r.read()

    async def go() -> None:
        server, url, count = await scripted(handler)
        pool = Pool(timeout=30)
        resp = await pool.post(url, "/v1/chat/completions", b"{}", "p")
        calls: list[bytes] = []
        for _ in range(200):  # the burst is in (buffered, nobody reading yet)
            if resp._buffered >= sum(map(len, burst)):
                break
            await asyncio.sleep(0.01)
        resp.pipe(calls.append)
        assert calls == [b"".join(burst)]  # what had arrived, at once and in one piece
        go_on.set()
        await asyncio.wait_for(resp.ended(), 5)
        assert calls[1:] == [b"data: [DONE]\n\n"]
        resp.release()
        again = await pool.post(url, "/v1/completions", b"{}", "q")
        assert await again.read() == b"{}"
        again.release()
        assert len(count) == 1  # the same kept-alive connection
        server.close()

    asyncio.run(go())


def test_a_pipe_reader_can_pause_the_engine_socket_and_a_failing_reader_cuts_the_response() -> None:
    events = [b"data: %d\n\n" % i for i in range(3)]
    steps = [asyncio.Event() for _ in events]

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(SSE_HEAD)
        for event, step in zip(events, steps, strict=True):
            w.write(chunked(event))
            await w.drain()
            await step.wait()
        w.write(b"0\r\n\r\n")
        await w.drain()
        await r.read()

    async def go() -> None:
        server, url, _ = await scripted(handler)
        pool = Pool(timeout=30)
        resp = await pool.post(url, "/v1/chat/completions", b"{}", "p")
        got: list[bytes] = []

        def sink(data: bytes) -> None:
            got.append(data)
            resp.pause_reading()

        resp.pipe(sink)
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.01)
        assert resp._conn is not None and resp._conn.transport is not None
        assert not resp._conn.transport.is_reading()  # paused by the reader
        steps[0].set()
        await asyncio.sleep(0.2)
        assert got == [events[0]]  # nothing more is read while paused
        resp.resume_reading()

        def failing(data: bytes) -> None:
            raise ValueError("the reader failed")

        for _ in range(200):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert got == events[:2]
        resp._sink = failing  # the next read fails in the reader: the response is cut with its error
        resp.resume_reading()
        steps[1].set()
        with pytest.raises(ValueError, match="the reader failed"):
            await asyncio.wait_for(resp.ended(), 5)
        resp.release()
        assert not pool._idle  # a cut connection is never reused
        steps[2].set()
        server.close()

    asyncio.run(go())


def test_a_whole_body_past_the_high_water_mark_is_read_not_stalled() -> None:
    """A non-streamed answer larger than the high-water mark (read() waits for the whole body)."""

    async def go() -> None:
        server, resp = await past_high_water()
        assert await asyncio.wait_for(resp.read(), 5) == PAYLOAD
        resp.release()
        server.close()

    asyncio.run(go())


def test_a_pipe_started_on_a_body_past_the_high_water_mark_reads_the_rest() -> None:
    """The reader fell behind before the pipe began (the client was slow to take the stream's head): the
    connection had stopped reading at the high-water mark, and the pipe must read on, not stall."""

    async def go() -> None:
        server, resp = await past_high_water()
        got: list[bytes] = []
        resp.pipe(got.append)
        await asyncio.wait_for(resp.ended(), 5)
        assert b"".join(got) == PAYLOAD
        resp.release()
        server.close()

    asyncio.run(go())
