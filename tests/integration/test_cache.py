"""The cache tier against a real Redis 8 with the query engine (redisearch), wired into a real gateway."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time

import httpx
import openai
import pytest
import redis

from tests.conftest import ROOT
from tests.integration.servers import chat, engine, free_port, gateway, metric, serve_aiohttp

pytestmark = pytest.mark.integration
ALICE, BOB = "sk-alice-cache-000000", "sk-bob-cache-0000000"


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="llmfleet-redis-")
        out = subprocess.run(
            ["bash", str(ROOT / "hack" / "redis.sh"), "start", str(self.port), self.dir],
            capture_output=True,
            text=True,
            check=True,
        )
        self.pid = int(out.stdout.strip().splitlines()[-1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port).ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.1)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def rds():
    r = Redis()
    yield r
    r.kill()


@pytest.fixture(scope="module")
def eng():
    e = engine("m", 20.0)
    yield e
    e.stop()


def cache_config(eng, rds, **cache) -> dict:
    return {
        "model": "m",
        "engines": {"static": [eng.url]},
        "limits": {"requestsPerMinute": 100000, "tokensPerMinute": 100_000_000},
        "cache": {
            "redisURL": rds.url,
            "exact": {"enabled": True, "ttlSeconds": 600, "replay": "deterministic"},
            "semantic": {"enabled": True, "threshold": 0.95, "embeddingModel": "all-MiniLM-L6-v2"},
            **cache,
        },
    }


@pytest.fixture(scope="module")
def gw(eng, rds):
    s = gateway(cache_config(eng, rds), {"alice": ALICE, "bob": BOB})
    yield s
    s.stop()


def ask(gw, content: str, key: str = ALICE, system: str = "You answer briefly.", **extra) -> httpx.Response:
    return chat(gw.url, key, content, system=system, timeout=30, **{"max_tokens": 12, **extra})


def engine_prompts(eng) -> float:
    return metric(httpx.get(eng.url + "/metrics").text, "vllm:prompt_tokens_total")


def test_exact_hit_replays_the_answer_without_the_engine(gw, eng) -> None:
    first = ask(gw, "What is PagedAttention?")
    assert first.status_code == 200 and first.headers["x-llmfleet-cache"] == "miss"
    before = engine_prompts(eng)
    second = ask(gw, "What is PagedAttention?")
    assert second.headers["x-llmfleet-cache"] == "exact"
    assert (
        second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    )
    assert second.json()["id"] != first.json()["id"]
    assert engine_prompts(eng) == before
    changed = ask(gw, "What is PagedAttention?", max_tokens=13)  # different sampling: different entry
    assert (
        changed.headers["x-llmfleet-cache"] in ("miss", "semantic")
        and changed.headers["x-llmfleet-cache"] != "exact"
    )


def test_semantic_hit_for_a_paraphrase_with_the_real_model(gw, eng) -> None:
    origin = "Hugging Face Hub is a platform to host Git-based models, datasets, and Spaces."
    similar = "Hugging Face Hub serves as a repository for Git-based models, datasets, and Spaces."
    assert ask(gw, origin).headers["x-llmfleet-cache"] == "miss"
    time.sleep(0.2)  # the index picks the new entry up asynchronously
    r = ask(gw, similar)
    assert r.headers["x-llmfleet-cache"] == "semantic"
    assert (
        r.json()["choices"][0]["message"]["content"]
        == ask(gw, origin).json()["choices"][0]["message"]["content"]
    )
    other = ask(gw, "How do I bake sourdough bread at home?")
    assert other.headers["x-llmfleet-cache"] == "miss"
    # Same question under another system prompt is another conversation: never a hit.
    assert ask(gw, similar, system="You are a pirate.").headers["x-llmfleet-cache"] == "miss"


def test_tenants_never_share_entries(gw) -> None:
    assert ask(gw, "Explain continuous batching", key=ALICE).headers["x-llmfleet-cache"] == "miss"
    assert ask(gw, "Explain continuous batching", key=ALICE).headers["x-llmfleet-cache"] == "exact"
    assert ask(gw, "Explain continuous batching", key=BOB).headers["x-llmfleet-cache"] == "miss"


def test_errors_and_non_deterministic_requests_are_not_cached(gw) -> None:
    too_long = "too long " * 4000  # more tokens than the engine's context: vLLM's 400
    bad = ask(gw, too_long)
    assert bad.status_code == 400 and "exceeds model's maximum context length" in bad.text
    again = ask(gw, too_long)
    assert again.status_code == 400 and again.headers.get("x-llmfleet-cache") == "miss"
    hot = ask(gw, "Tell me a story", temperature=1.0)
    assert hot.headers["x-llmfleet-cache"] == "skip"
    assert ask(gw, "Tell me a story", temperature=1.0).headers["x-llmfleet-cache"] == "skip"
    opted = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {ALICE}", "X-LLMfleet-Cache": "allow"},
        json={
            "model": "m",
            "temperature": 0.7,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "opt in"}],
        },
    )
    assert opted.headers["x-llmfleet-cache"] == "miss"
    keep_out = {
        "model": "m",
        "temperature": 0,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "do not keep this"}],
    }
    no_store = httpx.post(
        gw.url + "/v1/chat/completions",
        json=keep_out,
        headers={"Authorization": f"Bearer {ALICE}", "Cache-Control": "no-store"},
    )
    assert no_store.headers["x-llmfleet-cache"] == "skip"
    after = httpx.post(
        gw.url + "/v1/chat/completions", json=keep_out, headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert after.headers["x-llmfleet-cache"] == "miss"  # nothing was stored


def test_cut_stream_is_not_cached(gw) -> None:
    body = {
        "model": "m",
        "temperature": 0,
        "max_tokens": 400,
        "stream": True,
        "messages": [{"role": "user", "content": "a long streamed answer that the client abandons"}],
    }
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {ALICE}"}
    ) as r:
        for chunk in r.iter_raw():
            if b"data: " in chunk:
                break
    time.sleep(0.3)
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={**body, "stream": False},
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert r.headers["x-llmfleet-cache"] == "miss"


def test_streamed_replay_parses_with_the_openai_client(gw) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ALICE)
    msgs = [{"role": "user", "content": "Stream me a cached answer about KV caches"}]
    live = client.chat.completions.create(model="m", messages=msgs, temperature=0, max_tokens=20, stream=True)
    live_text = "".join(c.choices[0].delta.content or "" for c in live if c.choices)
    raw = client.chat.completions.with_raw_response.create(
        model="m",
        messages=msgs,
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-llmfleet-cache"] == "exact"
    chunks = list(raw.parse())
    replay_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert replay_text == live_text and live_text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20
    plain = client.chat.completions.create(model="m", messages=msgs, temperature=0, max_tokens=20)
    assert plain.choices[0].message.content == live_text


def test_corrupt_entry_is_dropped_not_served(gw, rds) -> None:
    keys_before = list(redis.Redis(port=rds.port).scan_iter("llmfleet:exact:alice:*"))
    first = ask(gw, "corruption check")
    assert first.headers["x-llmfleet-cache"] == "miss"
    r = redis.Redis(port=rds.port)
    # The gateway stores the answer after sending it: wait for the entry before corrupting it.
    deadline = time.monotonic() + 10
    before = set(keys_before)
    while not (keys := [k for k in r.scan_iter("llmfleet:exact:alice:*") if k not in before]):
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.05)
    for k in keys:
        r.set(k, b"\x00not json")
    again = ask(gw, "corruption check")
    assert again.status_code == 200 and again.headers["x-llmfleet-cache"] in ("miss", "semantic")
    assert (
        again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    )


def test_killed_redis_costs_no_failed_request(eng) -> None:
    own = Redis()
    s = gateway(cache_config(eng, own), {"alice": ALICE})
    try:
        assert ask(s, "before the outage").status_code == 200
        assert ask(s, "before the outage").headers["x-llmfleet-cache"] == "exact"
        own.kill()
        statuses = [ask(s, f"during the outage {i % 3}").status_code for i in range(20)]
        assert statuses == [200] * 20
        assert ask(s, "before the outage").headers["x-llmfleet-cache"] in ("bypass", "miss")
        errors = metric(httpx.get(s.url + "/metrics").text, "llmfleet_gateway_cache_total", result="error")
        assert errors >= 1
    finally:
        s.stop()
        own.kill()


def test_one_late_redis_answer_costs_one_lookup_not_the_cache(eng) -> None:
    """Redis paused (SIGSTOP) for one request: that lookup misses and the engine answers, but the next request,
    once Redis answers again, is served from the cache; three late answers in a row do open the breaker. (A
    single timeout used to bypass the cache for 5 s: the Redis timeout is measured on a loop that may lag.)"""
    own = Redis()
    s = gateway(cache_config(eng, own, semantic={"enabled": False}), {"alice": ALICE})
    try:
        assert ask(s, "before the pause").status_code == 200
        assert ask(s, "before the pause").headers["x-llmfleet-cache"] == "exact"
        os.kill(own.pid, signal.SIGSTOP)
        try:
            late = ask(s, "during the pause")
            assert late.status_code == 200 and late.headers["x-llmfleet-cache"] == "miss"
            time.sleep(0.5)  # the answer's store after the response times out too
        finally:
            os.kill(own.pid, signal.SIGCONT)
        assert ask(s, "before the pause").headers["x-llmfleet-cache"] == "exact"
        os.kill(own.pid, signal.SIGSTOP)
        try:
            for i in range(3):
                assert ask(s, f"a longer pause {i}").status_code == 200
            assert ask(s, "before the pause").headers["x-llmfleet-cache"] == "bypass"
        finally:
            os.kill(own.pid, signal.SIGCONT)
        errors = metric(httpx.get(s.url + "/metrics").text, "llmfleet_gateway_cache_total", result="error")
        assert errors >= 3
    finally:
        s.stop()
        own.kill()


class VllmShapes:
    """A stand-in engine that answers with the shapes vLLM 0.33 gives failed requests, all with HTTP 200 (a
    replay, as recorded from its source; engine-sim produces the abort shapes live on SIGTERM): keyed by the
    last user message. Counts the requests that reach it."""

    def __init__(self) -> None:
        from aiohttp import web

        from tests.unit.test_cache_entries import vllm_stream, vllm_whole

        self.hits: dict[str, int] = {}
        shapes = {
            "abort-stream": (True, vllm_stream(["Par", "tial"], "abort")),
            "error-stream": (True, vllm_stream(["Par", "tial"], "length", error=True)),
            "empty-stream": (True, vllm_stream([], "length")),
            "empty-whole": (False, vllm_whole("", "length")),
            "whole": (False, vllm_whole("A whole answer.", "length")),
        }

        async def complete(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            key = body["messages"][-1]["content"]
            self.hits[key] = self.hits.get(key, 0) + 1
            stream, data = shapes[key]
            if body.get("stream") != stream:
                data = (
                    vllm_stream(["A whole answer."], "length")
                    if body.get("stream")
                    else vllm_whole("x", "length")
                )
            return web.Response(
                body=data, content_type="text/event-stream" if body.get("stream") else "application/json"
            )

        app = web.Application()
        app.router.add_post("/v1/chat/completions", complete)
        self.port, self.url = serve_aiohttp(app)


def test_vllm_shaped_aborts_errors_and_empty_answers_leave_the_cache_empty(rds) -> None:
    shapes = VllmShapes()
    s = gateway(cache_config(shapes, rds), {"alice": ALICE})
    r = redis.Redis(port=rds.port)

    def entries() -> set[bytes]:
        return set(r.scan_iter("llmfleet:exact:*")) | set(r.scan_iter("llmfleet:sem*"))

    before = entries()
    try:
        for key in ("abort-stream", "error-stream", "empty-stream", "empty-whole"):
            for _ in range(2):
                hits = shapes.hits.get(key, 0)
                got = ask(s, key, system="vllm shapes", stream=key.endswith("-stream"))
                # An abort is retried (no other replica here: 503); nothing was kept, so the second time too the
                # request goes to the engine and is no cache hit.
                assert got.status_code in (200, 503), got.text
                assert got.headers.get("x-llmfleet-cache") in (None, "miss") and shapes.hits[key] > hits
        assert entries() == before  # not one entry, exact or semantic
        ok = ask(s, "whole", system="vllm shapes")
        assert (
            ok.status_code == 200
            and ask(s, "whole", system="vllm shapes").headers["x-llmfleet-cache"] == "exact"
        )
        text = httpx.get(s.url + "/metrics").text
        assert metric(text, "llmfleet_gateway_upstream_errors_total", kind="error_event") >= 2
    finally:
        s.stop()
