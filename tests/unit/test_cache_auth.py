"""The managed cache's credentials: generated once into a Secret, kept across re-plans, rotated by the user, never
written anywhere but the Secret; an external Redis's credentials only ever come from a Secret."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfleet.api.load import SpecError, parse_spec
from llmfleet.kube.fake import FakeKube
from llmfleet.reconcile.apply import execute
from llmfleet.reconcile.observe import observe
from llmfleet.reconcile.plan import live_password, plan
from llmfleet.render.cache import ACL_KEY, AUTH_ANNOTATION, AUTH_USER, PASSWORD_KEY
from llmfleet.render.gateway import REDIS_PASSWORD_ENV

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = ("v1", "Secret", "ml", "demo-cache-auth")


@pytest.fixture
def kube(minimal_obj: dict) -> FakeKube:
    k = FakeKube()
    k.add(minimal_obj)
    return k


def run(kube: FakeKube, password: str) -> list[dict]:
    """One reconcile as the Reconciler does it: the Secret read by name, a fresh password offered."""
    raw = kube.get("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")
    snapshot = dataclasses.replace(observe(kube, "ml", "demo"), cache_auth=kube.get(*SECRET))
    p = plan(raw, snapshot, T0, new_password=password)
    execute(kube, raw, p)
    return p.to_apply


def decoded(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def template(kube: FakeKube, name: str) -> dict:
    return kube.objects[("apps/v1", "Deployment", "ml", name)]["spec"]["template"]


def test_the_first_reconcile_makes_the_secret_and_wires_redis_and_the_gateway(kube: FakeKube) -> None:
    run(kube, "first-password")
    data = decoded(kube.objects[SECRET])
    assert data[PASSWORD_KEY] == "first-password"
    digest = hashlib.sha256(b"first-password").hexdigest()
    assert data[ACL_KEY] == f"user default off\nuser {AUTH_USER} on #{digest} ~* &* +@all -@dangerous\n"
    redis = template(kube, "demo-cache")
    assert "--aclfile" in redis["spec"]["containers"][0]["args"]
    gateway = template(kube, "demo-gateway")
    env = {e["name"]: e for e in gateway["spec"]["containers"][0]["env"]}
    assert env[REDIS_PASSWORD_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-cache-auth",
        "key": PASSWORD_KEY,
    }
    assert (
        redis["metadata"]["annotations"][AUTH_ANNOTATION]
        == gateway["metadata"]["annotations"][AUTH_ANNOTATION]
    )
    config = kube.objects[("v1", "ConfigMap", "ml", "demo-gateway")]["data"]
    assert "first-password" not in json.dumps(config) and json.loads(config["gateway.json"])["cache"][
        "redisPasswordEnv"
    ] == (REDIS_PASSWORD_ENV)


def test_a_re_plan_keeps_the_password_and_writes_nothing(kube: FakeKube) -> None:
    run(kube, "first-password")
    writes = kube.writes
    assert run(kube, "another-fresh-one") == []
    assert kube.writes == writes and decoded(kube.objects[SECRET])[PASSWORD_KEY] == "first-password"


def test_a_rotated_password_rewrites_the_acl_and_rolls_redis_and_the_gateways(kube: FakeKube) -> None:
    run(kube, "first-password")
    before = template(kube, "demo-gateway")["metadata"]["annotations"][AUTH_ANNOTATION]
    kube.objects[SECRET]["data"][PASSWORD_KEY] = base64.b64encode(b"rotated by the user").decode()
    run(kube, "unused")
    data = decoded(kube.objects[SECRET])
    assert data[PASSWORD_KEY] == "rotated by the user"
    assert hashlib.sha256(b"rotated by the user").hexdigest() in data[ACL_KEY]
    after = template(kube, "demo-gateway")["metadata"]["annotations"][AUTH_ANNOTATION]
    assert (
        after != before and template(kube, "demo-cache")["metadata"]["annotations"][AUTH_ANNOTATION] == after
    )


def test_a_deleted_secret_is_made_again_with_a_new_password(kube: FakeKube) -> None:
    run(kube, "first-password")
    del kube.objects[SECRET]
    run(kube, "second-password")
    assert decoded(kube.objects[SECRET])[PASSWORD_KEY] == "second-password"


def test_the_secret_goes_when_the_cache_is_no_longer_managed(kube: FakeKube) -> None:
    run(kube, "first-password")
    kube.objects[("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")]["spec"]["cache"] = {
        "redis": {"mode": "external", "url": "rediss://redis.example:6380/0"}
    }
    run(kube, "unused")
    assert SECRET not in kube.objects
    gateway = template(kube, "demo-gateway")
    assert REDIS_PASSWORD_ENV not in {e["name"] for e in gateway["spec"]["containers"][0]["env"]}


@given(st.one_of(st.none(), st.just(""), st.just("   "), st.text(max_size=8).map(lambda s: s + "%%%")))
def test_a_live_secret_without_a_usable_password_gets_a_fresh_one(raw: str | None) -> None:
    secret = {"metadata": {"name": "x"}, "data": {} if raw is None else {PASSWORD_KEY: raw}}
    assert live_password(secret) is None


@given(
    st.sampled_from(["redis", "rediss", "REDIS", "unix+redis"]),
    st.from_regex(r"[A-Za-z0-9._~!$&'()*+,;=:%-]{0,12}", fullmatch=True),
    st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
)
def test_an_external_url_with_credentials_is_refused_and_one_without_is_not(scheme, userinfo, host) -> None:
    spec = {
        "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
        "cache": {"redis": {"mode": "external"}},
    }
    spec["cache"]["redis"]["url"] = f"{scheme}://{host}/0"
    parse_spec(spec)
    spec["cache"]["redis"]["url"] = f"{scheme}://{userinfo}@{host}/0"
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert "cache.redis.url" in str(err.value) and "secretRef" in str(err.value)


def test_a_change_to_the_external_url_secret_rolls_the_gateways_on_the_next_tick(minimal_obj: dict) -> None:
    """The user's Secret with the external Redis URL is read by name (never watched): its hash on the gateway pod
    template changes on the periodic tick after the user edits it, and a rollout follows."""
    import asyncio

    from llmfleet.reconcile.handlers import Reconciler
    from llmfleet.render.gateway import REDIS_URL_ANNOTATION

    minimal_obj["spec"]["cache"] = {
        "redis": {"mode": "external", "secretRef": {"name": "redis-url", "key": "url"}}
    }
    minimal_obj["metadata"]["creationTimestamp"] = "2025-12-31T00:00:00Z"
    kube = FakeKube()
    kube.add(minimal_obj)
    url = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-url", "namespace": "ml"}}
    kube.add({**url, "data": {"url": base64.b64encode(b"redis://u:one@r:6379/0").decode()}})
    r = Reconciler(kube, options=None, clock=lambda: T0)  # type: ignore[arg-type]
    asyncio.run(r.reconcile("ml", "demo"))
    first = template(kube, "demo-gateway")["metadata"]["annotations"][REDIS_URL_ANNOTATION]
    kube.objects[("v1", "Secret", "ml", "redis-url")]["data"]["url"] = base64.b64encode(
        b"redis://u:two@r:6379/0"
    ).decode()
    asyncio.run(r.reconcile("ml", "demo", follow_up=True))  # an event-driven pass reads no Secret
    assert template(kube, "demo-gateway")["metadata"]["annotations"][REDIS_URL_ANNOTATION] == first
    asyncio.run(r.reconcile("ml", "demo", follow_up=True, tick=True))
    second = template(kube, "demo-gateway")["metadata"]["annotations"][REDIS_URL_ANNOTATION]
    assert second != first and "two" not in json.dumps(template(kube, "demo-gateway"))
