"""The output-length policy over real sockets: a gateway with spec.gateway.outputTokens in front of engine-sim.
A request above the cap is clamped (not refused): the engine generates at most the cap, the response says so,
and the per-key token budget is reserved with the clamped value."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.servers import Server, engine, gateway

pytestmark = pytest.mark.integration

KEYS = {"small": "sk-small-key-0001", "big": "sk-big-key-00002"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    srv = engine("m", 50.0, "--answer-tokens", "0")  # every answer runs to max_tokens
    yield srv
    srv.stop()


def _ask(gw: Server, key: str, **fields: object) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "write a long essay"}], **fields}
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEYS[key]}"},
        timeout=60,
    )


def test_requests_above_the_cap_are_clamped_and_reserve_the_clamped_value(upstream: Server) -> None:
    cfg = {
        "model": "m",
        "engines": {"static": [upstream.url]},
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
        # 400 tokens a minute: an unclamped 100,000-token request is refused once the key has used any.
        "limits": {"requestsPerMinute": 1000, "tokensPerMinute": 400},
        "outputTokens": {"default": 8, "max": 16, "keys": {"big": {"max": 48}}},
    }
    gw = gateway(cfg, KEYS)
    try:
        r = _ask(gw, "small")  # names none: the default (and spends some of the key's budget)
        assert r.json()["usage"]["completion_tokens"] == 8
        assert "x-llmfleet-max-tokens-clamped" not in r.headers
        r = _ask(gw, "small", max_tokens=100_000)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 16
        assert r.headers["x-llmfleet-max-tokens"] == "16"
        assert r.headers["x-llmfleet-max-tokens-clamped"] == "100000"
        r = _ask(gw, "big", max_completion_tokens=40, stream=False)  # within the key's own cap
        assert r.json()["usage"]["completion_tokens"] == 40 and "x-llmfleet-max-tokens" not in r.headers
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            json={
                "model": "m",
                "stream": True,
                "max_tokens": 999,
                "messages": [{"role": "user", "content": "x"}],
            },
            headers={"Authorization": f"Bearer {KEYS['big']}"},
            timeout=60,
        ) as s:
            assert s.headers["x-llmfleet-max-tokens-clamped"] == "999"
            chunks = [line for line in s.iter_lines() if line.startswith("data: {")]
        assert len([c for c in chunks if '"content":"' in c and '"content":""' not in c]) <= 48
    finally:
        gw.stop()
    # The control: the same gateway without the policy refuses that request once the key has used some of
    # its budget (it would reserve 100,000 tokens; only a key's first request may exceed the whole budget).
    del cfg["outputTokens"]
    gw = gateway(cfg, KEYS)
    try:
        assert _ask(gw, "small", max_tokens=8).status_code == 200
        assert _ask(gw, "small", max_tokens=100_000).status_code == 429
    finally:
        gw.stop()
