"""Secrets audit of everything the operator renders: the managed cache's password lives in its Secret and nowhere
else (no ConfigMap, env literal, annotation, label or argument), and every env var we set that carries a key, a
password or a token comes from a Secret, never a literal. Run over every example and generated specs with
generated passwords. (Log lines are audited where the processes run: tests/integration/test_cache_auth.py and
tests/integration/test_operator.py.)"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfleet.api.load import load_documents, parse_object
from llmfleet.api.sizing import SizingError, size
from llmfleet.render import render_all
from tests.conftest import EXAMPLES

SECRET_NAME = re.compile(r"KEY|PASSWORD|TOKEN|SECRET|CREDENTIAL|REDIS_URL", re.IGNORECASE)


def containers(m: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ((m.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [*spec.get("containers", []), *spec.get("initContainers", [])]


def audit(obj: Any, password: str) -> None:
    user_env = {e.name for e in obj.spec.engine.env}  # the user's own engine env is theirs to write
    manifests = render_all(obj, size(obj.spec), cache_password=password)
    forms = {password, base64.b64encode(password.encode()).decode()}
    holders = []
    for m in manifests:
        text = json.dumps(m)
        if any(f in text for f in forms):
            holders.append(f"{m['kind']}/{m['metadata']['name']}")
        for c in containers(m):
            for e in c.get("env", []):
                if e["name"] in user_env:
                    continue
                if SECRET_NAME.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in (e.get("valueFrom") or {}), (m["kind"], e)
    managed = obj.spec.cache.any_enabled and obj.spec.cache.redis.mode == "managed"
    assert holders == ([f"Secret/{obj.metadata.name}-cache-auth"] if managed else []), holders


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_keeps_its_cache_password_in_the_secret_only(path) -> None:
    audit(parse_object(yaml.safe_load(path.read_text())), "k9Vb-" + "Zq3x" * 10)


# Any characters a user may rotate to, behind a marker no rendered text holds (a bare generated string such as
# "--appendonly" would "leak" by coinciding with an argument).
passwords = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=8, max_size=64
).map(lambda s: "pw§" + s)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"}}
    mode = draw(st.sampled_from(["managed", "external", "off"]))
    if mode == "off":
        spec["cache"] = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
    elif mode == "external":
        redis: dict[str, Any] = {"mode": "external", "tls": draw(st.booleans())}
        if draw(st.booleans()):
            redis["secretRef"] = {"name": "redis-url", "key": "url"}
        else:
            redis["url"] = "redis://redis.example:6379/0"
        spec["cache"] = {"redis": redis}
    if draw(st.booleans()):
        spec["gateway"] = {
            "auth": {"apiKeysSecretRef": "keys"},
            "external": {
                "use": draw(st.sampled_from(["never", "fallback", "sensitive-never"])),
                "baseURL": "https://api.openai.com/v1",
                "model": "gpt-4o-mini",
                "apiKeySecretRef": "openai",
            },
        }
    if draw(st.booleans()):
        spec["network"] = {"isolation": draw(st.booleans())}
    return spec


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(spec=specs(), password=passwords)
def test_generated_specs_and_passwords_leave_no_secret_outside_a_secret(
    spec: dict[str, Any], password: str
) -> None:
    raw = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "gen"},
        "spec": spec,
    }
    try:
        obj = load_documents(json.dumps(raw))[0]
        size(obj.spec)
    except (SizingError, ValueError):
        return  # refused specs render nothing
    audit(obj, password)
