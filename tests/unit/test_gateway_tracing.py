"""The gateway's tracing decisions (gateway/tracing.py), with the SDK's in-memory exporter: which requests get
a span, that a client's trace is continued, and that whatever a client sends as trace context, the engine only
ever gets a well-formed W3C traceparent built from the gateway's own span (never the client's bytes)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmfleet.gateway.config import TracingConfig
from llmfleet.gateway.tracing import Tracing

W3C = re.compile(rb"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")  # flags: sampled, random (level 2)
PATH = "/v1/chat/completions"


def tracing(ratio: float) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    t = Tracing(
        TracingConfig(endpoint="http://127.0.0.1:1", sample_ratio=ratio), "m", "ns", exporter=exporter
    )
    return t, exporter


T_ALL, _ = tracing(1.0)


@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=200)))
def test_any_client_trace_context_yields_a_well_formed_traceparent_or_none(
    raw: bytes, state: bytes | None
) -> None:
    span = T_ALL.start(raw, state, PATH)
    out = Tracing.traceparent(span)
    assert out is None or W3C.match(out)
    assert out is None or b"\r" not in out and b"\n" not in out
    span.end()


@given(st.from_regex(r"\A[0-9a-f]{32}\Z"), st.from_regex(r"\A[0-9a-f]{16}\Z"), st.sampled_from(["00", "01"]))
def test_a_valid_client_trace_is_continued_with_its_sampling_decision(
    trace: str, parent: str, flags: str
) -> None:
    t, exporter = tracing(0.0)  # the ratio applies to requests without a trace only
    span = t.start(f"00-{trace}-{parent}-{flags}".encode(), None, PATH)
    ctx = span.get_span_context()
    if int(trace, 16) == 0 or int(parent, 16) == 0:  # invalid IDs (W3C): a new root
        return
    assert f"{ctx.trace_id:032x}" == trace
    assert span.is_recording() is (flags == "01")
    assert Tracing.traceparent(span) == f"00-{trace}-{ctx.span_id:016x}-{flags}".encode()
    span.end()
    t.provider.force_flush()
    assert len(exporter.get_finished_spans()) == (1 if flags == "01" else 0)


def test_without_a_client_trace_the_ratio_decides_before_any_span_exists() -> None:
    none, _ = tracing(0.0)
    assert all(none.start(None, None, PATH) is None for _ in range(200))
    every, _ = tracing(1.0)
    assert all(every.start(None, None, PATH).is_recording() for _ in range(50))
    tenth, _ = tracing(0.1)
    n = sum(tenth.start(None, None, PATH) is not None for _ in range(5000))
    assert 350 < n < 650  # 10 % of 5000, well within binomial noise


def test_the_exporter_url_gets_the_otlp_traces_path_once() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    for endpoint in ("http://c:4318", "http://c:4318/", "http://c:4318/v1/traces"):
        t = Tracing(TracingConfig(endpoint=endpoint), "m", "ns")
        exporter = t.processor._batch_processor._exporter  # the SDK's own object
        assert isinstance(exporter, OTLPSpanExporter) and exporter._endpoint == "http://c:4318/v1/traces"
        t.shutdown()
