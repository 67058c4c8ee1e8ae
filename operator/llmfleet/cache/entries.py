"""Cache entries: what is stored (the completion, not the wire bytes), and how a hit is replayed (pure).

A hit is served as a fresh response (new id and `created`): JSON for a plain request, or SSE chunks
ending in `data: [DONE]` for a streaming one, so an OpenAI client cannot tell it from a live answer.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

VERSION = 1


class CorruptEntry(ValueError):
    pass


def from_json_response(data: bytes, chat: bool) -> dict[str, Any] | None:
    """An entry from a complete non-streaming response; None when it is not worth caching."""
    try:
        resp = orjson.loads(data)
        choice = resp["choices"][0]
        content = choice["message"]["content"] if chat else choice["text"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(content, str) or (chat and choice["message"].get("tool_calls")):
        return None
    usage = resp.get("usage") or {}
    return {"v": VERSION, "chat": chat, "content": content, "finish_reason": choice.get("finish_reason") or "stop",
            "prompt_tokens": int(usage.get("prompt_tokens", 0)), "completion_tokens": int(usage.get("completion_tokens", 0))}


def from_sse(data: bytes, chat: bool) -> dict[str, Any] | None:
    """An entry from a complete SSE stream (must end with [DONE]); None when incomplete or not text."""
    if not data.rstrip().endswith(b"data: [DONE]"):
        return None
    parts: list[str] = []
    finish = None
    usage: dict[str, Any] = {}
    for line in data.split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        try:
            chunk = orjson.loads(line[6:])
        except orjson.JSONDecodeError:
            return None
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if chat:
                delta = choice.get("delta") or {}
                if delta.get("tool_calls"):
                    return None
                if isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
            finish = choice.get("finish_reason") or finish
    return {"v": VERSION, "chat": chat, "content": "".join(parts), "finish_reason": finish or "stop",
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)) or max(1, len(parts))}


def decode(raw: bytes | str) -> dict[str, Any]:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptEntry(str(exc)) from None
    if not isinstance(entry, dict) or entry.get("v") != VERSION or not isinstance(entry.get("content"), str):
        raise CorruptEntry("unexpected entry shape")
    return entry


def as_json(entry: dict[str, Any], model: str) -> bytes:
    chat = entry["chat"]
    choice: dict[str, Any] = {"index": 0, "finish_reason": entry["finish_reason"], "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": entry["content"]}
    else:
        choice["text"] = entry["content"]
    return orjson.dumps({
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": model, "choices": [choice],
        "usage": {"prompt_tokens": entry["prompt_tokens"], "completion_tokens": entry["completion_tokens"],
                  "total_tokens": entry["prompt_tokens"] + entry["completion_tokens"]},
    })


def as_sse(entry: dict[str, Any], model: str, include_usage: bool, piece_chars: int = 16) -> bytes:
    chat = entry["chat"]
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"
    text = entry["content"]
    pieces = [text[i:i + piece_chars] for i in range(0, len(text), piece_chars)] or [""]
    out = []
    for i, piece in enumerate(pieces):
        if chat:
            delta: dict[str, Any] = {"content": piece}
            if i == 0:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}
        out.append({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]})
    final: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": entry["finish_reason"]}
    final["delta" if chat else "text"] = {} if chat else ""
    out.append({"id": rid, "object": obj, "created": created, "model": model, "choices": [final]})
    if include_usage:
        out.append({"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": {
            "prompt_tokens": entry["prompt_tokens"], "completion_tokens": entry["completion_tokens"],
            "total_tokens": entry["prompt_tokens"] + entry["completion_tokens"]}})
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in out) + b"data: [DONE]\n\n"
