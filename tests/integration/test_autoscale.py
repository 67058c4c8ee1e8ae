"""The autoscaler end to end: engine pods run as engine-sim processes on their pod IPs (the pod runner),
Debian's Prometheus scrapes their real /metrics, the operator reads queue depth from Prometheus and scales
the pools spot first; and spot replicas that cannot start get on-demand stand-ins after pendingTimeout."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster, Prometheus, eventually
from tests.integration.test_operator import condition, example, status

pytestmark = pytest.mark.integration


@pytest.fixture
def pod_runner(cluster: Cluster, prometheus: Prometheus) -> Iterator[Path]:
    logs = Path(tempfile.mkdtemp(prefix="llmfleet-pods-"))
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmfleet",
            "dev",
            "pod-runner",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--logs",
            str(logs),
            "--prometheus-targets",
            str(prometheus.targets),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cluster.env,
    )
    try:
        yield logs
    finally:
        runner.terminate()
        runner.wait(timeout=60)


def replicas(cluster: Cluster, ns: str, name: str) -> tuple[int, int]:
    od = cluster.get("deployment", f"{name}-engine-ondemand", ns)
    spot = cluster.get("deployment", f"{name}-engine-spot", ns)
    return od["spec"]["replicas"] if od else -1, spot["spec"]["replicas"] if spot else -1


def engine_ip(cluster: Cluster, ns: str, name: str) -> str:
    pods = json.loads(
        cluster.kubectl(
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            f"llmfleet.io/deployment={name},llmfleet.io/pool=on-demand",
            "-o",
            "json",
        ).stdout
    )
    return next(p["status"]["podIP"] for p in pods["items"] if (p.get("status") or {}).get("podIP"))


class Load:
    """Concurrent streaming completions against one engine, until stopped (then the streams are closed)."""

    def __init__(self, url: str, streams: int) -> None:
        self.url, self.stop, self.errors = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(streams)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        body = json.dumps(
            {
                "model": "llama3-8b",
                "prompt": "Tell a long story. " * 20,
                "max_tokens": 4000,
                "stream": True,
                "ignore_eos": True,
            }
        ).encode()
        while not self.stop.is_set():
            try:
                req = urllib.request.Request(
                    self.url, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=120) as resp:
                    for _line in resp:
                        if self.stop.is_set():
                            break
            except OSError as exc:
                if not self.stop.is_set():
                    self.errors.append(exc)
                    self.stop.wait(0.5)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def test_queue_depth_from_prometheus_scales_spot_first_then_back_down(
    cluster, operator, prometheus, pod_runner, namespace
) -> None:
    obj = example(namespace)
    obj["spec"]["engine"] = {"extraArgs": ["--max-num-seqs=2"]}  # a small batch: a queue builds at once
    obj["spec"]["cache"] = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
    obj["spec"]["gateway"] = {"replicas": 1}
    obj["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetQueueDepthPerReplica": 2,
        "scaleUpWindow": "0s",
        "scaleDownWindow": "10s",
        "loadMemory": "10s",  # the scale-down is what this test waits for
    }
    cluster.apply(obj)
    eventually(
        lambda: (
            condition(status(cluster, namespace, "llama3-8b"), "MetricsAvailable").get("status") == "True"
        ),
        120,
        what="the engine's series in Prometheus",
    )
    assert replicas(cluster, namespace, "llama3-8b") == (1, 0)

    load = Load(f"http://{engine_ip(cluster, namespace, 'llama3-8b')}:8000/v1/completions", streams=12)
    try:
        st = eventually(
            lambda: (s := status(cluster, namespace, "llama3-8b")).get("lastScale", {}).get("to") == 3 and s,
            120,
            what="a scale-up to maxReplicas",
        )
        assert "queue depth" in st["lastScale"]["reason"], st["lastScale"]
        assert st["metrics"]["queueDepth"] > 2
        assert replicas(cluster, namespace, "llama3-8b") == (1, 2)  # the on-demand baseline, then spot
        # Prefill work is read from vLLM's split of prompt tokens (cache hits are no GPU work), and status says so.
        assert st["metrics"]["promptTokensSource"] == "local_compute", st["metrics"]
    finally:
        load.close()
    assert not load.errors, load.errors[:3]

    st = eventually(
        lambda: (s := status(cluster, namespace, "llama3-8b")).get("lastScale", {}).get("to") == 1 and s,
        120,
        what="the scale-down once the queue is gone",
    )
    assert "load fits" in st["lastScale"]["reason"], st["lastScale"]
    assert replicas(cluster, namespace, "llama3-8b") == (1, 0)

    # The decisions, as `llmfleet status` shows them (status.autoscaling.history) and as Events.
    out = subprocess.run(
        [sys.executable, "-m", "llmfleet", "status", "llama3-8b", "-n", namespace, "-o", "json",
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    history = json.loads(out.stdout)["history"]
    up = next(h for h in history if h["to"] == 3)
    assert up["reason"] == "QueueDepth" and (up["spot"], up["onDemand"]) == (2, 1), up
    assert up["figures"]["queueDepth"] > 2 and "queue depth" in up["message"]
    assert history[-1]["to"] == 1 and history[-1]["reason"] == "LoadFits", history[-1]
    table = subprocess.run(
        [sys.executable, "-m", "llmfleet", "status", "llama3-8b", "-n", namespace,
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "QueueDepth" in table and "LoadFits" in table and "MetricsAvailable" in table
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=Scaled", "-o", "json"
    ).stdout
    messages = [e["message"] for e in json.loads(events)["items"]]
    assert any("1 → 3 replicas (2 spot, 1 on-demand): QueueDepth" in m for m in messages), messages


def test_spot_that_cannot_schedule_falls_back_to_on_demand_and_returns(cluster, operator, namespace) -> None:
    obj = example(namespace)
    obj["spec"]["autoscaling"] = {"enabled": False}
    obj["spec"]["replicas"] = 3
    obj["spec"]["pools"] = {
        "onDemand": {"minReplicas": 1, "maxReplicas": 4},
        "spot": {
            "maxReplicas": 4,
            "pendingTimeout": "3s",
            "nodeSelector": {"llmfleet.io/spot-zone": "sold-out"},
        },
    }
    cluster.apply(obj)
    eventually(lambda: replicas(cluster, namespace, "llama3-8b") == (3, 2), 90, what="on-demand stand-ins")
    c = condition(status(cluster, namespace, "llama3-8b"), "SpotFallback")
    assert c["status"] == "True" and c["reason"] == "SpotCapacityUnavailable", c
    assert "2 spot replicas not ready after 3s" in c["message"]

    del obj["spec"]["pools"]["spot"]["nodeSelector"]  # spot capacity is back
    cluster.apply(obj)
    eventually(lambda: replicas(cluster, namespace, "llama3-8b") == (1, 2), 90, what="stand-ins removed")
    st = eventually(
        lambda: (s := status(cluster, namespace, "llama3-8b"))["replicas"]["spot"]["ready"] == 2 and s,
        90,
        what="spot ready",
    )
    assert condition(st, "SpotFallback")["status"] == "False"


def gateway_post(cluster: Cluster, ns: str, name: str) -> tuple[int, Message]:
    pods = json.loads(
        cluster.kubectl(
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            f"llmfleet.io/deployment={name},app.kubernetes.io/component=gateway",
            "-o",
            "json",
        ).stdout
    )
    ip = next(p["status"]["podIP"] for p in pods["items"] if (p.get("status") or {}).get("podIP"))
    body = json.dumps(
        {"model": "llama3-8b", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    )
    req = urllib.request.Request(
        f"http://{ip}:8080/v1/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json", "X-Data-Sensitivity": "sensitive"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def test_idle_fleet_scales_to_zero_and_a_request_at_the_gateway_wakes_it(
    cluster, operator, prometheus, pod_runner, namespace
) -> None:
    obj = example(namespace)
    obj["spec"]["engine"] = {}
    obj["spec"]["cache"] = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
    obj["spec"]["gateway"] = {"replicas": 1}
    obj["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "scaleToZero": {"enabled": True, "idleAfter": "5s"},
    }
    cluster.apply(obj)
    st = eventually(
        lambda: (s := status(cluster, namespace, "llama3-8b")).get("lastScale", {}).get("to") == 0 and s,
        150,
        what="scale to zero once idle",
    )
    assert "no requests for" in st["lastScale"]["reason"], st["lastScale"]
    eventually(lambda: replicas(cluster, namespace, "llama3-8b") == (0, 0), 30, what="engines scaled to zero")
    assert condition(st, "Ready")["reason"] == "ScaledToZero"

    code, headers = eventually(
        lambda: (r := gateway_post(cluster, namespace, "llama3-8b"))[0] == 503 and r,
        60,
        what="the gateway refusing while no engine runs",
    )
    assert headers.get("Retry-After") == "2"
    st = eventually(
        lambda: (s := status(cluster, namespace, "llama3-8b")).get("lastScale", {}).get("to") == 1 and s,
        60,
        what="woken by the request",
    )
    assert st["lastScale"]["reason"] == "requests arrived while scaled to zero"
    eventually(lambda: gateway_post(cluster, namespace, "llama3-8b")[0] == 200, 120, what="served again")


def _quiet(cluster: Cluster, namespace: str, names: tuple[str, ...], seconds: float) -> bool:
    """True once none of the CRs' resourceVersions moved for ``seconds`` (the first reads are changes)."""
    import time

    def versions() -> tuple[str, ...]:
        return tuple(
            (cluster.get("llmd", n, namespace) or {}).get("metadata", {}).get("resourceVersion", "")
            for n in names
        )

    before = versions()
    time.sleep(seconds)
    return versions() == before


def test_an_idle_autoscaled_fleet_writes_nothing_with_or_without_a_reachable_prometheus(
    cluster, operator, prometheus, pod_runner, namespace
) -> None:
    """Every autoscaler tick (1 s here) reads; a tick that changes nothing writes nothing: no status patch, no
    annotation, no event, whether Prometheus answers with the engines' idle series or cannot be reached."""
    import time

    reachable = example(namespace)
    reachable["spec"]["cache"] = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
    reachable["spec"]["gateway"] = {"replicas": 1}
    unreachable = example(namespace, name="no-prometheus")
    unreachable["spec"]["model"]["servedName"] = "no-prometheus"
    unreachable["spec"]["cache"] = reachable["spec"]["cache"]
    unreachable["spec"]["gateway"] = {"replicas": 1}
    unreachable["spec"]["autoscaling"]["prometheus"] = {"url": "http://127.0.0.1:9"}  # nothing listens
    cluster.apply(reachable)
    cluster.apply(unreachable)

    def metrics(name: str, want: str) -> dict:
        c = condition(status(cluster, namespace, name), "MetricsAvailable")
        return c if c.get("status") == want else {}

    read = eventually(lambda: metrics("llama3-8b", "True"), 120, what="the engine's series in Prometheus")
    assert read["reason"] == "MetricsRead"
    down = eventually(lambda: metrics("no-prometheus", "False"), 60, what="Prometheus unreachable")
    assert down["reason"] == "PrometheusUnreachable" and "is not reachable" in down["message"]
    names = ("llama3-8b", "no-prometheus")
    eventually(
        lambda: all(condition(status(cluster, namespace, n), "Ready").get("status") == "True" for n in names),
        120,
        what="both fleets Ready",
    )
    # Settled: rates appear one scrape after an engine starts (a real change); then the figures stay put.
    eventually(lambda: _quiet(cluster, namespace, names, 5), 120, interval=0, what="a settled status")

    since = time.time()
    time.sleep(12)  # twelve autoscaler ticks, with Prometheus scraping every second
    writes = [
        w
        for w in cluster.audit_writes(since, ("llmfleet-operator", "kopf"))
        if w.get("objectRef", {}).get("namespace") == namespace
    ]
    assert writes == [], [(w["verb"], w["objectRef"], w.get("requestObject")) for w in writes][:5]
    st = status(cluster, namespace, "llama3-8b")
    assert st["metrics"]["readyReplicas"] >= 1 and st["metrics"]["queueDepth"] == 0  # it did read, each tick
