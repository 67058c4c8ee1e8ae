"""Gateway logic without sockets: limits (injected clock), routing, sensitivity detectors, key store."""

from __future__ import annotations

import asyncio
import hashlib

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llmfleet.gateway.auth import Key, KeyStore, digest
from llmfleet.gateway.discovery import ready_urls
from llmfleet.gateway.limits import MemoryLimiter, RedisLimiter
from llmfleet.gateway.routing import Router
from llmfleet.gateway.sensitivity import CARD_FIRST_DIGITS, Classifier, luhn_ok


class Clock:
    def __init__(self, t: float = 1_000_020.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(coro):
    return asyncio.run(coro)


def test_request_limit_blocks_then_recovers_as_the_window_slides() -> None:
    clock = Clock()
    lim = MemoryLimiter(rpm=3, tpm=0, clock=clock)
    assert [run(lim.acquire("k", 10)).allowed for _ in range(4)] == [True, True, True, False]
    blocked = run(lim.acquire("k", 10))
    assert not blocked.allowed and blocked.retry_after > 0 and blocked.remaining_requests == 0
    assert any(h[0] == b"retry-after" for h in blocked.headers())
    clock.t += 60 + 40  # next window, two thirds through: the previous window weighs one third
    assert run(lim.acquire("k", 10)).allowed
    assert run(lim.acquire("other", 10)).allowed  # keys are independent


def test_token_limit_reserves_and_settles() -> None:
    clock = Clock()
    lim = MemoryLimiter(rpm=0, tpm=1000, clock=clock)
    assert run(lim.acquire("k", 900)).allowed
    assert not run(lim.acquire("k", 200)).allowed
    run(lim.settle("k", reserved=900, actual=100))  # the response was short
    assert run(lim.acquire("k", 200)).allowed


def test_a_single_request_larger_than_the_limit_is_not_starved() -> None:
    lim = MemoryLimiter(rpm=0, tpm=100, clock=Clock())
    assert run(lim.acquire("k", 500)).allowed


def test_prefix_affinity_is_sticky_and_load_bounded() -> None:
    r = Router("prefix-affinity")
    r.set_endpoints([f"http://10.0.0.{i}:8000" for i in range(4)])
    first = r.pick(b"system: you are a helpful assistant")
    assert all(r.pick(b"system: you are a helpful assistant") is first for _ in range(5))
    first.outstanding = 50  # overloaded: the bound moves the prefix to the next replica on the ring
    other = r.pick(b"system: you are a helpful assistant")
    assert other is not first
    first.outstanding = 0
    spread = {r.pick(f"prompt {i}".encode()).url for i in range(200)}
    assert len(spread) == 4


def test_least_outstanding_and_ejection() -> None:
    clock = Clock()
    r = Router("least-outstanding", clock=clock, eject_seconds=10)
    r.set_endpoints(["http://a", "http://b"])
    a, b = r.endpoints["http://a"], r.endpoints["http://b"]
    a.outstanding = 3
    assert r.pick(b"") is b
    r.fail(b)
    assert r.pick(b"") is a
    clock.t += 11
    assert r.pick(b"") is b


def test_a_replica_that_answers_503_is_backed_off_briefly_and_growing_not_ejected() -> None:
    """vLLM's admission control (503) says busy, not broken: pass it over for 50 ms, doubling while it refuses (to
    2 s), and forget it once it serves; a failure still ejects for the cool-down."""
    clock = Clock()
    r = Router("least-outstanding", clock=clock, eject_seconds=10)
    r.set_endpoints(["http://a", "http://b"])
    a, b = r.endpoints["http://a"], r.endpoints["http://b"]
    b.outstanding = 5  # a is the one picked while it is available
    waits = []
    for _ in range(8):
        r.busy(a)
        waits.append(round(a.ejected_until - clock.t, 3))
        assert r.pick(b"") is b
        clock.t = a.ejected_until
        assert r.pick(b"") is a  # back as soon as its back-off is over
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    r.ok(a)
    r.busy(a)
    assert round(a.ejected_until - clock.t, 3) == 0.05  # a success starts the back-off over
    r.fail(a)
    assert a.ejected_until - clock.t == 10


@pytest.mark.parametrize(
    "card", ["4111111111111111", "5500000000000004", "378282246310005", "6011111111111117"]
)
def test_luhn_accepts_real_test_cards(card: str) -> None:
    assert luhn_ok(card)


@given(st.integers(10**12, 10**19 - 1))
def test_detector_flags_a_number_as_card_only_when_luhn_passes(n: int) -> None:
    c = Classifier(["credit-card"])
    digits = str(n)
    flagged = c.detect(f"my number is {digits}") == "credit-card"
    issuer = digits[0] in CARD_FIRST_DIGITS or digits.startswith("1800")
    assert flagged == (13 <= len(digits) <= 19 and luhn_ok(digits) and issuer)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe+x@example.co.uk please", "email"),
        ("ssn 123-45-6789", "ssn"),
        ("key sk-proj-abcdefghijklmnop1234", "secret"),
        ("AKIAABCDEFGHIJKLMNOP", "secret"),
        ("password: hunter2hunter2", "secret"),
        ("-----BEGIN RSA PRIVATE KEY-----", "secret"),
        ("what is the capital of France?", None),
        ("call 555-1234 tomorrow", None),
        ("1 4111 1111 1111 1111", "credit-card"),
        ("order 12 34 then 4111-1111-1111-1111 42", "credit-card"),
        ("1 378282246310005", "credit-card"),
        ("41111111111111111", None),
        ("ssn 123-45-6789 1234 5678", "ssn"),
        ("000-12-3456 or 666-12-3456 or 900-12-3456 or 123-00-4567 or 123-45-0000", None),
    ],
)
def test_detectors(text: str, kind: str | None) -> None:
    assert Classifier(["email", "credit-card", "ssn", "secret"]).detect(text) == kind


def test_classification_order_sensitive_wins() -> None:
    c = Classifier(["email"], default="general", key_policy={"pinned": "sensitive", "open": "general"})
    assert c.classify([b"sensitive"], "hello") == (True, "header")
    assert c.classify([b"general"], "mail a@b.example") == (True, "detector:email")
    assert c.classify([b"general"], "hello") == (False, "header")
    assert c.classify([], "hello") == (False, "default")
    assert c.classify([b"general"], "hello", "pinned") == (True, "key-policy")
    assert c.classify([], "hello", "open") == (False, "key-policy")
    assert c.classify([], "mail a@b.example", "open") == (True, "detector:email")
    assert Classifier([], default="sensitive").classify([], "hello") == (True, "default")
    assert Classifier([], default="sensitive", key_policy={"open": "general"}).classify([], "hi", "open") == (
        False,
        "key-policy",
    )


def test_keystore_accepts_plain_and_hashed_keys(tmp_path) -> None:
    (tmp_path / "keys").write_text("alice: sk-a\nbob: sha256:" + hashlib.sha256(b"sk-b").hexdigest() + "\n")
    ks = KeyStore.from_file(tmp_path / "keys")
    assert ks.check(b"sk-a") == Key("alice", digest("sk-a"))
    assert ks.check(b"sk-b").name == "bob"
    assert ks.check(b"sk-c") is None
    d = tmp_path / "secret"
    d.mkdir()
    (d / "carol").write_text("sk-c\n")
    assert KeyStore.from_dir(d).check(b"sk-c").name == "carol"


def test_endpoint_slices_to_ready_urls() -> None:
    slices = [
        {
            "ports": [{"port": 8000}],
            "endpoints": [
                {"addresses": ["127.64.0.2"], "conditions": {"ready": True}},
                {"addresses": ["127.64.0.3"], "conditions": {"ready": False}},
                {"addresses": ["127.64.0.4"], "conditions": {"ready": True, "terminating": True}},
            ],
        }
    ]
    assert ready_urls(slices, 9999) == ["http://127.64.0.2:8000"]


_PIECES = st.sampled_from(
    [
        "a",
        " ",
        "x",
        "@",
        "b.example",
        "4111 1111 1111 1111",
        "123-45-6789",
        "sk-",
        "proj-",
        "abcdefghijklmnop1234",
        "AKIA",
        "ABCDEFGHIJKLMNOP",
        "ghp_",
        "A" * 30,
        "xoxb-",
        "0123456789",
        "-----BEGIN RSA PRIVATE KEY-----",
        "password",
        "token",
        ": ",
        "=",
        "hunter2hunter2",
        "password: hunter2hunter2",
        "token=abcdefgh",
        "_",
        "\n",
        "٣",
        "jane.doe",
        ".co.uk",
    ]
)


@settings(max_examples=400)
@example("password: hunter2hunter2", {"secret"})
@example("token=abcdefgh1", {"secret"})
@example("ghp_" + "A" * 30, {"secret"})
@example("xoxb-0123456789", {"secret"})
@example("4111 1111 1111 1111", {"credit-card"})
@example("123-45-6789", {"ssn"})
@example("jane.doe@b.example", {"email"})
@given(
    st.lists(_PIECES, max_size=12).map("".join),
    st.sets(st.sampled_from(["email", "credit-card", "ssn", "secret"])),
)
def test_detector_prefilter_never_hides_a_match(text: str, detectors: set[str]) -> None:
    """The RE2 set prefilter only skips texts that the detectors' own patterns would not match anyway."""
    c = Classifier(sorted(detectors))
    assert c.detect(text) == c._scan(text)


def test_telemetry_exposes_prometheus_families_with_cumulative_buckets() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from llmfleet.gateway.telemetry import Telemetry

    tel = Telemetry()
    for v in (0.004, 0.005, 0.3, 200.0):  # 0.005 sits on a bound: "le" includes it
        tel.ttft.labels("self-hosted").observe(v)
    tel.requests.labels("self-hosted", "200", "abcd").inc()
    tel.requests.labels("self-hosted", "200", "abcd").inc()
    tel.tokens.labels("external", "prompt").inc(17)
    tel.in_flight.inc()
    tel.in_flight.inc()
    tel.in_flight.dec()
    tel.cache_similarity.observe(0.97)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(generate_latest(tel.registry).decode())
        for s in fam.samples
    }

    def bucket(le: str) -> float:
        return samples[("llmfleet_gateway_ttft_seconds_bucket", (("le", le), ("route", "self-hosted")))]

    assert [bucket("0.005"), bucket("0.25"), bucket("0.5"), bucket("120.0"), bucket("+Inf")] == [
        2,
        2,
        3,
        3,
        4,
    ]
    assert samples[("llmfleet_gateway_ttft_seconds_count", (("route", "self-hosted"),))] == 4
    assert abs(samples[("llmfleet_gateway_ttft_seconds_sum", (("route", "self-hosted"),))] - 200.309) < 1e-9
    assert (
        samples[
            (
                "llmfleet_gateway_requests_total",
                (("key", "abcd"), ("route", "self-hosted"), ("status", "200")),
            )
        ]
        == 2
    )
    assert samples[("llmfleet_gateway_tokens_total", (("kind", "prompt"), ("route", "external")))] == 17
    assert samples[("llmfleet_gateway_in_flight", ())] == 1
    assert samples[("llmfleet_gateway_cache_similarity_bucket", (("le", "0.96"),))] == 0
    assert samples[("llmfleet_gateway_cache_similarity_bucket", (("le", "0.97"),))] == 1


def test_general_traffic_overflows_to_the_external_provider_only_while_the_queue_is_long() -> None:
    from llmfleet.gateway.app import Gateway
    from llmfleet.gateway.config import GatewayConfig
    from llmfleet.gateway.telemetry import Telemetry

    cfg = GatewayConfig.model_validate(
        {
            "model": "m",
            "external": {
                "use": "overflow",
                "baseURL": "http://ext/v1",
                "model": "x",
                "overflowOutstandingPerReplica": 2,
            },
        }
    )
    router = Router("least-outstanding")
    router.set_endpoints(["http://a:8000", "http://b:8000"])
    gw = Gateway(
        cfg, KeyStore([]), MemoryLimiter(0, 0), router, Classifier(["email"], "general"), Telemetry()
    )
    a, b = router.endpoints.values()
    for ep in (a, a, b):
        router.begin(ep)
    classified: list[bool] = []

    def route(text: str) -> tuple[str, str]:
        from llmfleet.gateway.app import Ctx, Request

        req = Request(
            "/v1/completions", [], orjson.dumps({"model": "m", "prompt": text}), b"x-data-sensitivity"
        )
        gw.parse(req)
        ctx = Ctx(request_id="r", key=None, started=0.0)
        out = gw.route(ctx, req)
        classified.append(ctx.classified)
        assert ctx.sensitive or ctx.classified  # nothing is general without a scan
        return out

    # 3 in flight < 2 per replica × 2: self-hosted, and no scan (nothing could leave the cluster)
    assert route("mail a@b.example") == ("self-hosted", "capacity") and classified[-1] is False
    router.begin(b)
    assert route("what is 2+2?") == ("external", "overflow") and classified[-1] is True
    assert route("mail a@b.example") == ("self-hosted", "detector:email")  # sensitive never overflows
    router.end(a)
    assert route("what is 2+2?")[0] == "self-hosted"
    assert router.outstanding == 3 and (a.outstanding, b.outstanding) == (1, 2)


class FlakyRedis:
    """Stands in for redis.asyncio: the limiter's script answers, fails or hangs as ``mode`` says."""

    def __init__(self) -> None:
        self.mode, self.calls, self.count = "ok", 0, 0

    def register_script(self, _lua: str):  # type: ignore[no-untyped-def]
        async def script(keys: list[str], args: list[float]) -> list[object]:
            self.calls += 1
            if self.mode == "error":
                raise ConnectionError("refused")
            if self.mode == "hang":
                await asyncio.sleep(10)
            self.count += 1
            return [1, str(self.count), "0", "1.0", "0", "0", str(self.count), "0"]

        return script


def test_one_slow_redis_answer_is_decided_locally_three_in_a_row_open_the_breaker() -> None:
    rds, mono, seen = FlakyRedis(), Clock(0.0), []
    lim = RedisLimiter(
        rds, rpm=100, tpm=0, timeout=0.01, cooldown=5.0, on_fallback=seen.append, monotonic=mono
    )

    async def scenario() -> None:
        assert (await lim.acquire("k", 1)).allowed and seen == []
        rds.mode = "hang"
        assert (await lim.acquire("k", 1)).allowed and seen == ["timeout"]  # decided by the local limiter
        rds.mode = "ok"
        assert (await lim.acquire("k", 1)).allowed and rds.calls == 3  # one miss does not open the breaker
        rds.mode = "error"
        for _ in range(3):
            await lim.acquire("k", 1)
        assert seen == ["timeout", "error", "error", "error"] and rds.calls == 6
        rds.mode = "ok"
        await lim.acquire("k", 1)
        assert seen[-1] == "open" and rds.calls == 6  # open: Redis is not asked for the cooldown
        mono.t += 5.1
        await lim.acquire("k", 1)
        assert len(seen) == 5 and rds.calls == 7  # closed again, shared again

    run(scenario())


def test_a_miss_between_answers_does_not_add_up_to_an_open_breaker() -> None:
    rds, seen = FlakyRedis(), []
    lim = RedisLimiter(rds, rpm=100, tpm=0, on_fallback=seen.append, monotonic=Clock(0.0))

    async def scenario() -> None:
        for mode in ("error", "error", "ok", "error", "error", "ok"):
            rds.mode = mode
            await lim.acquire("k", 1)
        assert "open" not in seen and rds.calls == 6

    run(scenario())
