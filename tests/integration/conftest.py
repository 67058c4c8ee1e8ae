"""Session fixtures that start the real local components once: the Kubernetes control plane (hack/cluster.sh)
and the llmfleet operator as a subprocess. Everything started here is stopped at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.servers import free_port

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.36.3")
BIN = Path(os.environ.get("LLMFLEET_CACHE", Path.home() / ".cache" / "llmfleet")) / "bin" / K8S_VERSION


class Cluster:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.kubeconfig = run_dir / "kubeconfig"
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def get(self, kind: str, name: str, namespace: str) -> dict | None:
        r = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def names(self, kind: str, namespace: str, selector: str) -> list[str]:
        out = self.kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "json")
        return sorted(i["metadata"]["name"] for i in json.loads(out.stdout)["items"])

    def apply(self, obj: dict | str) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self.kubectl("apply", "-f", "-", input=text, check=False)

    def audit_writes(self, since: float, user_agents: tuple[str, ...]) -> list[dict]:
        """Write requests in the API server's audit log since a time.time(), by user-agent prefix."""
        out = []
        with open(self.run_dir / "audit.log") as f:
            for line in f:
                ev = json.loads(line)
                if ev.get("stage") != "ResponseComplete" or ev.get("verb") in ("get", "list", "watch"):
                    continue
                ts = ev.get("requestReceivedTimestamp", "")
                if _epoch(ts) < since:
                    continue
                if (ev.get("userAgent") or "").startswith(user_agents):
                    out.append(ev)
        return out


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def eventually(
    check: Callable[[], object], timeout: float = 60, interval: float = 0.3, what: str = ""
) -> object:
    """Poll until check() returns something truthy (a bound on waiting, not a performance threshold)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    run_dir = Path(tempfile.mkdtemp(prefix="llmfleet-cluster-"))
    env = {**os.environ, "LLMFLEET_CLUSTER_DIR": str(run_dir)}
    up = subprocess.run(
        ["bash", str(ROOT / "hack" / "cluster.sh"), "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    if up.returncode != 0:
        raise RuntimeError(f"cluster did not start:\n{up.stdout}\n{up.stderr}")
    c = Cluster(run_dir)
    try:
        c.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/llmdeployments.llmfleet.io", "--timeout=60s")
        yield c
    finally:
        subprocess.run(
            ["bash", str(ROOT / "hack" / "cluster.sh"), "down"], env=env, capture_output=True, timeout=120
        )


# The session's operator asks this Prometheus; the `prometheus` fixture starts it for the tests that need it
# (until then the autoscaler finds it unreachable and holds every target, as it would in a real cluster).
PROMETHEUS_PORT = free_port()
AUTOSCALE_INTERVAL = "1"


class Operator:
    def __init__(self, cluster: Cluster, *extra: str) -> None:
        self.cluster = cluster
        self.extra = extra
        self.log = tempfile.NamedTemporaryFile(prefix="llmfleet-operator-", suffix=".log", delete=False)  # noqa: SIM115
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmfleet",
                "operator",
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--liveness-port",
                "0",
                "--metrics-port",
                "0",
                *self.extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # Loopback pod IPs keep EndpointSlices empty: gateways find engines by listing pods (hack/README.md).
            env={
                **self.cluster.env,
                "PYTHONUNBUFFERED": "1",
                "LLMFLEET_AUTOSCALE_INTERVAL": AUTOSCALE_INTERVAL,
                "LLMFLEET_ENGINE_DISCOVERY": "pods",
                "LLMFLEET_PROMETHEUS_URL": f"http://127.0.0.1:{PROMETHEUS_PORT}",
            },
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return Path(self.log.name).read_text()


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[Operator]:
    op = Operator(cluster)
    try:
        yield op
    finally:
        op.stop()


class Prometheus:
    def __init__(self, run_dir: Path) -> None:
        self.url = f"http://127.0.0.1:{PROMETHEUS_PORT}"
        self.targets = run_dir / "targets.json"  # a pod runner given this path writes the engine pods here


@pytest.fixture(scope="session")
def prometheus(cluster: Cluster) -> Iterator[Prometheus]:
    """Debian's Prometheus scraping, every second, the engine pods a pod runner writes to ``targets``."""
    from llmfleet.dev.prometheus import start

    prom = Prometheus(Path(tempfile.mkdtemp(prefix="llmfleet-prometheus-")))
    proc = start(prom.targets, prom.targets.parent, PROMETHEUS_PORT, "1s")
    try:
        yield prom
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
