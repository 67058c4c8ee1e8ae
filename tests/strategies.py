"""Hypothesis strategies for OpenAI requests with a sensitive value placed in any field: every field of the chat
and completions request schemas (tools, tool calls, function calls, content parts, prompt lists, prediction,
metadata, response formats, ...), and the values the detectors must find, plain or disguised."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# What must never leave the cluster, as a careless client would paste it (the disguises included).
SENSITIVE_VALUES = [
    "jane.doe@example.com",
    "ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    "ja\u200bne@exam\u200bple.org",
    "bob.smith+tag@mail.co.uk",
    "4111 1111 1111 1111",
    "4111111111111111",
    "5500-0000-0000-0004",
    "3782 822463 10005",
    "４１１１ １１１１ １１１１ １１１１",
    "4111\u00a01111\u00a01111\u00a01111",
    "4111  1111  1111  1111",
    "4111.1111.1111.1111",
    "4111\u200b1111\u200b1111\u200b1111",
    "6011 1111 1111 1117",
    "123-45-6789",
    "SSN 123456789",
    "my ssn is 234 56 7890",
    "sk-proj-abcdefghijklmnopqrstuvwx1234",
    "sk_live_51HabcdefghijKLMNOP",
    "rk_live_0123456789abcdef",
    "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "github_pat_11AAAAAAA0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
    "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "xoxb-123456789012-abcdefghij",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THs",
    "password: hunter2hunter2",
    "postgres://admin:s3cretpass@db.internal:5432/app",
]
# Integer leaves that are card numbers (a number field is a leaf too).
SENSITIVE_NUMBERS = [4111111111111111, 5500000000000004, 378282246310005]

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_word = st.sampled_from(
    ["hello", "weather", "summarise this", "get_weather", "city", "json", "Paris", "x", ""]
)
_str = st.one_of(_word, _text)


def _content_parts() -> st.SearchStrategy[list[dict[str, Any]]]:
    part = st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": _str}),
        st.fixed_dictionaries(
            {
                "type": st.just("image_url"),
                "image_url": st.fixed_dictionaries(
                    {"url": _str}, optional={"detail": st.sampled_from(["auto", "low", "high"])}
                ),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("input_audio"),
                "input_audio": st.fixed_dictionaries(
                    {"data": _str, "format": st.sampled_from(["wav", "mp3"])}
                ),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("file"),
                "file": st.fixed_dictionaries(
                    {}, optional={"file_data": _str, "filename": _str, "file_id": _str}
                ),
            }
        ),
    )
    return st.lists(part, min_size=1, max_size=3)


_tool_call = st.fixed_dictionaries(
    {
        "id": _str,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": _str, "arguments": _str}),
    }
)
_message = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer", "user"]),
            "content": st.one_of(_str, _content_parts()),
        },
        optional={"name": _str},
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant")},
        optional={
            "content": st.one_of(st.none(), _str),
            "name": _str,
            "refusal": st.one_of(st.none(), _str),
            "tool_calls": st.lists(_tool_call, max_size=2),
            "function_call": st.fixed_dictionaries({"name": _str, "arguments": _str}),
            "audio": st.fixed_dictionaries({"id": _str}),
        },
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "content": st.one_of(_str, _content_parts()), "tool_call_id": _str}
    ),
    st.fixed_dictionaries({"role": st.just("function"), "content": _str, "name": _str}),
)
_schema = st.recursive(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["string", "integer"])},
        optional={"description": _str, "enum": st.lists(_str, max_size=2)},
    ),
    lambda inner: st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(_word, inner, max_size=2)}
    ),
    max_leaves=4,
)
_tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": _str}, optional={"description": _str, "parameters": _schema, "strict": st.booleans()}
        ),
    }
)
_common = {
    "user": _str,
    "metadata": st.dictionaries(_word, _str, max_size=3),
    "stop": st.one_of(_str, st.lists(_str, max_size=3)),
    "logit_bias": st.dictionaries(st.integers(0, 50000).map(str), st.integers(-100, 100), max_size=2),
    "seed": st.integers(0, 2**31),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "n": st.integers(1, 2),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "max_tokens": st.integers(1, 64),
    "safety_identifier": _str,
    "prompt_cache_key": _str,
    "service_tier": st.sampled_from(["auto", "default"]),
}
CHAT = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(_message, min_size=1, max_size=4)},
    optional={
        **_common,
        "tools": st.lists(_tool, max_size=2),
        "tool_choice": st.one_of(
            st.sampled_from(["auto", "none", "required"]),
            st.fixed_dictionaries(
                {"type": st.just("function"), "function": st.fixed_dictionaries({"name": _str})}
            ),
        ),
        "functions": st.lists(
            st.fixed_dictionaries({"name": _str}, optional={"description": _str, "parameters": _schema}),
            max_size=2,
        ),
        "function_call": st.one_of(st.just("auto"), st.fixed_dictionaries({"name": _str})),
        "response_format": st.one_of(
            st.fixed_dictionaries({"type": st.just("text")}),
            st.fixed_dictionaries(
                {
                    "type": st.just("json_schema"),
                    "json_schema": st.fixed_dictionaries(
                        {"name": _str},
                        optional={"description": _str, "schema": _schema, "strict": st.booleans()},
                    ),
                }
            ),
        ),
        "prediction": st.fixed_dictionaries(
            {"type": st.just("content"), "content": st.one_of(_str, _content_parts())}
        ),
        "audio": st.fixed_dictionaries({"voice": _str, "format": st.sampled_from(["wav", "mp3"])}),
        "modalities": st.lists(st.sampled_from(["text", "audio"]), max_size=2),
        "web_search_options": st.fixed_dictionaries(
            {
                "user_location": st.fixed_dictionaries(
                    {
                        "type": st.just("approximate"),
                        "approximate": st.fixed_dictionaries(
                            {}, optional={"city": _str, "country": _str, "region": _str, "timezone": _str}
                        ),
                    }
                )
            }
        ),
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
        "store": st.booleans(),
        "guided_json": _schema,
        "chat_template_kwargs": st.dictionaries(_word, _str, max_size=2),  # vLLM's own fields
    },
)
COMPLETION = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "prompt": st.one_of(
            _str,
            st.lists(_str, min_size=1, max_size=3),
            st.lists(st.integers(0, 50000), min_size=1, max_size=5),
            st.lists(st.lists(st.integers(0, 50000), min_size=1, max_size=3), min_size=1, max_size=2),
        ),
    },
    optional={
        **_common,
        "suffix": _str,
        "echo": st.booleans(),
        "logprobs": st.integers(0, 5),
        "best_of": st.integers(1, 2),
    },
)


def _slots(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Where a value can be placed: every string leaf ('value'), every dict key ('key'), every number ('number');
    the model field is the gateway's own and is left out."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if path == () and k == "model":
                continue
            out.append(((*path, k), "key"))
            out.extend(_slots(v, (*path, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_slots(v, (*path, i)))
    elif isinstance(node, str):
        out.append((path, "value"))
    elif isinstance(node, int | float) and not isinstance(node, bool):
        out.append((path, "number"))
    return out


def _place(body: Any, path: tuple[Any, ...], kind: str, value: Any) -> None:
    parent = body
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if kind == "key":
        parent[f"{value}"] = parent.pop(last)
    elif kind == "number" and isinstance(value, int):
        parent[last] = value
    else:
        parent[last] = f"{parent[last] if isinstance(parent[last], str) else ''} {value} "


@st.composite
def request_with_sensitive_value(
    draw: Any, kind: st.SearchStrategy[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], str]:
    """(a valid OpenAI request body, the sensitive value placed in one of its fields)."""
    body = draw(kind if kind is not None else st.one_of(CHAT, COMPLETION))
    slot, slot_kind = draw(st.sampled_from(_slots(body)))
    if slot_kind == "number":
        value: Any = draw(st.sampled_from(SENSITIVE_NUMBERS))
    else:
        value = draw(st.sampled_from(SENSITIVE_VALUES))
    _place(body, slot, slot_kind, value)
    return body, str(value)
