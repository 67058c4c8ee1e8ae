"""The gateway's HTTP/1.1 server driven byte by byte through an in-memory transport (no socket), one test per
RFC 9112 rule or attack, in the manner of uvicorn's tests/protocols/test_http.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.gateway.http import MAX_HEAD_BYTES, HttpServer, _Connection

SIMPLE = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: example.org\r\nContent-Length: 5\r\n\r\nhello"


class MockTransport:
    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.buffer += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def take(self) -> bytes:
        out, self.buffer = self.buffer, b""
        return out


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what the application saw: method, path, headers and body."""
    msg = await receive()
    body = json.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "body": msg["body"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "code": status}}).encode()


class Harness:
    def __init__(self, app: Any = echo, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = HttpServer(app, max_body=kw.pop("max_body", 1000), error_body=error_body, **kw)
        self.server.loop = self.loop
        self.transport = MockTransport()
        self.conn = self.connect()

    def connect(self) -> _Connection:
        conn = _Connection(self.server)
        conn.connection_made(self.transport)  # type: ignore[arg-type]
        return conn

    def feed(self, data: bytes) -> None:
        self.conn.data_received(data)

    def run(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            self.loop.run_until_complete(asyncio.sleep(0))

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Parse what was written: every response, in order (interim 1xx responses included)."""
        self.run()
        data = self.transport.buffer
        out = []
        while data:
            head, sep, rest = data.partition(b"\r\n\r\n")
            assert sep, f"incomplete response head: {data!r}"
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                k, _, v = line.partition(": ")
                assert k.lower() not in headers, f"repeated response header {k}"
                headers[k.lower()] = v
            if "content-length" in headers:
                n = int(headers["content-length"])
                body, data = rest[:n], rest[n:]
            elif headers.get("transfer-encoding") == "chunked":
                body = b""
                while True:
                    size_line, _, rest = rest.partition(b"\r\n")
                    size = int(size_line, 16)
                    body += rest[:size]
                    rest = rest[size + 2 :]
                    if size == 0:
                        break
                data = rest
            else:
                body, data = rest, b""
            out.append((status, headers, body))
        return out

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


def statuses(h: Harness) -> list[int]:
    return [s for s, _, _ in h.responses()]


def test_get_request_is_answered_and_kept_alive(h: Harness) -> None:
    h.feed(SIMPLE)
    [(status, headers, body)] = h.responses()
    assert status == 200 and "connection" not in headers and json.loads(body)["path"] == "/"
    assert not h.transport.closed


def test_post_body_reaches_the_application(h: Harness) -> None:
    h.feed(POST)
    assert json.loads(h.responses()[0][2])["body"] == "hello"


def test_pipelined_requests_are_answered_in_order_one_response_each(h: Harness) -> None:
    h.feed(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert [json.loads(b)["path"] for _, _, b in h.responses()] == ["/a", "/b", "/c"]


def test_missing_host_in_http11_is_400(h: Harness) -> None:
    h.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert statuses(h) == [400] and h.transport.closed


def test_duplicate_host_is_400(h: Harness) -> None:
    h.feed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert statuses(h) == [400]


def test_http10_without_host_is_served_and_closed(h: Harness) -> None:
    h.feed(b"GET / HTTP/1.0\r\n\r\n")
    assert statuses(h) == [200] and h.transport.closed


@pytest.mark.parametrize("version", [b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0"])
def test_other_http_versions_are_refused(h: Harness, version: bytes) -> None:
    h.feed(b"GET / " + version + b"\r\nHost: x\r\n\r\n")
    [status] = statuses(h)
    assert status in (400, 505) and h.transport.closed


def test_upgrade_gets_exactly_one_400(h: Harness) -> None:
    h.feed(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\n"
    )
    assert statuses(h) == [400] and h.transport.closed


def test_http10_with_transfer_encoding_is_refused_and_closed(h: Harness) -> None:
    h.feed(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert statuses(h) == [400] and h.transport.closed


def test_content_length_with_transfer_encoding_is_refused(h: Harness) -> None:
    h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert statuses(h) == [400]


def test_conflicting_content_lengths_are_refused(h: Harness) -> None:
    h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello")
    assert statuses(h) == [400]


def test_trailer_fields_never_reach_the_application(h: Harness) -> None:
    h.feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Data-Sensitivity: sensitive\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Data-Sensitivity: general\r\nAuthorization: Bearer stolen\r\n\r\n"
    )
    [(status, _, body)] = h.responses()
    seen = json.loads(body)
    assert status == 200 and seen["body"] == "hello"
    assert ["x-data-sensitivity", "sensitive"] in seen["headers"]
    assert not any(k in ("authorization",) or v == "general" for k, v in seen["headers"])


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x01b", b"a\x7fb", b"a\x1bb"])
def test_control_characters_in_a_header_value_are_400(h: Harness, value: bytes) -> None:
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Test: " + value + b"\r\n\r\n")
    assert statuses(h) == [400]


def test_bad_header_name_is_400(h: Harness) -> None:
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n")
    assert statuses(h) == [400]


def test_a_header_value_that_never_ends_is_refused_as_it_grows(h: Harness) -> None:
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
    for _ in range(2 * MAX_HEAD_BYTES // 4096 + 2):
        if h.conn.broken:
            break
        h.feed(b"a" * 4096)
    assert statuses(h) == [431] and h.transport.closed


def test_a_header_name_that_never_ends_is_refused_as_it_grows(h: Harness) -> None:
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(2 * MAX_HEAD_BYTES // 4096 + 2):
        if h.conn.broken:
            break
        h.feed(b"X" * 4096)
    assert statuses(h) == [431]


def test_a_head_just_under_the_limit_in_small_pieces_is_served(h: Harness) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (MAX_HEAD_BYTES - 200) + b"\r\n\r\n"
    for i in range(0, len(head), 1000):
        h.feed(head[i : i + 1000])
    assert statuses(h) == [200]


def test_a_connection_sending_only_empty_lines_is_closed_when_idle() -> None:
    h = Harness(keepalive=5.0)
    t0 = h.loop.time()
    for _ in range(10):
        h.feed(b"\r\n")
    assert h.conn.idle_since and h.conn.idle_since <= t0 + 1  # still idle: empty lines are no request
    h.conn.idle_since -= 10  # as if 10 s passed
    h.server._sweep()
    assert h.transport.closed
    h.close()


def test_a_request_that_never_completes_gets_408() -> None:
    h = Harness(request_timeout=60.0)
    h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    h.conn.receiving_since -= 61
    h.server._sweep()
    assert statuses(h) == [408] and h.transport.closed
    h.close()


def test_a_client_that_stops_reading_is_cut_after_the_request_timeout() -> None:
    h = Harness(request_timeout=60.0)
    h.conn.pause_writing()
    h.conn.write_paused_since -= 61
    h.server._sweep()
    assert h.transport.aborted
    h.close()


def test_expect_100_continue_is_sent_for_a_wanted_body(h: Harness) -> None:
    h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert h.transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    h.feed(b"hello")
    assert statuses(h) == [200]


def test_expect_100_continue_is_not_sent_for_a_body_over_the_limit(h: Harness) -> None:
    h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    assert statuses(h) == [413]


def test_expect_100_continue_waits_for_the_responses_before_it() -> None:
    gate = asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"part one ", "more_body": True})
        await gate.wait()
        await send({"type": "http.response.body", "body": b"part two"})

    h = Harness(slow)
    h.feed(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run()
    h.feed(b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    h.run()
    assert b"100 Continue" not in h.transport.buffer  # not inside the first response
    gate.set()
    h.run()
    assert h.transport.buffer.endswith(b"0\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n")
    h.close()


def test_application_connection_close_is_honoured() -> None:
    async def closing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"2"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    h = Harness(closing)
    h.feed(SIMPLE + SIMPLE)
    [(status, headers, _)] = h.responses()
    assert status == 200 and headers["connection"] == "close" and h.transport.closed
    h.close()


@pytest.mark.parametrize("sent", [b"too long body", b"x"])
def test_a_body_that_does_not_match_its_content_length_closes_the_connection(sent: bytes) -> None:
    async def liar(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": sent})

    h = Harness(liar)
    h.feed(SIMPLE + SIMPLE)
    h.run()
    assert h.transport.aborted
    assert sent not in h.transport.buffer or len(sent) <= 5
    h.close()


def test_connections_beyond_the_cap_get_503_and_close() -> None:
    h = Harness(max_connections=1)
    second = MockTransport()
    conn = _Connection(h.server)
    conn.connection_made(second)  # type: ignore[arg-type]
    assert second.buffer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in second.buffer and second.closed
    assert len(h.server.connections) == 1
    h.close()


def test_response_splitting_is_refused() -> None:
    async def split(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\nSet-Cookie: evil=1")]}
        )

    h = Harness(split)
    h.feed(SIMPLE)
    [(status, _, _)] = h.responses()
    assert status == 500
    h.close()


def test_request_line_with_a_bad_method_is_400(h: Harness) -> None:
    h.feed(b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(h) == [400]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_get_at_most_one_response_per_request_and_never_crash(data: bytes) -> None:
    """Whatever arrives, the server answers with well-formed responses (or nothing yet) and never raises."""
    h = Harness()
    try:
        h.feed(data)
        for status, _, _ in h.responses():
            assert 100 <= status < 600
    finally:
        h.close()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([SIMPLE, POST, b"\r\n"]), min_size=1, max_size=6), st.integers(1, 50))
def test_pipelined_requests_split_anywhere_get_their_responses_in_order(
    reqs: list[bytes], piece: int
) -> None:
    h = Harness()
    try:
        data = b"".join(reqs)
        for i in range(0, len(data), piece):
            h.feed(data[i : i + piece])
        got = [json.loads(b)["method"] for _, _, b in h.responses()]
        assert got == ["GET" if r == SIMPLE else "POST" for r in reqs if r != b"\r\n"]
    finally:
        h.close()


def test_head_response_keeps_its_content_length_without_a_body() -> None:
    async def sized(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})

    h = Harness(sized)
    h.feed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run()
    assert h.transport.buffer.startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    assert not h.transport.aborted and not h.transport.closed
    h.close()
