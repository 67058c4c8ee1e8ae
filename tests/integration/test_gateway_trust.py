"""The gateway's promises tried as an attacker or a careless client would, over real sockets: nothing sensitive
reaches the managed API (a recording fake provider checks every byte it receives), header tricks fail closed,
auth refuses to be turned off by an empty Secret, dropped streams are charged, and cut streams say so."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.integration.servers import engine, free_port, gateway
from tests.strategies import request_with_sensitive_value

pytestmark = pytest.mark.integration
KEY = "sk-test-alice-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
GENERAL = {**AUTH, "X-Data-Sensitivity": "general"}

CHAT_JSON = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "ext",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "external"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()


class RawServer:
    """An HTTP/1.1 server on a real loopback socket in its own thread: records every request body and answers
    with what `answer(body)` returns (raw response bytes; closes the connection after it)."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()
        server.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await r.readexactly(length)
                self.bodies.append(body)
                w.write(self.answer(body))
                await w.drain()
                w.close()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _json_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
        len(CHAT_JSON),
        CHAT_JSON,
    )


@pytest.fixture(scope="module")
def provider():
    p = RawServer(_json_answer)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def eng():
    s = engine("m", 50.0)
    yield s
    s.stop()


def _config(engine_url: str, provider_url: str, **over) -> dict:
    cfg = {
        "model": "m",
        "engines": {"static": [engine_url]},
        "limits": {"requestsPerMinute": 100_000, "tokensPerMinute": 100_000_000},
        "external": {"use": "general", "baseURL": provider_url + "/v1", "model": "ext"},
        "sensitivity": {"default": "general", "keyPolicy": {"pinned": "sensitive"}},
        "maxBodyBytes": 1 << 20,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def gw(eng, provider):
    keys = {"alice": KEY, "pinned": "sk-pinned-0123456789", "carol": "sk-carol-0123456789"}
    s = gateway(_config(eng.url, provider.url), keys)
    yield s
    s.stop()


def test_general_traffic_does_reach_the_recording_provider(gw, provider) -> None:
    """The property below is only meaningful if general traffic does go out."""
    before = len(provider.bodies)
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers=GENERAL,
        json={"model": "m", "messages": [{"role": "user", "content": "what is 2+2?"}], "max_tokens": 4},
    )
    assert r.status_code == 200 and r.headers["x-llmfleet-route"] == "external"
    assert len(provider.bodies) == before + 1 and b"what is 2+2?" in provider.bodies[-1]


def post_case(base_url: str, body: dict) -> httpx.Response:
    """A generated request, non-streaming, labelled general, to the endpoint its shape belongs to."""
    body["stream"] = False
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    with httpx.Client(timeout=30) as c:
        return c.post(base_url + path, headers=GENERAL, content=json.dumps(body))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=request_with_sensitive_value())
def test_no_sensitive_value_in_any_field_reaches_the_managed_api(gw, provider, case) -> None:
    body, value = case
    before = len(provider.bodies)
    r = post_case(gw.url, body)
    assert r.headers.get("x-llmfleet-route") != "external", (value, r.status_code, r.text[:200])
    sent = provider.bodies[before:]
    assert not sent, (value, sent)


@pytest.mark.parametrize(
    "fields",
    [
        [("X-Data-Sensitivity", "sensitive"), ("X-Data-Sensitivity", "general")],
        [("X-Data-Sensitivity", "general"), ("X-Data-Sensitivity", "sensitive")],
        [("X-Data-Sensitivity", "sensitive, general")],
        [("X-Data-Sensitivity", "general, internal")],
        [("X-Data-Sensitivity", "generall")],
    ],
)
def test_repeated_or_listed_sensitivity_values_fail_closed(gw, provider, fields) -> None:
    before = len(provider.bodies)
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers=[("Authorization", f"Bearer {KEY}"), *fields],
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert r.status_code == 200 and r.headers["x-llmfleet-route"] == "self-hosted"
    assert len(provider.bodies) == before


def test_a_trailer_cannot_relabel_a_request_or_authenticate(gw, provider) -> None:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    ).encode()
    before = len(provider.bodies)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEY.encode()
            + b"\r\nX-Data-Sensitivity: sensitive\r\nTransfer-Encoding: chunked\r\nTrailer: X-Data-Sensitivity\r\n\r\n"
            + b"%x\r\n%b\r\n0\r\nX-Data-Sensitivity: general\r\n\r\n" % (len(body), body)
        )
        assert b"x-llmfleet-route: self-hosted" in _read_head(s)
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%b\r\n0\r\nAuthorization: Bearer " % (len(body), body)
            + KEY.encode()
            + b"\r\n\r\n"
        )
        assert _read_head(s).startswith(b"HTTP/1.1 401")
    assert len(provider.bodies) == before


def _read_head(s: socket.socket) -> bytes:
    data = b""
    s.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(rest) < length:
        rest += s.recv(65536)
    return head


def test_a_key_pinned_to_sensitive_never_goes_out(gw, provider) -> None:
    before = len(provider.bodies)
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"Authorization": "Bearer sk-pinned-0123456789", "X-Data-Sensitivity": "general"},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert r.status_code == 200 and r.headers["x-llmfleet-route"] == "self-hosted"
    assert len(provider.bodies) == before


def test_two_authorization_headers_are_refused(gw) -> None:
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers=[("Authorization", "Bearer nope"), ("Authorization", f"Bearer {KEY}")],
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "duplicate_authorization"


def test_a_throttled_key_is_refused_before_its_body_is_scanned(eng, provider) -> None:
    s = gateway(
        _config(eng.url, provider.url, limits={"requestsPerMinute": 1, "tokensPerMinute": 100_000}),
        {"alice": KEY},
    )
    try:
        ok = httpx.post(
            s.url + "/v1/completions", headers=GENERAL, json={"model": "m", "prompt": "hi", "max_tokens": 2}
        )
        assert ok.status_code == 200
        r = httpx.post(
            s.url + "/v1/completions",
            headers=GENERAL,
            json={"model": "m", "prompt": "a" * 500_000 + "@", "max_tokens": 2},
        )
        assert r.status_code == 429
        log = _access_log(s, 2)
        assert log[-1]["status"] == 429 and log[-1]["why"] == ""  # refused before classification
    finally:
        s.stop()


@pytest.mark.parametrize("how", ["dir", "file"])
def test_an_empty_keys_source_refuses_to_start(how: str, provider) -> None:
    d = Path(tempfile.mkdtemp(prefix="llmfleet-keys-"))
    cfg = {"model": "m", "engines": {"static": ["http://127.0.0.1:1"]}}
    if how == "dir":
        (d / "keys").mkdir()
        cfg["auth"] = {"keysDir": str(d / "keys")}
    else:
        (d / "keys").write_text("# no keys yet\n")
        cfg["auth"] = {"keysFile": str(d / "keys")}
    (d / "gw.json").write_text(json.dumps(cfg))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmfleet",
            "gateway",
            "--config",
            str(d / "gw.json"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "holds no key" in p.stderr


def test_an_unknown_config_key_refuses_to_start(provider) -> None:
    d = Path(tempfile.mkdtemp(prefix="llmfleet-cfg-"))
    (d / "gw.json").write_text(json.dumps({"model": "m", "sensitivty": {"default": "general"}}))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmfleet",
            "gateway",
            "--config",
            str(d / "gw.json"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "sensitivty" in p.stderr


def test_a_client_that_drops_a_stream_is_charged_what_was_generated(eng, provider) -> None:
    slow = engine("m", 2.0)  # ~15 tokens a second: a stream the client can leave half-way
    key = "sk-carol-0123456789"
    s = gateway(
        _config(
            slow.url,
            provider.url,
            external={"use": "never"},
            limits={"requestsPerMinute": 1000, "tokensPerMinute": 100_000},
        ),
        {"carol": key},
    )
    try:
        auth = {"Authorization": f"Bearer {key}"}
        req = {
            "model": "m",
            "messages": [{"role": "user", "content": "tell me a long story"}],
            "max_tokens": 200,
            "stream": True,
        }
        got = 0
        with (
            httpx.Client(timeout=60) as c,
            c.stream("POST", s.url + "/v1/chat/completions", headers=auth, json=req) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    got += 1
                if got >= 20:
                    break
        time.sleep(1.0)  # the gateway settles when it sees the client gone
        small = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        r2 = httpx.post(s.url + "/v1/chat/completions", headers=auth, json=small)
        remaining = int(r2.headers["x-ratelimit-remaining-tokens"])
        reserved_now = len(json.dumps(small)) // 4 + 1
        charged = 100_000 - reserved_now - remaining
        assert charged >= 18, charged  # ~20 tokens were generated for it (and its prompt)
        log = _access_log(s, 2)
        dropped = next(e for e in log if e["stream"])
        assert dropped["status"] == 499 and dropped["completion_tokens"] >= 18
    finally:
        s.stop()
        slow.stop()


def _access_log(s, n: int) -> list[dict]:
    """The gateway's access log once it holds `n` records (it is flushed in the background)."""
    for _ in range(100):
        log = [json.loads(line) for line in s.output().splitlines() if line.startswith("{")]
        if len(log) >= n:
            return log
        time.sleep(0.05)
    raise AssertionError(f"the access log has fewer than {n} records: {s.output()[-2000:]}")


def _sse_cut(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
        b'data: {"choices":[{"index":0,"delta":{"content":"hel"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
    )  # no [DONE]; the connection closes


def _json_cut(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + CHAT_JSON[:40]
    )  # close-delimited, cut


def _chunked_cut(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        b'3a\r\ndata: {"choices":[{"index":0,"delta":{"content":"hel"}}]}\n\n\r\n'
    )  # no last chunk


@pytest.mark.parametrize("answer", [_sse_cut, _chunked_cut])
def test_a_cut_stream_ends_with_an_error_event(answer, provider) -> None:
    fake = RawServer(answer)
    s = gateway(_config(fake.url, provider.url, external={"use": "never"}), {"alice": KEY})
    try:
        req = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
        with (
            httpx.Client(timeout=30) as c,
            c.stream("POST", s.url + "/v1/chat/completions", headers=AUTH, json=req) as r,
        ):
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[0].startswith("{") and "[DONE]" not in events
        assert json.loads(events[-1])["error"]["code"] == "upstream_cut"
        # and the OpenAI SDK raises instead of returning a short answer as if it were whole
        import openai

        client = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
            ):
                pass
    finally:
        s.stop()
        fake.stop()


def test_a_cut_close_delimited_answer_is_a_502_not_a_short_200(provider) -> None:
    fake = RawServer(_json_cut)
    s = gateway(_config(fake.url, provider.url, external={"use": "never"}), {"alice": KEY})
    try:
        r = httpx.post(
            s.url + "/v1/chat/completions",
            headers=AUTH,
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        )
        assert r.status_code in (502, 503) and "error" in r.json()
    finally:
        s.stop()
        fake.stop()


def test_keys_are_compared_by_hash(gw) -> None:
    bad = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"Authorization": "Bearer " + hashlib.sha256(KEY.encode()).hexdigest()},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert bad.status_code == 401


def test_a_secret_in_the_request_id_header_keeps_the_request_in(gw, provider) -> None:
    """The client's X-Request-Id is forwarded to the provider: it is scanned like the body."""
    before = len(provider.bodies)
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={**GENERAL, "X-Request-Id": "AKIAIOSFODNN7EXAMPLE"},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert r.status_code == 200 and r.headers["x-llmfleet-route"] == "self-hosted"
    assert len(provider.bodies) == before


def _reset(body: bytes) -> bytes:
    return b""  # the engine accepts the connection, reads the request and closes without a byte


@pytest.fixture(scope="module")
def overflow_gw(provider):
    """Overflow mode with an engine that is not saturated (so requests are first routed self-hosted without a
    scan) but fails every request: each one reaches the fallback, which must classify before it overflows."""
    dead = RawServer(_reset)
    s = gateway(
        _config(
            dead.url,
            provider.url,
            external={
                "use": "overflow",
                "baseURL": provider.url + "/v1",
                "model": "ext",
                "overflowOutstandingPerReplica": 100,
            },
        ),
        {"alice": KEY},
    )
    yield s
    s.stop()
    dead.stop()


def test_overflow_after_a_failed_engine_still_carries_general_traffic(overflow_gw, provider) -> None:
    before = len(provider.bodies)
    r = httpx.post(
        overflow_gw.url + "/v1/chat/completions",
        headers=GENERAL,
        json={"model": "m", "messages": [{"role": "user", "content": "what is 2+2?"}], "max_tokens": 4},
    )
    assert r.status_code == 200 and r.headers["x-llmfleet-route"] == "external", r.text
    assert len(provider.bodies) == before + 1


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=request_with_sensitive_value())
def test_overflow_after_a_failed_engine_never_carries_sensitive_values(overflow_gw, provider, case) -> None:
    body, value = case
    before = len(provider.bodies)
    r = post_case(overflow_gw.url, body)
    assert r.status_code >= 400 and r.headers.get("x-llmfleet-route") != "external", (value, r.status_code)
    assert not provider.bodies[before:], value
