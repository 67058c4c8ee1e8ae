"""The output-length policy (gateway/output.py) and how the gateway applies it to the body it forwards."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from llmfleet.gateway.auth import Key, KeyStore
from llmfleet.gateway.output import OutputPolicy, decide, for_key

caps = st.one_of(st.none(), st.integers(1, 1_000_000))


@st.composite
def policies(draw: st.DrawFn) -> OutputPolicy:
    default, cap = draw(caps), draw(caps)
    if default is not None and cap is not None and default > cap:
        default, cap = cap, default
    return OutputPolicy(default, cap)


@given(
    st.one_of(st.none(), st.integers(1, 10_000_000)),
    st.sampled_from(["max_tokens", "max_completion_tokens"]),
    policies(),
)
def test_what_goes_out_never_exceeds_the_cap_and_nothing_else_changes(
    asked: int | None, field: str, policy: OutputPolicy
) -> None:
    d = decide(asked, field if asked is not None else None, policy)
    out = asked if d is None else d.value
    if policy.max is not None and out is not None:
        assert out <= policy.max
    if asked is None:
        assert out == policy.default  # the default (within the cap), or the engine's own
    elif policy.max is None or asked <= policy.max:
        assert d is None  # within the cap: sent as asked
    else:
        assert d is not None and (d.field, d.value, d.clamped_from) == (field, policy.max, asked)


def test_a_keys_own_fields_override_the_deployments() -> None:
    base = OutputPolicy(default=256, max=1024)
    keys = {"big": OutputPolicy(max=8192), "terse": OutputPolicy(default=64, max=128)}
    assert for_key(base, keys, "big") == OutputPolicy(256, 8192)
    assert for_key(base, keys, "terse") == OutputPolicy(64, 128)
    assert for_key(base, keys, "other") == base and for_key(base, keys, None) == base


def _gateway(output: dict) -> object:
    from llmfleet.gateway.app import Gateway
    from llmfleet.gateway.config import GatewayConfig
    from llmfleet.gateway.limits import MemoryLimiter
    from llmfleet.gateway.routing import Router
    from llmfleet.gateway.sensitivity import Classifier
    from llmfleet.gateway.telemetry import Telemetry

    cfg = GatewayConfig.model_validate({"model": "m", "outputTokens": output})
    return Gateway(
        cfg,
        KeyStore([]),
        MemoryLimiter(0, 0),
        Router("least-outstanding"),
        Classifier([], "sensitive"),
        Telemetry(),
    )


def _parse(gw: object, body: dict, key: str | None = None) -> object:
    from llmfleet.gateway.app import Request

    req = Request("/v1/chat/completions", [], orjson.dumps(body), b"x-data-sensitivity")
    gw.parse(req, Key(key, b"\0" * 32) if key else None)  # type: ignore[attr-defined]
    return req


def test_the_gateway_clamps_both_fields_reserves_the_clamped_value_and_sets_a_default() -> None:
    gw = _gateway({"default": 128, "max": 512, "keys": {"big": {"max": 4096}}})
    msgs = [{"role": "user", "content": "hi"}]
    req = _parse(gw, {"model": "m", "messages": msgs, "max_tokens": 9000, "max_completion_tokens": 8000})
    sent = orjson.loads(req.body_bytes)  # type: ignore[attr-defined]
    assert (sent["max_tokens"], sent["max_completion_tokens"]) == (512, 512)
    assert (req.max_tokens, req.clamped_from, req.set_max_tokens) == (512, 8000, 512)  # type: ignore[attr-defined]
    req = _parse(gw, {"model": "m", "messages": msgs})
    assert orjson.loads(req.body_bytes)["max_tokens"] == 128 and req.clamped_from is None  # type: ignore[attr-defined]
    req = _parse(gw, {"model": "m", "messages": msgs, "max_tokens": 3000}, key="big")
    assert orjson.loads(req.body_bytes)["max_tokens"] == 3000 and req.set_max_tokens is None  # type: ignore[attr-defined]
    # Within the cap, the bytes go out as they came.
    raw = orjson.dumps({"model": "m", "messages": msgs, "max_tokens": 100, "stream": False})
    req = _parse(gw, orjson.loads(raw))
    assert req.body_bytes == raw  # type: ignore[attr-defined]
    # No policy: nothing changes, and a bad value is a 400 naming the field.
    from llmfleet.gateway.app import Reply

    with pytest.raises(Reply) as err:
        _parse(_gateway({}), {"model": "m", "messages": msgs, "max_completion_tokens": 0})
    assert err.value.status == 400 and b"max_completion_tokens" in err.value.body


def test_the_api_refuses_a_default_above_the_max_naming_the_field() -> None:
    from llmfleet.api.v1alpha1 import OutputTokens

    with pytest.raises(ValidationError, match="default must not exceed max"):
        OutputTokens.model_validate({"default": 900, "max": 100})
    with pytest.raises(ValidationError, match="keys.team"):
        OutputTokens.model_validate({"keys": {"team": {"default": 900, "max": 100}}})
