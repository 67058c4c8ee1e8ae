"""Verified semantic hits (spec.cache.semantic.maxFalseHitRate) on a real gateway, real Redis 8 and the real
sentence encoder: paraphrases are checked against the engine's answers until a similarity is proven under the
bound, and then served; an engine that answers each paraphrase in other words never gets one served."""

from __future__ import annotations

import math
import time

import httpx
import pytest
import redis

from llmfleet.cache import verify
from tests.integration.servers import Server, chat, engine, gateway, metric, serve_aiohttp
from tests.integration.test_cache import Redis
from tests.unit.test_cache_entries import vllm_whole

pytestmark = pytest.mark.integration
KEY = "sk-verify-cache-0000"
RATE = 0.2  # 14 same answers in a row prove it at 95 %: a short test
OPENERS = [
    "",
    "Quick question: ",
    "Hi! ",
    "Please tell me: ",
    "I wonder, ",
    "Sorry to ask, ",
    "Hey, ",
    "So, ",
]
FORMS = [
    "What is the capital of France?",
    "What's the capital of France?",
    "Which city is the capital of France?",
    "what is the capital city of France",
]
PARAPHRASES = [o + f for f in FORMS for o in OPENERS]  # 32, all within cosine 0.8 of each other


class OneAnswer:
    """A stand-in engine that answers every question with the same text (as a model does for paraphrases of a
    factual question it answers in one word)."""

    def __init__(self, answer: str) -> None:
        from aiohttp import web

        async def complete(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=vllm_whole(answer, "stop"), content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", complete)
        self.port, self.url = serve_aiohttp(app)


def verified_gateway(engine_url: str, rds: Redis) -> Server:
    return gateway(
        {
            "model": "m",
            "engines": {"static": [engine_url]},
            "limits": {"requestsPerMinute": 100000, "tokensPerMinute": 100_000_000},
            "cache": {
                "redisURL": rds.url,
                "exact": {"enabled": True, "ttlSeconds": 600},
                "semantic": {
                    "enabled": True,
                    "threshold": 0.8,
                    "embeddingModel": "all-MiniLM-L6-v2",
                    "maxFalseHitRate": RATE,
                },
            },
        },
        {"alice": KEY},
    )


def ask(gw: Server, question: str) -> str:
    r = chat(gw.url, KEY, question)
    assert r.status_code == 200, r.text
    return r.headers["x-llmfleet-cache"]


def checked(rds: Redis) -> int:
    return redis.Redis(port=rds.port).llen("llmfleet:semchecks:m")


def ask_and_settle(gw: Server, rds: Redis, question: str) -> str:
    """Ask, then wait until the answer is stored (the gateway stores it, and records its check, after
    answering), so that the next question meets it."""
    before = redis.Redis(port=rds.port).dbsize()
    checks = checked(rds)
    result = ask(gw, question)
    deadline = time.monotonic() + 10  # a bound on waiting, not a performance threshold
    while redis.Redis(port=rds.port).dbsize() == before and checked(rds) == checks:
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.05)
    time.sleep(0.3)  # the semantic index picks the entry up asynchronously
    return result


def threshold(gw: Server) -> float:
    return metric(httpx.get(gw.url + "/metrics").text, "llmfleet_gateway_cache_semantic_threshold")


def test_paraphrases_the_engine_answers_alike_are_checked_then_served() -> None:
    rds, eng = Redis(), OneAnswer("Paris.")
    gw = verified_gateway(eng.url, rds)
    try:
        assert math.isnan(threshold(gw))  # nothing proven: nothing served
        need = verify.checks_needed(RATE)
        results = [ask_and_settle(gw, rds, q) for q in PARAPHRASES[: need + 2]]
        assert "semantic" not in results  # every candidate so far was answered by the engine and compared
        text = httpx.get(gw.url + "/metrics").text
        same = metric(text, "llmfleet_gateway_cache_semantic_checks_total", outcome="same")
        assert (
            same >= need
            and metric(text, "llmfleet_gateway_cache_semantic_checks_total", outcome="different") == 0
        )
        deadline = time.monotonic() + 30
        rest = iter(PARAPHRASES[need + 2 :])
        served = []
        while len(served) < 3:  # the threshold is read in the background (every 2 s); then hits are served
            assert time.monotonic() < deadline, f"no semantic hit after the checks: {served}"
            if ask(gw, next(rest)) == "semantic":
                served.append(True)
            time.sleep(0.3)
        assert 0.8 <= threshold(gw) <= 1.0
    finally:
        gw.stop()
        rds.kill()


def test_paraphrases_answered_in_other_words_are_never_served() -> None:
    rds, eng = Redis(), engine("m", 50.0)  # engine-sim: each prompt gets its own answer
    gw = verified_gateway(eng.url, rds)
    try:
        results = [ask_and_settle(gw, rds, q) for q in PARAPHRASES[:20]]
        time.sleep(2.5)  # past a refresh of the learned threshold
        results += [ask(gw, q) for q in PARAPHRASES[20:]]
        assert "semantic" not in results
        text = httpx.get(gw.url + "/metrics").text
        assert metric(text, "llmfleet_gateway_cache_semantic_checks_total", outcome="different") >= 19
        assert math.isnan(threshold(gw))
    finally:
        gw.stop()
        eng.stop()
        rds.kill()
