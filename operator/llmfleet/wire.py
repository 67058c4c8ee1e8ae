"""The OpenAI wire format, written in one place: error bodies, completion bodies, stream chunks and SSE events,
for the gateway, the cache's replays and engine-sim (Envoy AI Gateway's `apischema/openai` is the model).

Pure functions over plain values; orjson does the encoding.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
SSE_CONTENT_TYPE = b"text/event-stream"
JSON_CONTENT_TYPE = b"application/json"

# Error types, as OpenAI names them.
INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


def error(
    message: str, type_: str = INVALID_REQUEST, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body(
    message: str, type_: str = INVALID_REQUEST, code: str | None = None, param: str | None = None
) -> bytes:
    return orjson.dumps(error(message, type_, code, param))


def sse(obj: Any) -> bytes:
    """One SSE event carrying a JSON object."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_error(message: str, code: str, type_: str = SERVER_ERROR) -> bytes:
    """The event that ends a stream which did not end the way the engine meant (no `[DONE]` after it): OpenAI's
    SDKs raise an APIError on an event whose data holds `error`."""
    return sse(error(message, type_, code))


def completion_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    model: str,
    chat: bool,
    content: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    rid: str | None = None,
    created: int | None = None,
) -> bytes:
    """A whole (non-streaming) chat.completion or text_completion body."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": content}
    else:
        choice["text"] = content
    return orjson.dumps(
        {
            "id": rid or completion_id(chat),
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()) if created is None else created,
            "model": model,
            "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens),
        }
    )


class Stream:
    """The chunks of one streamed completion: the first delta carries the role, the last the finish reason,
    then the usage chunk if asked for, then `[DONE]`."""

    __slots__ = ("chat", "created", "first", "head", "object", "rid")

    def __init__(self, model: str, chat: bool, rid: str | None = None, created: int | None = None) -> None:
        self.chat = chat
        self.rid = rid or completion_id(chat)
        self.created = int(time.time()) if created is None else created
        self.object = "chat.completion.chunk" if chat else "text_completion"
        self.head = {"id": self.rid, "object": self.object, "created": self.created, "model": model}
        self.first = True

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse({**self.head, "choices": choices, **extra})

    def delta(self, text: str, usage_counts: tuple[int, int] | None = None) -> bytes:
        """A text chunk; with `usage_counts` (prompt, completion so far) it carries usage too (vLLM's
        `stream_options.continuous_usage_stats`)."""
        if self.chat:
            delta: dict[str, Any] = {"content": text}
            if self.first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
        self.first = False
        if usage_counts is not None:
            return self._chunk([choice], usage=usage(*usage_counts))
        return self._chunk([choice])

    def end(
        self,
        finish_reason: str,
        usage_counts: tuple[int, int] | None = None,
        text: str = "",
        continuous_usage: bool = False,
    ) -> bytes:
        """The finishing chunk (carrying the last `text`, as vLLM's does), the usage chunk when `usage_counts`
        (prompt, completion) is given, and [DONE]; with `continuous_usage` the finishing chunk carries the usage
        too."""
        final: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
        if self.chat:
            final["delta"] = {"content": text} if text else {}
        else:
            final["text"] = text
        extra = {"usage": usage(*usage_counts)} if continuous_usage and usage_counts is not None else {}
        out = self._chunk([final], **extra)
        if usage_counts is not None:
            out += self._chunk([], usage=usage(*usage_counts))
        return out + DONE
