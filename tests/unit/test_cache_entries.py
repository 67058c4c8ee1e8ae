"""What the cache keeps: whole answers only. vLLM 0.33 answers an aborted request, a failed generation and an
in-stream error with HTTP 200; none of those may be stored and replayed (to near-duplicate questions too)."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet import wire
from llmfleet.cache.entries import as_json, as_sse, from_json_response, from_sse


def vllm_stream(deltas: list[str], finish: str, error: bool = False, usage: bool = False) -> bytes:
    """A chat stream as vLLM 0.33 writes it: a role chunk first, content chunks, the finish chunk, the usage chunk
    when asked, `[DONE]`; an error mid-stream is `data: {"error": ...}` (json.dumps, with spaces) then `[DONE]`."""
    out = wire.Stream("m", chat=True)
    body = wire.sse(
        {
            **out.head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
    )
    for d in deltas:
        body += wire.sse(
            {
                **out.head,
                "choices": [{"index": 0, "delta": {"content": d}, "logprobs": None, "finish_reason": None}],
            }
        )
    if error:
        err = {
            "error": {
                "message": "Internal server error",
                "type": "InternalServerError",
                "param": None,
                "code": 500,
            }
        }
        return body + f"data: {json.dumps(err)}\n\n".encode() + wire.DONE
    body += wire.sse(
        {**out.head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]}
    )
    if usage:
        body += wire.sse({**out.head, "choices": [], "usage": wire.usage(5, len(deltas))})
    return body + wire.DONE


def vllm_whole(content: str, finish: str) -> bytes:
    return wire.completion("m", True, content, finish, 5, len(content.split()))


@pytest.mark.parametrize(
    "body",
    [
        vllm_stream([], "abort"),  # turned away by an engine shutting down
        vllm_stream(["Hel", "lo"], "abort"),  # aborted mid-way (shutdown with --shutdown-timeout 0)
        vllm_stream(["Hel", "lo"], "error"),
        vllm_stream(["Hel", "lo"], "length", error=True),  # GenerationError after some text
        vllm_stream([], "length"),  # no text at all
    ],
    ids=["abort-before-text", "abort-mid-way", "finish-error", "error-event", "empty"],
)
def test_failed_or_empty_streams_are_not_cached(body: bytes) -> None:
    assert from_sse(body, chat=True) is None


@pytest.mark.parametrize(
    "body",
    [
        vllm_whole("", "abort"),
        vllm_whole("partial answer", "abort"),
        vllm_whole("x", "error"),
        vllm_whole("", "length"),
    ],
    ids=["abort-before-text", "abort-mid-way", "finish-error", "empty"],
)
def test_failed_or_empty_whole_answers_are_not_cached(body: bytes) -> None:
    assert from_json_response(body, chat=True) is None


def test_whole_answers_are_cached_and_replayed_as_they_were() -> None:
    entry = from_sse(vllm_stream(["Hel", "lo"], "stop", usage=True), chat=True)
    assert entry is not None and entry["content"] == "Hello" and entry["finish_reason"] == "stop"
    assert entry["completion_tokens"] == 2
    assert orjson.loads(as_json(entry, "m"))["choices"][0]["message"]["content"] == "Hello"
    assert as_sse(entry, "m", include_usage=False).rstrip().endswith(b"[DONE]")
    whole = from_json_response(vllm_whole("Hello there", "length"), chat=True)
    assert whole is not None and whole["content"] == "Hello there"


@given(
    deltas=st.lists(st.text(min_size=0, max_size=8), max_size=6),
    finish=st.sampled_from(["stop", "length", "abort", "error", "tool_calls"]),
    error=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_an_entry_is_made_only_from_a_whole_non_empty_answer(
    deltas: list[str], finish: str, error: bool
) -> None:
    entry = from_sse(vllm_stream(deltas, finish, error=error), chat=True)
    whole = "".join(deltas) != "" and finish not in ("abort", "error") and not error
    assert (entry is not None) == whole
    if entry is not None:
        assert entry["content"] == "".join(deltas)
