"""Cache entries: what is stored (the completion, not the wire bytes), and how a hit is replayed (pure).

A hit is served as a fresh response (new id and `created`): JSON for a plain request, or SSE chunks
ending in `data: [DONE]` for a streaming one, so an OpenAI client cannot tell it from a live answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmfleet import wire

VERSION = 1


class CorruptEntry(ValueError):
    pass


# Finish reasons of a request vLLM did not complete (aborted: shutdown, client gone, preemption limits;
# error: a failed generation). Their 200 answers are never cached.
FAILED_FINISH = frozenset({"abort", "error"})


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
    if not content or choice.get("finish_reason") in FAILED_FINISH or resp.get("error"):
        return None  # vLLM answers an aborted or failed request with 200: not an answer to replay
    usage = resp.get("usage") or {}
    return {
        "v": VERSION,
        "chat": chat,
        "content": content,
        "finish_reason": choice.get("finish_reason") or "stop",
        "prompt_tokens": int(usage.get("prompt_tokens", 0)),
        "completion_tokens": int(usage.get("completion_tokens", 0)),
    }


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
        if "error" in chunk:
            return None  # vLLM's in-stream error event (then [DONE]): a failure, whatever came before it
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
    content = "".join(parts)
    if not content or finish in FAILED_FINISH:
        return None
    return {
        "v": VERSION,
        "chat": chat,
        "content": content,
        "finish_reason": finish or "stop",
        "prompt_tokens": int(usage.get("prompt_tokens", 0)),
        "completion_tokens": int(usage.get("completion_tokens", 0)) or max(1, len(parts)),
    }


def decode(raw: bytes | str) -> dict[str, Any]:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptEntry(str(exc)) from None
    if not isinstance(entry, dict) or entry.get("v") != VERSION or not isinstance(entry.get("content"), str):
        raise CorruptEntry("unexpected entry shape")
    return entry


def as_json(entry: dict[str, Any], model: str) -> bytes:
    return wire.completion(
        model,
        entry["chat"],
        entry["content"],
        entry["finish_reason"],
        entry["prompt_tokens"],
        entry["completion_tokens"],
    )


def as_sse(entry: dict[str, Any], model: str, include_usage: bool, piece_chars: int = 16) -> bytes:
    stream = wire.Stream(model, entry["chat"])
    text = entry["content"]
    pieces = [text[i : i + piece_chars] for i in range(0, len(text), piece_chars)] or [""]
    counts = (entry["prompt_tokens"], entry["completion_tokens"]) if include_usage else None
    return b"".join(stream.delta(p) for p in pieces) + stream.end(entry["finish_reason"], counts)
