"""Per-key limits hold exactly across gateway replicas: three gateway processes share one Redis (as the pods
of one LLMDeployment share its cache tier), one key sends requests to all three at once, and exactly the
key's requests-per-minute are admitted; the rest get 429 with Retry-After."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.servers import engine, gateway
from tests.integration.test_cache import Redis

pytestmark = pytest.mark.integration

RPM = 25


def test_three_gateways_admit_exactly_the_keys_limit_between_them() -> None:
    rds = Redis()
    eng = engine("m", 50.0)
    cfg = {
        "model": "m",
        "engines": {"static": [eng.url]},
        "limits": {"requestsPerMinute": RPM, "tokensPerMinute": 100_000_000},
        "cache": {"redisURL": rds.url, "exact": {"enabled": False}, "semantic": {"enabled": False}},
    }
    gws = [gateway(cfg, {"team": "sk-team-shared-key"}) for _ in range(3)]
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

        replies = asyncio.run(burst())
        codes = [r.status_code for r in replies]
        assert codes.count(200) == RPM and codes.count(429) == 2 * RPM, codes
        assert all(float(r.headers["retry-after"]) > 0 for r in replies if r.status_code == 429)
        # (Per-process limits would have admitted RPM at each replica: 3 x RPM in all.)
    finally:
        for g in gws:
            g.stop()
        eng.stop()
        rds.kill()
