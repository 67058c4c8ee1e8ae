"""Gateway replicas share one picture of engine load (vLLM's /load, polled): two gateways in front of two
engine-sim replicas with --enable-server-load-tracking, each sending one long stream. With the engines' /load
polled, the second gateway sends its stream to the other, idle replica; without it, both gateways' own views are
empty and both streams land on the same replica (the control)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.servers import Server, engine, gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engines() -> Iterator[list[Server]]:
    out = [engine("m", 1.0, "--answer-tokens", "0", "--enable-server-load-tracking") for _ in range(2)]
    yield out
    for s in out:
        s.stop()


def _load(e: Server) -> int:
    return int(httpx.get(f"{e.url}/load", timeout=5).json()["server_load"])


def _both_streams(engines: list[Server], poll: float | None) -> list[int]:
    cfg = {
        "model": "m",
        "engines": {"static": [e.url for e in engines], **({"loadPollSeconds": poll} if poll else {})},
        "routing": "least-outstanding",
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
        "limits": {"requestsPerMinute": 100_000, "tokensPerMinute": 100_000_000},
    }
    gws = [gateway(cfg), gateway(cfg)]
    body = {"model": "m", "stream": True, "max_tokens": 4000, "messages": [{"role": "user", "content": "go"}]}
    try:
        with httpx.stream("POST", f"{gws[0].url}/v1/chat/completions", json=body, timeout=60) as first:
            assert first.status_code == 200
            # Kept in a name: a dropped iterator closes the stream, and the engine aborts it.
            first_lines = first.iter_lines()
            next(first_lines)
            time.sleep(0.6)  # a few polls
            with httpx.stream("POST", f"{gws[1].url}/v1/chat/completions", json=body, timeout=60) as second:
                assert second.status_code == 200
                second_lines = second.iter_lines()
                next(second_lines)
                return sorted(_load(e) for e in engines)
    finally:
        for g in gws:
            g.stop()


def test_engine_sim_counts_requests_in_flight_like_vllm(engines: list[Server]) -> None:
    assert [_load(e) for e in engines] == [0, 0]
    plain = engine("m", 50.0)  # without the flag vLLM's /load answers 0 whatever runs
    try:
        assert _load(plain) == 0
    finally:
        plain.stop()


def test_two_gateways_spread_their_streams_when_they_read_the_engines_load(engines: list[Server]) -> None:
    assert _both_streams(engines, 0.1) == [1, 1]
    deadline = time.monotonic() + 10
    while any(_load(e) for e in engines) and time.monotonic() < deadline:  # the aborted streams leave
        time.sleep(0.1)
    assert _both_streams(engines, None) == [0, 2]  # the control: each gateway alone picks the same replica


def test_an_engine_that_stops_answering_counts_as_unloaded_and_a_dropped_one_is_forgotten() -> None:
    """The poller against a port nothing listens on: the last figure holds for one round, then 0; an engine that
    discovery drops leaves the poller's memory too."""
    import asyncio

    import aiohttp

    from llmfleet.gateway.load import LoadPoller
    from llmfleet.gateway.routing import Router
    from tests.integration.servers import free_port

    router = Router("least-outstanding")
    gone, kept = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    router.set_endpoints([gone, kept])
    router.endpoints[gone].others = 5

    async def go() -> None:
        poller = LoadPoller([router], interval=60)
        poller._session = aiohttp.ClientSession()  # polled by hand here: no background task
        try:
            await poller.poll_once()
            assert router.endpoints[gone].others == 5  # one miss: the last figure holds
            await poller.poll_once()
            assert router.endpoints[gone].others == 0
            router.set_endpoints([kept])
            await poller.poll_once()
            assert set(poller._misses) == {kept}
        finally:
            await poller.stop()

    asyncio.run(go())
