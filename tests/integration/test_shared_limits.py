"""Per-key limits hold exactly across gateway replicas: three gateway processes share one Redis (as the pods
of one LLMDeployment share its cache tier), one key sends requests to all three at once, and exactly the
key's requests-per-minute are admitted; the rest get 429 with Retry-After. With Redis gone the replicas
count on their own, no request fails, and the metric says so."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.integration.servers import Server, engine, gateway, metric
from tests.integration.test_cache import Redis

pytestmark = pytest.mark.integration

RPM = 25


def fallbacks(url: str, **labels: str) -> float:
    return metric(httpx.get(url + "/metrics").text, "llmfleet_gateway_limit_fallbacks_total", **labels)


def replicas(n: int, rds: Redis, eng: Server, rpm: int) -> list[Server]:
    """``n`` gateway processes sharing one Redis for limits (caches off), one key between them."""
    cfg = {
        "model": "m",
        "engines": {"static": [eng.url]},
        "limits": {"requestsPerMinute": rpm, "tokensPerMinute": 100_000_000},
        "cache": {"redisURL": rds.url, "exact": {"enabled": False}, "semantic": {"enabled": False}},
    }
    return [gateway(cfg, {"team": "sk-team-shared-key"}) for _ in range(n)]


def away_from_the_minute() -> None:
    """The sliding window weighs the previous minute by what is left of it: a burst that straddles a minute
    boundary by seconds may rightly admit one more. Start the burst well inside a minute."""
    if (left := 60 - time.time() % 60) < 15:
        time.sleep(left + 0.5)


def test_three_gateways_admit_exactly_the_keys_limit_between_them() -> None:
    rds = Redis()
    eng = engine("m", 50.0)
    gws = replicas(3, rds, eng, rpm=RPM)
    try:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
                headers = {"Authorization": "Bearer sk-team-shared-key"}
                return await asyncio.gather(
                    *(
                        client.post(f"{gws[i % 3].url}/v1/chat/completions", json=body, headers=headers)
                        for i in range(3 * RPM)
                    )
                )

        away_from_the_minute()
        replies = asyncio.run(burst())
        codes = [r.status_code for r in replies]
        assert [fallbacks(g.url) for g in gws] == [0, 0, 0], "a replica decided alone: Redis did not answer"
        assert codes.count(200) == RPM and codes.count(429) == 2 * RPM, codes
        assert all(float(r.headers["retry-after"]) > 0 for r in replies if r.status_code == 429)
        # (Per-process limits would have admitted RPM at each replica: 3 x RPM in all.)
    finally:
        for g in gws:
            g.stop()
        eng.stop()
        rds.kill()


def test_without_redis_each_replica_counts_alone_and_no_request_fails() -> None:
    rds = Redis()
    eng = engine("m", 50.0)
    gws = replicas(2, rds, eng, rpm=5)
    try:
        body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": "Bearer sk-team-shared-key"}

        def ask(g: Server) -> int:
            return httpx.post(
                f"{g.url}/v1/chat/completions", json=body, headers=headers, timeout=30
            ).status_code

        away_from_the_minute()
        assert [ask(gws[0]) for _ in range(3)] == [200] * 3  # shared: 3 of the key's 5 used
        assert fallbacks(gws[0].url) == 0
        rds.kill()
        # Each replica now admits the key's whole limit on its own: 5 each, whatever was used before.
        assert [ask(g) for g in gws for _ in range(6)] == ([200] * 5 + [429]) * 2
        for g in gws:
            # Three misses in a row (a settle's write counts too) open the breaker: later ones skip Redis.
            missed = fallbacks(g.url, reason="error") + fallbacks(g.url, reason="timeout")
            assert 1 <= missed <= 3 and missed + fallbacks(g.url, reason="open") == 6
    finally:
        for g in gws:
            g.stop()
        eng.stop()
        rds.kill()
