"""The gateway and engine-sim as real processes over real sockets on loopback (the gateway on its own HTTP
server, engine-sim on uvicorn)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.servers import Server, engine, gateway, metric

pytestmark = pytest.mark.integration
KEY = "sk-test-alice-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def chat(content: str = "hello", **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}


@pytest.fixture(scope="module")
def engines():
    a, b = engine("m", 20.0), engine("m", 20.0)
    ext = engine("gpt-ext", 50.0)  # stands in for the managed API
    yield a, b, ext
    for s in (a, b, ext):
        s.stop()


def config(servers, **over) -> dict:
    a, b, ext = servers
    cfg = {
        "model": "m",
        "engines": {"static": [a.url, b.url]},
        "routing": "prefix-affinity",
        "limits": {"requestsPerMinute": 1000, "tokensPerMinute": 10_000_000},
        "external": {"use": "general", "baseURL": ext.url + "/v1", "model": "gpt-ext"},
        "sensitivity": {"detectors": ["email", "credit-card", "ssn", "secret"], "default": "general"},
        "maxBodyBytes": 65536,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def gw(engines):
    s = gateway(
        config(engines),
        {"alice": KEY, "bob": "sha256:" + __import__("hashlib").sha256(b"sk-bob").hexdigest()},
    )
    yield s
    s.stop()


def test_non_streaming_and_models(gw) -> None:
    r = httpx.post(
        gw.url + "/v1/chat/completions", json=chat(), headers={**AUTH, "X-Data-Sensitivity": "sensitive"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] == 8
    assert r.headers["x-llmfleet-route"] == "self-hosted"
    assert r.headers["x-ratelimit-limit-requests"] == "1000"
    models = httpx.get(gw.url + "/v1/models", headers=AUTH).json()
    assert models["data"][0]["id"] == "m"
    bob = httpx.post(
        gw.url + "/v1/completions",
        json={"model": "m", "prompt": "x", "max_tokens": 2},
        headers={"Authorization": "Bearer sk-bob", "X-Data-Sensitivity": "sensitive"},
    )
    assert bob.status_code == 200 and bob.json()["choices"][0]["text"]


def test_streamed_tokens_arrive_incrementally(engines) -> None:
    slow = engine("m", 1.0)  # real time: ~8 ms per token
    s = gateway(config(engines, engines={"static": [slow.url]}, external={"use": "never"}), {"alice": KEY})
    try:
        arrivals = []
        with httpx.stream(
            "POST", s.url + "/v1/chat/completions", json=chat(stream=True, max_tokens=40), headers=AUTH
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for chunk in r.iter_raw():
                arrivals.append((time.perf_counter(), chunk.count(b"data: ")))
        events = sum(n for _, n in arrivals)
        assert events >= 41  # 40 tokens + final chunk + [DONE]
        # Tokens came in many separate reads spread over time, not one buffered blob at the end.
        assert len(arrivals) >= 10
        assert arrivals[0][0] < arrivals[-1][0]
    finally:
        s.stop()
        slow.stop()


def engine_aborted_one(url: str, within: float = 10) -> bool:
    """Whether the engine counts an aborted request and runs none any more, polling up to `within` seconds."""

    def aborted() -> bool:
        m = httpx.get(url + "/metrics").text
        return (
            metric(m, "vllm:request_success_total", finished_reason="abort") >= 1
            and metric(m, "vllm:num_requests_running") == 0
        )

    deadline = time.monotonic() + within
    while not aborted() and time.monotonic() < deadline:
        time.sleep(0.05)
    return aborted()


def test_a_client_that_stops_reading_a_stream_gets_all_of_it_once_it_reads_again(engines) -> None:
    """The streaming fast path under back-pressure: the gateway stops reading the engine while its client reads
    nothing, and resumes when the client does; every token and the end reach the client."""
    fast = engine("m", 200.0, "--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "32768")
    s = gateway(config(engines, engines={"static": [fast.url]}, external={"use": "never"}), {"alice": KEY})
    tokens = 30_000  # ~5 MiB of SSE: more than the sockets on the way hold
    try:
        with httpx.stream(
            "POST",
            s.url + "/v1/chat/completions",
            json=chat(
                stream=True, max_tokens=tokens, ignore_eos=True, stream_options={"include_usage": True}
            ),
            headers=AUTH,
            timeout=120,
        ) as r:
            raw = r.iter_raw()
            first = next(raw)
            time.sleep(2)  # read nothing while the engine keeps generating
            data = first + b"".join(raw)
        events = [e for e in data.split(b"\n\n") if e.startswith(b"data: ")]
        assert events[-1] == b"data: [DONE]"
        usage = json.loads(events[-2][6:])["usage"]
        assert usage["completion_tokens"] == tokens
        content = sum(1 for e in events[:-2] if b'"content":"' in e and b'"content":""' not in e)
        assert content == tokens
        assert b'"error"' not in data
    finally:
        s.stop()
        fast.stop()


def test_client_disconnect_aborts_the_upstream_request(engines) -> None:
    slow = engine("m", 1.0)
    s = gateway(config(engines, engines={"static": [slow.url]}, external={"use": "never"}), {"alice": KEY})
    try:
        with httpx.stream(
            "POST", s.url + "/v1/chat/completions", json=chat(stream=True, max_tokens=4000), headers=AUTH
        ) as r:
            for chunk in r.iter_raw():
                if b"data: " in chunk:
                    break  # leave after the first token
        assert engine_aborted_one(slow.url)
        gen = metric(httpx.get(slow.url + "/metrics").text, "vllm:generation_tokens_total")
        assert gen < 4000  # it stopped generating
    finally:
        s.stop()
        slow.stop()


@pytest.mark.parametrize("route", ["self-hosted", "external"])
def test_client_leaving_a_non_streaming_request_aborts_it_before_any_answer(engines, route) -> None:
    # A non-streaming answer arrives in one piece at the end, so the gateway must watch the client while it
    # waits for the upstream's response head, not only while relaying a body: on both routes (for the managed
    # API, a generation nobody reads is still billed).
    slow = engine("m", 1.0)
    if route == "self-hosted":
        cfg = config(engines, engines={"static": [slow.url]}, external={"use": "never"})
    else:
        cfg = config(engines, external={"use": "general", "baseURL": slow.url + "/v1", "model": "m"})
    s = gateway(cfg, {"alice": KEY})
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(s.url + "/v1/chat/completions", json=chat(max_tokens=4000), headers=AUTH, timeout=1.0)

        assert engine_aborted_one(slow.url)
        assert metric(httpx.get(slow.url + "/metrics").text, "vllm:generation_tokens_total") < 4000
        s.stop()  # the access log is flushed in batches; stopping flushes it
        log = s.output().replace(" ", "")
        assert '"status":499' in log and f'"route":"{route}"' in log
    finally:
        s.stop()
        slow.stop()


def test_error_bodies_and_headers(engines) -> None:
    s = gateway(
        config(engines, limits={"requestsPerMinute": 3, "tokensPerMinute": 1_000_000}), {"alice": KEY}
    )
    try:
        url = s.url + "/v1/chat/completions"
        r = httpx.post(url, json=chat())
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.post(url, json=chat(), headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
        r = httpx.post(url, content=b"{not json", headers=AUTH)
        assert r.status_code == 400 and "parse the JSON" in r.json()["error"]["message"]
        r = httpx.post(url, json={**chat(), "model": "nope"}, headers=AUTH)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = httpx.post(url, json=chat("x" * 70000), headers=AUTH)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        codes = [
            httpx.post(url, json=chat(), headers={**AUTH, "X-Data-Sensitivity": "sensitive"})
            for _ in range(4)
        ]
        assert [c.status_code for c in codes[:3]] == [200, 200, 200]
        limited = codes[3]
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        assert limited.headers["x-ratelimit-limit-requests"] == "3"
    finally:
        s.stop()


def test_forbidden_fields_are_stripped_and_client_key_not_forwarded(engines, gw) -> None:
    # api_base would redirect traffic in some proxies; here it is dropped and the request served as usual.
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={**AUTH, "X-Data-Sensitivity": "sensitive"},
        json={**chat(), "api_base": "http://evil.invalid", "base_url": "http://evil.invalid"},
    )
    assert r.status_code == 200


PII = st.one_of(
    st.emails(),
    st.sampled_from(["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117"]),
    st.builds(
        lambda a, b, c: f"{a:03d}-{b:02d}-{c:04d}",
        st.integers(100, 665),
        st.integers(1, 99),
        st.integers(1, 9999),
    ),
    st.builds(
        lambda s: "sk-" + s,
        st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789", min_size=20, max_size=40),
    ),
    st.builds(
        lambda s: "AKIA" + s, st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=16)
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(pii=PII, before=st.text(max_size=40).filter(lambda t: "\x00" not in t), after=st.text(max_size=40))
def test_sensitive_prompts_never_reach_the_external_provider(engines, gw, pii, before, after) -> None:
    ext = engines[2]
    seen_before = metric(httpx.get(ext.url + "/metrics").text, "vllm:prompt_tokens_total")
    content = f"{before} {pii} {after}"
    r = httpx.post(gw.url + "/v1/chat/completions", json=chat(content), headers=AUTH)
    assert r.status_code == 200
    assert r.headers["x-llmfleet-route"] == "self-hosted"
    assert metric(httpx.get(ext.url + "/metrics").text, "vllm:prompt_tokens_total") == seen_before


def test_general_traffic_goes_external_and_sensitive_fails_closed_without_engines(engines) -> None:
    ext = engines[2]
    s = gateway(
        config(
            engines,
            engines={"static": ["http://127.0.0.1:9"]},
            external={"use": "overflow", "baseURL": ext.url + "/v1", "model": "gpt-ext"},
        ),
        {"alice": KEY},
    )
    try:
        url = s.url + "/v1/chat/completions"
        r = httpx.post(url, json=chat("what is the capital of France?"), headers=AUTH)
        assert r.status_code == 200 and r.headers["x-llmfleet-route"] == "external"
        assert r.json()["model"] == "gpt-ext"
        r = httpx.post(url, json=chat("mail me at a@b.example"), headers=AUTH)
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_upstream"
        r = httpx.post(url, json=chat("hi"), headers={**AUTH, "X-Data-Sensitivity": "sensitive"})
        assert r.status_code == 503
    finally:
        s.stop()


def test_engine_killed_mid_load_loses_no_request_that_had_not_started_streaming() -> None:
    a, b = engine("m", 2.0), engine("m", 2.0)
    s = gateway(
        {
            "model": "m",
            "engines": {"static": [a.url, b.url]},
            "routing": "least-outstanding",
            "limits": {"requestsPerMinute": 0, "tokensPerMinute": 0},
        },
        None,
    )
    results: list[tuple[bool, int, bool, bool]] = []  # (stream, status, complete, got_bytes_before_kill)
    killed_at: list[float] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        stream = i % 2 == 0
        body = chat(f"request {i}", max_tokens=60, stream=stream)
        got_first = None
        try:
            if stream:
                async with client.stream("POST", s.url + "/v1/chat/completions", json=body) as r:
                    data = b""
                    async for chunk in r.aiter_raw():
                        got_first = got_first or time.perf_counter()
                        data += chunk
                    results.append(
                        (
                            True,
                            r.status_code,
                            data.rstrip().endswith(b"[DONE]"),
                            bool(killed_at) and got_first is not None and got_first < killed_at[0],
                        )
                    )
            else:
                r = await client.post(s.url + "/v1/chat/completions", json=body)
                results.append((False, r.status_code, r.status_code == 200 and "choices" in r.json(), False))
        except httpx.HTTPError:
            results.append(
                (stream, 0, False, bool(killed_at) and got_first is not None and got_first < killed_at[0])
            )

    async def load() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            tasks = [asyncio.create_task(one(client, i)) for i in range(40)]
            await asyncio.sleep(0.15)
            a.stop(signal.SIGKILL)
            killed_at.append(time.perf_counter())
            await asyncio.gather(*tasks)

    try:
        asyncio.run(load())
    finally:
        s.stop()
        b.stop()
    assert len(results) == 40
    lost = [r for r in results if not r[2] and not r[3]]
    assert lost == [], lost  # only streams already under way on the killed engine may be cut
    assert all(r[2] for r in results if not r[0])  # every non-streaming request completed


def test_replicas_that_refuse_connections_do_not_use_up_the_attempts() -> None:
    """Three replicas listed but not listening (pods ready before their process, or gone) sort, and so are
    picked, before the one that serves: a refused connection sent nothing, so the request still gets there."""
    live = engine("m", 50.0)
    dead = [
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
    ]  # nothing listens below 1024 here
    s = gateway(
        {
            "model": "m",
            "engines": {"static": [*dead, live.url]},
            "routing": "least-outstanding",
            "limits": {"requestsPerMinute": 0, "tokensPerMinute": 0},
        },
        None,
    )
    try:
        r = httpx.post(s.url + "/v1/chat/completions", json=chat(), timeout=30)
        refused = metric(
            httpx.get(s.url + "/metrics").text, "llmfleet_gateway_upstream_errors_total", kind="refused"
        )
    finally:
        s.stop()
        live.stop()
    assert r.status_code == 200, r.text
    assert refused == 3


@pytest.mark.parametrize("asked", ["nothing", "usage", "continuous"])
def test_token_accounting_is_the_engines_own_usage_and_the_client_gets_what_it_asked(asked: str) -> None:
    """With --stream-interval 4 a frame carries up to four tokens: counting frames was off by 3x. The gateway asks
    vLLM for its usage chunk, counts exactly that, and strips it when the client did not ask for it; with
    continuous_usage_stats every chunk carries the usage so far, and the count is still exact."""
    e = engine("m", 50.0, "--stream-interval", "4")
    s = gateway(
        {
            "model": "m",
            "engines": {"static": [e.url]},
            "limits": {"requestsPerMinute": 0, "tokensPerMinute": 0},
        },
        None,
    )
    try:
        options = {
            "usage": {"include_usage": True},
            "continuous": {"include_usage": True, "continuous_usage_stats": True},
        }
        extra = {"stream_options": options[asked]} if asked in options else {}
        events = []
        for i in range(3):
            with httpx.stream(
                "POST",
                s.url + "/v1/chat/completions",
                json=chat(f"usage {i}", stream=True, max_tokens=37, ignore_eos=True, **extra),
            ) as r:
                events += [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        whole = httpx.post(s.url + "/v1/chat/completions", json=chat("usage whole", max_tokens=11)).json()
        gw_metrics, engine_metrics = httpx.get(s.url + "/metrics").text, httpx.get(e.url + "/metrics").text
    finally:
        s.stop()
        e.stop()
    usage_chunks = [ev for ev in events if not ev["choices"]]
    assert len(usage_chunks) == (0 if asked == "nothing" else 3)  # exactly what the client asked for
    running = [ev["usage"]["completion_tokens"] for ev in events if ev["choices"] and "usage" in ev]
    if asked == "continuous":  # every chunk, role chunk included: the usage so far
        assert len(running) == sum(1 for ev in events if ev["choices"]) > 3
        assert running.count(37) == 3 and max(running) == 37  # each stream's finishing chunk: all 37
    else:
        assert running == []
    assert all(u["usage"]["completion_tokens"] == 37 for u in usage_chunks)
    text_frames = [ev for ev in events if ev["choices"] and ev["choices"][0]["delta"].get("content")]
    assert len(text_frames) < 3 * 37 / 2  # the engine did batch tokens into frames
    counted = metric(gw_metrics, "llmfleet_gateway_tokens_total", route="self-hosted", kind="completion")
    generated = metric(engine_metrics, "vllm:generation_tokens_total")
    assert counted == generated == 3 * 37 + whole["usage"]["completion_tokens"] == 3 * 37 + 11
    prompts = metric(gw_metrics, "llmfleet_gateway_tokens_total", route="self-hosted", kind="prompt")
    assert prompts == metric(engine_metrics, "vllm:prompt_tokens_total")


def test_an_engine_at_its_admission_limit_answers_503_and_the_gateway_moves_on_without_ejecting_it() -> None:
    """vLLM's --max-num-queued-reqs: past it the engine answers 503 with vLLM's error body (code = the status). The
    gateway serves the request from another replica and passes the busy one over only briefly (50 ms, doubling):
    a replica whose queue is full is healthy, and a 10 s ejection would waste it."""
    a = engine("m", 2.0, "--max-num-queued-reqs", "2")
    b = engine("m", 20.0)
    full = engine("m", 20.0, "--max-num-queued-reqs", "0")  # refuses everything: its queue never has room
    try:

        async def burst(url: str, n: int) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as c:
                return await asyncio.gather(
                    *[
                        c.post(url + "/v1/chat/completions", json=chat(f"q{i}", max_tokens=30))
                        for i in range(n)
                    ]
                )

        direct = [r for r in asyncio.run(burst(a.url, 6)) if r.status_code == 503]
        assert direct and direct[0].json()["error"] == {
            "message": "The engine is currently busy and cannot accept new requests. Please try again later or on a "
            "different instance.",
            "type": "Service Unavailable",
            "param": None,
            "code": 503,
        }
        s = gateway(
            {
                "model": "m",
                "engines": {"static": [full.url, b.url]},
                "routing": "least-outstanding",
                "limits": {"requestsPerMinute": 0, "tokensPerMinute": 0},
            },
            None,
        )
        try:
            statuses = []
            for i in range(6):
                statuses.append(
                    httpx.post(s.url + "/v1/chat/completions", json=chat(f"r{i}"), timeout=30).status_code
                )
                time.sleep(0.45)  # longer than the back-offs so far (50, 100, 200, 400 ms)
            gw_503 = metric(
                httpx.get(s.url + "/metrics").text, "llmfleet_gateway_upstream_errors_total", kind="http_503"
            )
        finally:
            s.stop()
        refusals = metric(httpx.get(full.url + "/metrics").text, "vllm:admission_rejections_total")
    finally:
        for e in (a, b, full):
            e.stop()
    assert statuses == [200] * 6
    assert refusals == gw_503 >= 4  # tried again after each short back-off, not kept out for 10 s


def test_engine_sim_clamps_max_tokens_to_the_context_as_vllm_does() -> None:
    """vLLM 0.33 (get_max_tokens) never refuses max_tokens: it is clamped to the rest of the context; only a prompt
    longer than the context is a 400."""
    e = engine("m", 200.0, "--max-model-len", "300")
    try:
        r = httpx.post(
            e.url + "/v1/completions",
            json={"model": "m", "prompt": "x" * 400, "max_tokens": 5000},
            timeout=30,
        )
        long = httpx.post(e.url + "/v1/completions", json={"model": "m", "prompt": "x" * 1600}, timeout=30)
    finally:
        e.stop()
    assert r.status_code == 200 and r.json()["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 200,
        "total_tokens": 300,
    }
    assert long.status_code == 400 and long.json()["error"]["code"] == 400
    assert (
        long.json()["error"]["message"] == "Input length (400) exceeds model's maximum context length (300)."
    )


def test_engine_sim_metrics_move_with_load() -> None:
    e = engine("m", 1.0)
    try:
        before = httpx.get(e.url + "/metrics").text
        assert "vllm:num_requests_running" in before and "vllm:kv_cache_usage_perc" in before
        running_seen = []
        stop = threading.Event()

        def scrape() -> None:
            while not stop.is_set():
                running_seen.append(metric(httpx.get(e.url + "/metrics").text, "vllm:num_requests_running"))
                time.sleep(0.02)

        t = threading.Thread(target=scrape)
        t.start()

        async def load() -> None:
            async with httpx.AsyncClient(timeout=60) as c:
                # One request first, so its prompt's blocks are cached before the burst that shares them.
                await c.post(e.url + "/v1/chat/completions", json=chat("q" * 400, max_tokens=30))
                await asyncio.gather(
                    *[
                        c.post(e.url + "/v1/chat/completions", json=chat("q" * 400, max_tokens=30))
                        for _ in range(16)
                    ]
                )

        asyncio.run(load())
        stop.set()
        t.join()
        after = httpx.get(e.url + "/metrics").text
        assert max(running_seen) >= 2
        assert (
            metric(after, "vllm:generation_tokens_total") - metric(before, "vllm:generation_tokens_total")
            == 17 * 30
        )
        assert metric(after, "vllm:prompt_tokens_total") > metric(before, "vllm:prompt_tokens_total")
        assert metric(after, "vllm:time_to_first_token_seconds_count") == 17
        assert metric(after, "vllm:prefix_cache_hits_total") > 0  # the burst reuses the first prompt's prefix
        assert metric(after, "vllm:num_requests_running") == 0
    finally:
        e.stop()


@pytest.mark.parametrize("timeout", [0, 30])
def test_engine_sim_sigterm_drains_or_aborts_like_vllm(timeout: int) -> None:
    """vLLM 0.33 on SIGTERM: the listener stays open; a new request is answered at once with finish_reason
    "abort" and no tokens; in-flight requests finish (--shutdown-timeout N) or end aborted (0, the default)."""
    # The listener stays open 30 s after the engine's shutdown (vLLM's own API server takes a moment; 0.2 s by
    # default here), so the late requests below meet it however slow the machine; stop() signals again.
    e = engine("m", 1.0, "--shutdown-timeout", str(timeout), "--shutdown-linger", "30")
    out: list[httpx.Response] = []

    def call() -> None:
        out.append(
            httpx.post(e.url + "/v1/chat/completions", json=chat(max_tokens=100, ignore_eos=True), timeout=30)
        )

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    e.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    late = httpx.post(e.url + "/v1/chat/completions", json=chat(max_tokens=5), timeout=10)
    with httpx.stream(
        "POST", e.url + "/v1/chat/completions", json=chat(max_tokens=5, stream=True), timeout=10
    ) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    t.join()
    code = e.stop(signal.SIGTERM)
    assert code in (0, -signal.SIGTERM)
    assert late.status_code == 200 and late.json()["choices"][0]["finish_reason"] == "abort"
    assert late.json()["usage"]["completion_tokens"] == 0
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1]["choices"][0]["finish_reason"] == "abort"
    answer = out[0].json()
    if timeout:
        assert (
            answer["choices"][0]["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == 100
        )
    else:
        assert answer["choices"][0]["finish_reason"] == "abort" and answer["usage"]["completion_tokens"] < 100


def load_through(url: str, n: int, max_tokens: int, during) -> list[tuple[bool, int, bytes]]:
    """n requests (every other one streamed) through a gateway; ``during()`` runs once they are under way, then
    n more are sent. Each result: (stream, status, body)."""
    results: list[tuple[bool, int, bytes]] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        stream = i % 2 == 0
        body = chat(f"request {i}", max_tokens=max_tokens, stream=stream, ignore_eos=True)  # a fixed length
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            data = b""
            async for chunk in r.aiter_raw():
                data += chunk
            results.append((stream, r.status_code, data))

    async def run() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            tasks = [asyncio.create_task(one(client, i)) for i in range(n)]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(during)
            await asyncio.sleep(0.1)
            tasks += [asyncio.create_task(one(client, n + i)) for i in range(n)]
            await asyncio.gather(*tasks)

    asyncio.run(run())
    return results


@pytest.mark.parametrize("timeout", [0, 60])
def test_an_engine_shutting_down_under_load_loses_nothing_that_had_not_started(timeout: int) -> None:
    """SIGTERM one of two engines under load. Draining (--shutdown-timeout 60): every request completes, the
    ones it turned away (finish_reason "abort": a second wave sent after the signal) retried on the other. Aborting (0): requests whose text had
    not reached the client are retried; streams under way end with an SSE error event, never a clean end."""
    a, b = engine("m", 2.0, "--shutdown-timeout", str(timeout)), engine("m", 2.0)
    s = gateway(
        {
            "model": "m",
            "engines": {"static": [a.url, b.url]},
            "routing": "least-outstanding",
            "limits": {"requestsPerMinute": 0, "tokensPerMinute": 0},
        },
        None,
    )
    try:
        results = load_through(s.url, 40, 60, lambda: a.proc.send_signal(signal.SIGTERM))
        retried = metric(
            httpx.get(s.url + "/metrics").text, "llmfleet_gateway_upstream_errors_total", kind="abort"
        )
    finally:
        s.stop()
        a.stop()
        b.stop()
    assert len(results) == 80
    whole = [(st, code, body) for st, code, body in results if not st]
    assert all(
        code == 200 and json.loads(body)["choices"][0]["finish_reason"] == "length" for _, code, body in whole
    )
    streams = [body for st, _, body in results if st]
    clean = [x for x in streams if x.rstrip().endswith(b"data: [DONE]") and b'"finish_reason":"length"' in x]
    cut = [x for x in streams if x not in clean]
    assert all(b'"finish_reason":"abort"' not in x or b"upstream_cut" in x for x in streams)
    assert all(b"upstream_cut" in x and not x.rstrip().endswith(b"[DONE]") for x in cut), cut
    assert retried > 0  # the second wave met the engine shutting down: its abort answers were retried
    if timeout:
        assert cut == []
    assert len(clean) + len(cut) == 40


def test_gateway_access_log_has_no_prompt_text(engines) -> None:
    s = gateway(config(engines), {"alice": KEY})
    try:
        httpx.post(
            s.url + "/v1/chat/completions",
            json=chat("TOP-SECRET-PROMPT-TEXT"),
            headers={**AUTH, "X-Data-Sensitivity": "sensitive"},
        )
        metrics = httpx.get(s.url + "/metrics").text
        assert metric(metrics, "llmfleet_gateway_requests_total", route="self-hosted", status="200") == 1
    finally:
        s.stop()
    lines = [json.loads(line) for line in s.output().splitlines() if line.startswith("{")]
    assert lines and lines[-1]["status"] == 200 and lines[-1]["route"] == "self-hosted"
    assert "TOP-SECRET" not in s.output()


def test_sensitive_server_unused(gw: Server) -> None:
    assert gw.proc.poll() is None


def test_engine_sim_ends_answers_like_vllm() -> None:
    """EOS after the prompt's own length (finish_reason "stop", fewer tokens than max_tokens) unless ignore_eos;
    a stop string ends the answer and is cut from it; the streamed text, with the last token on the finishing
    chunk, is the whole answer's."""
    e = engine("m", 200.0)
    try:

        def ask(**extra) -> dict:
            return httpx.post(e.url + "/v1/chat/completions", json=chat("ends", **extra), timeout=60).json()

        eos = ask(max_tokens=4000)
        with httpx.stream(
            "POST", e.url + "/v1/chat/completions", json=chat("ends", max_tokens=4000, stream=True)
        ) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        full = ask(max_tokens=300, ignore_eos=True)
        stopped = ask(max_tokens=300, ignore_eos=True, stop=["cache"])
        kept = ask(max_tokens=300, ignore_eos=True, stop=["cache"], include_stop_str_in_output=True)
        floor = ask(max_tokens=4000, min_tokens=eos["usage"]["completion_tokens"] + 5)
    finally:
        e.stop()
    n = eos["usage"]["completion_tokens"]
    assert eos["choices"][0]["finish_reason"] == "stop" and 32 <= n < 4000
    streamed = "".join(ev["choices"][0]["delta"].get("content", "") for ev in events)
    assert streamed == eos["choices"][0]["message"]["content"]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert full["choices"][0]["finish_reason"] == "length" and full["usage"]["completion_tokens"] == 300
    text = full["choices"][0]["message"]["content"]
    cut = text.index("cache")
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["choices"][0]["message"]["content"] == text[:cut]
    assert kept["choices"][0]["message"]["content"] == text[: cut + len("cache")]
    assert floor["choices"][0]["finish_reason"] == "stop" and floor["usage"]["completion_tokens"] == n + 6
