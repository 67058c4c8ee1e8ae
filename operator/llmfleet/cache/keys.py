"""What makes two requests the same (pure): exact-cache keys, the semantic-cache context, cacheability.

Exact key: SHA-256 over a canonical JSON of everything that changes the output (model, every message,
and the sampling parameters), partitioned by tenant and model. The semantic cache embeds only the last
user turn; everything else (system prompt, earlier turns, sampling parameters) goes into a context hash
that must match exactly, so "same question, different system prompt" is never a hit.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from llmfleet.cache.guards import signature

# Request fields that change the completion. Anything else (stream, user, metadata…) does not.
OUTPUT_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "response_format",
    "functions",
    "function_call",
    "min_p",
    "suffix",
    "echo",
    "best_of",
)


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def sampling(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in OUTPUT_FIELDS if k in body and body[k] is not None}


def exact_key(tenant: str, model: str, path: str, body: dict[str, Any]) -> str:
    content = {
        "path": path,
        "model": model,
        "messages": body.get("messages"),
        "prompt": body.get("prompt"),
        "sampling": sampling(body),
    }
    return f"llmfleet:exact:{tenant}:{model}:{hashlib.sha256(_canonical(content)).hexdigest()}"


def split_last_user_turn(path: str, body: dict[str, Any]) -> tuple[str, str] | None:
    """(query text, context hash) for the semantic cache, or None when there is no plain-text user turn. The
    context hash covers everything but the query that must match: path, earlier turns, sampling, and the
    query's guard signature."""
    if path.endswith("/completions") and "messages" not in body:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return None
        ctx = {"path": path, "sampling": sampling(body), "guard": signature(prompt)}
        return prompt, hashlib.sha256(_canonical(ctx)).hexdigest()[:32]
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return None
    last = msgs[-1]
    if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), str):
        return None
    # The guard signature (numbers with units, negation: cache/guards.py) joins the context: a question only
    # ever meets cached questions that agree on it.
    ctx = {
        "path": path,
        "history": msgs[:-1],
        "sampling": sampling(body),
        "guard": signature(last["content"]),
    }
    return last["content"], hashlib.sha256(_canonical(ctx)).hexdigest()[:32]


def cacheable(
    body: dict[str, Any], replay: str, cache_control: bytes | None, opt_in: bool
) -> tuple[bool, bool]:
    """(may look up, may store). Only what is safe to replay: temperature 0 unless replay=always or opt-in;
    `Cache-Control: no-cache` skips the lookup, `no-store` skips storing; n > 1 is never cached."""
    cc = (cache_control or b"").lower()
    n = body.get("n", 1)
    if n not in (None, 1):
        return False, False
    deterministic = body.get("temperature") == 0 or replay == "always" or opt_in
    if not deterministic:
        return False, False
    return b"no-cache" not in cc and b"no-store" not in cc, b"no-store" not in cc
