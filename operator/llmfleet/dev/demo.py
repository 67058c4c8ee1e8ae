"""`llmfleet dev up`: the whole stack on one machine, serving real traffic, without Docker or GPUs.

Starts the local control plane (hack/cluster.sh), installs the CRD, runs Prometheus (Debian's, scraping the
pods the pod runner runs), the operator (its autoscaler reading that Prometheus) and the pod runner (which
runs engine pods as `llmfleet engine-sim`, gateway pods as `llmfleet gateway` and the cache pod as Redis 8
with the query engine, each on its pod IP), applies an LLMDeployment, waits for Ready, sends a streaming chat
completion through the gateway and shows the figures the autoscaler read. Stops everything it started on exit
unless --keep.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from llmfleet.dev import prometheus

ROOT = Path(__file__).resolve().parents[3]
DEMO_KEY = "sk-llmfleet-demo-key"


def _say(msg: str) -> None:
    print(f"[dev up {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _redis_env() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "redis.sh"), "install"], capture_output=True, text=True, check=True
    )
    env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    return {"LLMFLEET_REDIS_SERVER": env["REDIS_SERVER"], "LLMFLEET_REDIS_MODULE": env["REDIS_MODULE"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _autoscaler_view(kube: Any, ns: str, name: str, key: str, timeout: float = 60) -> dict[str, Any] | None:
    """status.metrics once the autoscaler read them from Prometheus and they hold ``key``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = (kube.get("llmfleet.io/v1alpha1", "LLMDeployment", ns, name) or {}).get("status") or {}
        ok = any(c["type"] == "MetricsAvailable" and c["status"] == "True" for c in st.get("conditions", []))
        if ok and st.get("metrics", {}).get(key) is not None:
            return dict(st["metrics"])
        time.sleep(1)
    return None


def run(example: Path, keep: bool, run_dir: Path) -> int:  # noqa: C901 - a script: start, wait, report, stop
    from llmfleet.fleet.names import label_selector
    from llmfleet.kube.client import KubeClient, load_config

    env = {**os.environ, "LLMFLEET_CLUSTER_DIR": str(run_dir)}
    _say("starting the local control plane (first run compiles it: several minutes)")
    subprocess.run(
        ["bash", str(ROOT / "hack" / "cluster.sh"), "up"], env=env, check=True, stdout=subprocess.DEVNULL
    )
    kubeconfig = run_dir / "kubeconfig"
    env["KUBECONFIG"] = str(kubeconfig)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        kube = KubeClient(load_config(str(kubeconfig)))
        kube.apply(yaml.safe_load((ROOT / "crds" / "llmfleet.io_llmdeployments.yaml").read_text()))
        time.sleep(1.5)
        logs = run_dir / "logs"
        logs.mkdir(exist_ok=True)
        targets = run_dir / "prometheus" / "targets.json"
        operator_env = {**env, "LLMFLEET_ENGINE_DISCOVERY": "pods", "LLMFLEET_AUTOSCALE_INTERVAL": "5"}
        try:
            port = _free_port()
            procs.append(prometheus.start(targets, targets.parent, port, "5s"))
            operator_env["LLMFLEET_PROMETHEUS_URL"] = f"http://127.0.0.1:{port}"
            _say(f"Prometheus on http://127.0.0.1:{port}, scraping the engine and gateway pods")
        except (FileNotFoundError, RuntimeError) as exc:
            _say(f"no Prometheus ({exc}); the autoscaler will hold the replica count")
        _say(f"starting the operator and the pod runner (logs in {logs})")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llmfleet",
                    "operator",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--liveness-port",
                    "0",
                ],
                env=operator_env,
                stdout=open(logs / "operator.log", "wb"),  # noqa: SIM115 - the child owns it
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llmfleet",
                    "dev",
                    "pod-runner",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--logs",
                    str(logs / "pods"),
                    "--prometheus-targets",
                    str(targets),
                ],
                env={**env, **_redis_env()},
                stdout=open(logs / "pod-runner.log", "wb"),  # noqa: SIM115 - the child owns it
                stderr=subprocess.STDOUT,
            )
        )
        obj: dict[str, Any] = yaml.safe_load(example.read_text())
        ns, name = obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        secret = (obj["spec"].get("gateway") or {}).get("auth", {}).get("apiKeysSecretRef")
        if secret:
            kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret, "namespace": ns},
                    "data": {"demo": base64.b64encode(DEMO_KEY.encode()).decode()},
                }
            )
        for env_var in obj["spec"].get("engine", {}).get("env", []):
            ref = (env_var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                kube.apply(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": ref["name"], "namespace": ns},
                        "data": {ref["key"]: base64.b64encode(b"demo").decode()},
                    }
                )
        kube.apply(obj)
        _say(f"applied LLMDeployment {ns}/{name}; waiting for Ready")
        deadline = time.monotonic() + 180
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            live = kube.get("llmfleet.io/v1alpha1", "LLMDeployment", ns, name) or {}
            status = live.get("status") or {}
            if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])):
                break
            time.sleep(1)
        else:
            _say(f"not Ready in time: {json.dumps(status.get('conditions'))}")
            return 1
        _say(
            f"Ready: {status.get('ready')} engine replicas, TP {status.get('tensorParallelSize')}, "
            f"${status.get('costPerHour')}/h"
        )
        if (
            "LLMFLEET_PROMETHEUS_URL" in operator_env
            and _autoscaler_view(kube, ns, name, "readyReplicas") is None
        ):
            _say(
                "the autoscaler does not see the engines in Prometheus yet"
            )  # the request's TTFT may go unseen
        pods = kube.list("v1", "Pod", ns, label_selector(name, "gateway"))
        ip = next(p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP"))
        url = f"http://{ip}:8080/v1/chat/completions"
        served = obj["spec"]["model"].get("servedName") or name
        body = json.dumps(
            {
                "model": served,
                "stream": True,
                "max_tokens": 24,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello to the platform team."}],
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {DEMO_KEY}",
            "X-Data-Sensitivity": "sensitive",
        }
        text, route = "", ""
        for _attempt in range(60):  # the gateway process may still be starting
            try:
                req = urllib.request.Request(url, data=body, headers=headers)
                with urllib.request.urlopen(req, timeout=30) as resp:
                    route = resp.headers.get("x-llmfleet-route", "")
                    for line in resp:
                        if line.startswith(b"data: {"):
                            chunk = json.loads(line[6:])
                            for choice in chunk.get("choices", []):
                                text += (choice.get("delta") or {}).get("content") or ""
                break
            except OSError:
                time.sleep(1)
        else:
            _say("the gateway did not answer")
            return 1
        _say(f"streamed through the gateway ({route}) at {url}: {text!r}")
        if "LLMFLEET_PROMETHEUS_URL" in operator_env:
            metrics = _autoscaler_view(kube, ns, name, "ttftP95")  # the demo request, in two scrapes
            _say(
                f"the autoscaler read from Prometheus: {metrics}"
                if metrics
                else "the autoscaler has not read the engines' metrics yet"
            )
        table = subprocess.run(
            [
                str(
                    Path(os.environ.get("LLMFLEET_CACHE", Path.home() / ".cache" / "llmfleet"))
                    / "bin"
                    / os.environ.get("K8S_VERSION", "v1.36.3")
                    / "kubectl"
                ),
                "get",
                "llmd",
                "-n",
                ns,
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        print(table.stdout, end="", flush=True)
        if keep:
            _say(
                f"kept running. export KUBECONFIG={kubeconfig}; stop with: LLMFLEET_CLUSTER_DIR={run_dir} "
                "hack/cluster.sh down (and kill the operator and pod runner)"
            )
            procs.clear()
        return 0 if text else 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if not keep:
            subprocess.run(
                ["bash", str(ROOT / "hack" / "cluster.sh"), "down"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _say("stopped everything it started")
