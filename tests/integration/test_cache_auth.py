"""The managed cache tier is authenticated: real Redis 8 (with the query engine) started with exactly the rendered
arguments and ACL file refuses clients without the gateway's password, and a real gateway configured from the
rendered ConfigMap and Secret still serves and caches (exact and semantic)."""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from llmfleet.api.load import parse_object
from llmfleet.api.sizing import size
from llmfleet.render import render_all
from llmfleet.render.cache import ACL_DIR, ACL_KEY, AUTH_USER, PASSWORD_KEY
from llmfleet.render.gateway import CONFIG_KEY, REDIS_PASSWORD_ENV
from tests.conftest import ROOT
from tests.integration.servers import Server, chat, engine, free_port

pytestmark = pytest.mark.integration
PASSWORD = "pw-" + "x7Kq2" * 8
KEY = "sk-auth-cache-0000000000"


def rendered() -> dict[str, dict]:
    doc = yaml.safe_load((ROOT / "manifests/examples/llama3-8b.yaml").read_text())
    doc["spec"]["cache"] = {"semantic": {"enabled": True}}  # opt-in: both tiers go through the ACL here
    obj = parse_object(doc)
    out = render_all(obj, size(obj.spec), cache_password=PASSWORD)
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in out}


@pytest.fixture(scope="module")
def stack():
    children = rendered()
    secret = {
        k: base64.b64decode(v).decode() for k, v in children["Secret/llama3-8b-cache-auth"]["data"].items()
    }
    assert PASSWORD not in secret[ACL_KEY]  # Redis keeps only the password's hash
    run = Path(tempfile.mkdtemp(prefix="llmfleet-redis-acl-"))
    (run / ACL_KEY).write_text(secret[ACL_KEY])
    container = children["Deployment/llama3-8b-cache"]["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace(ACL_DIR, str(run)) for a in container["args"] if a != "redis-server"]
    env = dict(
        line.split("=", 1)
        for line in subprocess.run(
            ["bash", str(ROOT / "hack/redis.sh"), "install"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    rds = subprocess.Popen(
        [
            env["REDIS_SERVER"],
            *args,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(run),
            "--loadmodule",
            env["REDIS_MODULE"],
        ],
        stdout=open(run / "redis.log", "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30  # a bound on waiting, not a performance threshold
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, username=AUTH_USER, password=PASSWORD).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    eng = engine("llama3-8b", 20.0)
    cfg = json.loads(children["ConfigMap/llama3-8b-gateway"]["data"][CONFIG_KEY])
    cfg["engines"] = {"static": [eng.url]}
    cfg["cache"]["redisURL"] = f"redis://127.0.0.1:{port}/0"
    cfg["auth"] = {}
    gw_dir = Path(tempfile.mkdtemp(prefix="llmfleet-gw-auth-"))
    (gw_dir / "gateway.json").write_text(json.dumps(cfg))
    (gw_dir / "keys").write_text(f"auth: {KEY}\n")
    gw_env = next(
        c["env"]
        for c in children["Deployment/llama3-8b-gateway"]["spec"]["template"]["spec"]["containers"]
        if c["name"] == "gateway"
    )
    ref = next(e for e in gw_env if e["name"] == REDIS_PASSWORD_ENV)["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("llama3-8b-cache-auth", PASSWORD_KEY)
    gw_port = free_port()
    gw = Server(
        ["gateway", "--host", "127.0.0.1", "--port", str(gw_port), "--config", str(gw_dir / "gateway.json")]
        + ["--keys-file", str(gw_dir / "keys")],
        gw_port,
        env={REDIS_PASSWORD_ENV: secret[PASSWORD_KEY]},  # as the kubelet resolves the secretKeyRef
    )
    yield port, gw
    gw.stop()
    eng.stop()
    rds.kill()
    rds.wait()


def test_redis_refuses_clients_without_the_gateways_password(stack) -> None:
    port, _ = stack
    with pytest.raises(redis.AuthenticationError):  # the default user is off: nothing without a login
        redis.Redis(port=port).get("k")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, password=PASSWORD).ping()  # the password alone logs in as `default`: off
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, username=AUTH_USER, password=PASSWORD + "x").ping()
    gateway_user = redis.Redis(port=port, username=AUTH_USER, password=PASSWORD)
    assert gateway_user.ping()
    for dangerous in (
        ("CONFIG", "GET", "*"),
        ("FLUSHALL",),
        ("ACL", "LIST"),
        ("KEYS", "*"),
        ("MODULE", "LIST"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            gateway_user.execute_command(*dangerous)


def ask(gw: Server, content: str) -> httpx.Response:
    return chat(gw.url, KEY, content, model="llama3-8b", max_tokens=8)


def test_the_gateway_logs_in_and_caches(stack) -> None:
    port, gw = stack
    first = ask(gw, "What is PagedAttention?")
    assert first.status_code == 200 and first.headers["x-llmfleet-cache"] == "miss", first.text
    assert ask(gw, "What is PagedAttention?").headers["x-llmfleet-cache"] == "exact"
    time.sleep(0.3)  # the semantic index picks the entry up asynchronously
    assert ask(gw, "What is PagedAttention ?").headers["x-llmfleet-cache"] == "semantic"
    keys = redis.Redis(port=port, username=AUTH_USER, password=PASSWORD).dbsize()
    assert keys > 0  # the entries are in the authenticated Redis
    assert "NOAUTH" not in gw.output() and "WRONGPASS" not in gw.output()
    # Secrets audit of the gateway's log lines: no password, no API key, no prompt.
    log = gw.output()
    assert PASSWORD not in log and KEY not in log and "PagedAttention" not in log
    assert '"status":200' in log  # the access log was written, so the absence above means something
