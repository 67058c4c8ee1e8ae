"""Several models behind one gateway (spec.routing) over real sockets: engine-sim replicas serving two models
and an OpenAI-compatible provider. Rules pick by key, header and task; a client may pin a member by its model
name; the auto policy scores the query against a labelled bank; every forwarded body carries the member's own
model name (engine-sim answers 404 to any other), the response names the member in x-llmfleet-model, and a
sensitive request never reaches the external member."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from llmfleet.modelroute import Bank, ngram_features
from tests.integration.servers import Server, engine, gateway, metric

pytestmark = pytest.mark.integration

KEYS = {"alice": "sk-alice-0123456789", "batch": "sk-batch-0123456789"}
HARD = ["prove the integral of the series converges", "derive the integral bound for the series"]
EASY = ["hello there how are you", "hi there nice to meet you"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    out = {"big": engine("assistant", 50.0), "small": engine("small", 50.0), "ext": engine("ext", 50.0)}
    yield out
    for s in out.values():
        s.stop()


def _bank() -> str:
    """An n-gram bank: questions like HARD needed the large model, questions like EASY did not."""
    v = np.stack([ngram_features(t, 256) for t in HARD + EASY])
    path = Path(tempfile.mkdtemp(prefix="llmfleet-bank-")) / "bank.npz"
    Bank(v, np.array([1, 1, 0, 0], np.float32), np.ones(4, np.float32), "ngram-256").save(path)
    return str(path)


@pytest.fixture(scope="module")
def gw(servers: dict[str, Server]) -> Iterator[Server]:
    cfg = {
        "model": "assistant",
        "engines": {"static": [servers["big"].url]},
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
        "limits": {"requestsPerMinute": 100_000, "tokensPerMinute": 100_000_000},
        "external": {"use": "overflow", "baseURL": servers["ext"].url + "/v1", "model": "ext"},
        "route": {
            "members": [
                {"name": "self", "model": "assistant", "engines": {"static": [servers["big"].url]}},
                {
                    "name": "small8b",
                    "model": "small",
                    "engines": {"static": [servers["small"].url]},
                    "outputTokens": {"default": 3, "max": 6},
                },
            ],
            "rules": [
                {"match": {"keys": ["batch"]}, "to": "small8b"},
                {"match": {"headers": {"X-Tier": "cheap"}}, "to": "small8b"},
                {"match": {"headers": {"x-tier": "outside"}}, "to": "external"},
                {"match": {"tasks": ["code"]}, "to": "self"},
            ],
            "auto": {"small": "small8b", "large": "self", "threshold": 0.5, "k": 2, "bank": _bank()},
        },
    }
    s = gateway(cfg, KEYS)
    yield s
    s.stop()


def _ask(
    gw: Server, text: str, key: str = "alice", model: str = "assistant", **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {KEYS[key]}", **headers},
        timeout=30,
    )


def test_rules_pick_the_member_and_the_engine_gets_its_own_model_name(gw: Server) -> None:
    r = _ask(gw, "hello there how are you", key="batch")
    assert r.status_code == 200, r.text
    assert r.headers["x-llmfleet-model"] == "small"
    assert r.json()["model"] == "small"  # engine-sim serves "small" only: the body was rewritten for it
    r = _ask(gw, "prove the integral of the series converges", **{"X-Tier": "cheap"})
    assert r.headers["x-llmfleet-model"] == "small"
    r = _ask(gw, "```python\ndef f(x):\n    return x\n```\nwhat does this do?")
    assert r.headers["x-llmfleet-model"] == "assistant"  # the code rule, before auto


def test_auto_sends_hard_questions_to_large_and_easy_ones_to_small(gw: Server) -> None:
    assert (
        _ask(gw, "prove that the integral of this series converges").headers["x-llmfleet-model"]
        == "assistant"
    )
    assert _ask(gw, "hi there how are you today").headers["x-llmfleet-model"] == "small"
    text = httpx.get(f"{gw.url}/metrics").text
    assert metric(text, "llmfleet_gateway_model_requests_total", model="small8b", why="auto") >= 1
    assert metric(text, "llmfleet_gateway_model_requests_total", model="self", why="auto") >= 1


def test_a_client_pins_a_member_by_its_model_name_and_unknown_models_are_404(gw: Server) -> None:
    r = _ask(gw, "prove the integral of the series converges", model="small")
    assert r.status_code == 200 and r.headers["x-llmfleet-model"] == "small"
    r = _ask(gw, "hello", model="gpt-4")
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "model"


def test_streams_through_a_member_keep_their_usage_handling(gw: Server) -> None:
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json={
            "model": "assistant",
            "stream": True,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hello there"}],
        },
        headers={"Authorization": f"Bearer {KEYS['batch']}"},
        timeout=30,
    ) as s:
        assert s.status_code == 200 and s.headers["x-llmfleet-model"] == "small"
        lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert not any('"usage":{' in line for line in lines)  # asked of the engine for the limits, not shown


def test_external_takes_general_traffic_only_and_sensitive_requests_stay_self_hosted(gw: Server) -> None:
    r = _ask(gw, "hello there", **{"x-tier": "outside", "X-Data-Sensitivity": "general"})
    assert r.status_code == 200, r.text
    assert r.headers["x-llmfleet-route"] == "external" and r.headers["x-llmfleet-model"] == "ext"
    # Unlabelled (sensitive by default), or with personal data in it: the route's self-hosted default.
    for text, headers in [
        ("hello there", {"x-tier": "outside"}),
        ("mail me at jane.doe@example.com", {"x-tier": "outside", "X-Data-Sensitivity": "general"}),
    ]:
        r = _ask(gw, text, **headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-llmfleet-route"] == "self-hosted", text
        assert r.headers["x-llmfleet-model"] == "assistant"
    text = httpx.get(f"{gw.url}/metrics").text
    assert metric(text, "llmfleet_gateway_model_requests_total", model="self", why="sensitive") == 2


def test_a_members_own_output_cap_applies_when_it_serves(gw: Server) -> None:
    def ask(key: str, **fields: object) -> httpx.Response:
        body = {"model": "assistant", "messages": [{"role": "user", "content": "hello there"}], **fields}
        return httpx.post(
            f"{gw.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEYS[key]}"},
            timeout=30,
        )

    r = ask("batch", max_tokens=50)  # the small member: clamped to its own cap
    assert r.status_code == 200, r.text
    assert r.headers["x-llmfleet-model"] == "small"
    assert (r.headers["x-llmfleet-max-tokens"], r.headers["x-llmfleet-max-tokens-clamped"]) == ("6", "50")
    assert r.json()["usage"]["completion_tokens"] <= 6
    r = ask("batch")  # names none: the member's default
    assert r.headers["x-llmfleet-max-tokens"] == "3" and "x-llmfleet-max-tokens-clamped" not in r.headers
    assert r.json()["usage"]["completion_tokens"] <= 3
    r = ask("batch", max_completion_tokens=5)  # within the cap: as sent
    assert "x-llmfleet-max-tokens" not in r.headers
    r = ask("alice", max_tokens=50, **{"messages": [{"role": "user", "content": "def f(): pass"}]})
    assert r.headers["x-llmfleet-model"] == "assistant" and "x-llmfleet-max-tokens" not in r.headers  # no cap
