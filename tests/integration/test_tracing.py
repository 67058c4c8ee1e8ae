"""The gateway's OpenTelemetry traces against a real OTLP/HTTP receiver: one span per request with its stages and
figures, continuing the client's W3C trace, and the trace context passed to the engine, whose own llm_request
span (engine-sim, as vLLM's --otlp-traces-endpoint makes it) is the gateway span's child. Off, nothing is sent
and the engine gets no trace context."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.servers import OtlpReceiver, Server, engine, gateway

pytestmark = pytest.mark.integration

PROMPT = "a prompt that must never reach a trace 4111-1111"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.stop()


@pytest.fixture
def traced_engine(receiver: OtlpReceiver) -> Iterator[Server]:
    srv = engine(
        "m",
        20.0,
        "--otlp-traces-endpoint",
        f"{receiver.url}/v1/traces",
        env={"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    yield srv
    srv.stop()


def _config(engine: Server, tracing: dict | None) -> dict:
    cfg = {"model": "m", "engines": {"static": [engine.url]}, "cache": {"exact": {"enabled": False}}}
    if tracing is not None:
        cfg["tracing"] = tracing
    return cfg


def _stream(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "model": "m",
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers or {}, timeout=30
    ) as r:
        r.read()
        return r


def test_a_request_is_one_span_with_its_stages_and_the_engine_span_is_its_child(
    receiver: OtlpReceiver, traced_engine: Server
) -> None:
    gw = gateway(
        _config(traced_engine, {"endpoint": receiver.url, "sampleRatio": 1.0, "exportIntervalMs": 100})
    )
    try:
        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        r = _stream(gw.url, {"traceparent": f"00-{trace_id}-{parent_id}-01"})
        assert r.status_code == 200
        (span,) = receiver.wait(lambda s: s["name"] == "chat m")
        assert span["kind"] == 2  # SERVER
        assert (span["trace_id"], span["parent_span_id"]) == (trace_id, parent_id)  # the client's trace
        assert [e for e, _ in span["events"]] == ["auth", "limits", "route", "upstream", "first_token"]
        a = span["attributes"]
        assert a["llmfleet.route"] == "self-hosted" and a["http.response.status_code"] == 200
        assert a["gen_ai.request.model"] == "m" and a["gen_ai.usage.output_tokens"] > 0
        assert a["llmfleet.ttft_ms"] > 0 and a["llmfleet.stream"] is True
        assert span["resource"]["service.name"] == "llmfleet-gateway"
        assert all(
            PROMPT not in str(v) and "4111" not in str(v) for v in [*a.values(), *span["resource"].values()]
        )
        times = [t for _, t in span["events"]]
        assert span["start"] <= times[0] and times == sorted(times) and times[-1] <= span["end"]
        # The engine continued the same trace, under the gateway's span (W3C traceparent on the engine request).
        (engine_span,) = receiver.wait(lambda s: s["name"] == "llm_request" and s["trace_id"] == trace_id)
        assert engine_span["parent_span_id"] == span["span_id"]
        assert engine_span["attributes"]["gen_ai.usage.completion_tokens"] == a["gen_ai.usage.output_tokens"]

        # Without a client trace, the gateway starts one; a refused request is a span too.
        r = httpx.post(f"{gw.url}/v1/chat/completions", content=b"{not json", timeout=10)
        assert r.status_code == 400
        (bad,) = receiver.wait(
            lambda s: s["name"] == "chat m" and s["attributes"]["http.response.status_code"] == 400
        )
        assert bad["parent_span_id"] == "" and bad["trace_id"] != trace_id
    finally:
        gw.stop()


def test_sampling_keeps_a_share_but_always_follows_a_sampled_parent(
    receiver: OtlpReceiver, traced_engine: Server
) -> None:
    gw = gateway(
        _config(traced_engine, {"endpoint": receiver.url, "sampleRatio": 0.0, "exportIntervalMs": 100})
    )
    try:
        for _ in range(5):
            assert _stream(gw.url).status_code == 200
        trace_id = secrets.token_hex(16)
        assert _stream(gw.url, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}).status_code == 200
        assert receiver.wait(lambda s: s["name"] == "chat m" and s["trace_id"] == trace_id)
        assert [s for s in receiver.spans if s["name"] == "chat m" and s["trace_id"] != trace_id] == []
    finally:
        gw.stop()


def test_off_sends_nothing_and_passes_no_trace_context_to_the_engine(
    receiver: OtlpReceiver, traced_engine: Server
) -> None:
    gw = gateway(_config(traced_engine, None))
    try:
        trace_id = secrets.token_hex(16)
        assert _stream(gw.url, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}).status_code == 200
        (engine_span,) = receiver.wait(lambda s: s["name"] == "llm_request")
        assert (
            engine_span["parent_span_id"] == "" and engine_span["trace_id"] != trace_id
        )  # nothing propagated
        assert [s for s in receiver.spans if s["name"] != "llm_request"] == []
    finally:
        gw.stop()


def test_engine_sim_refuses_grpc_tracing_as_a_usage_error() -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "llmfleet", "engine-sim", "--otlp-traces-endpoint", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
    )
    assert r.returncode == 2 and "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" in r.stderr
