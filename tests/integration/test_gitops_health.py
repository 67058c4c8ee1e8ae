"""GitOps health from the operator's real output: every status the operator wrote while a CR rolled out, became
Ready, could not be sized, and was scaled to zero, judged by Argo CD's Lua health check (lupa) and by kstatus
itself (sigs.k8s.io/cli-utils, built by hack/kstatus.sh: what Flux's health checks read), and by
``kubectl wait --for=condition=Ready``."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import Cluster, eventually
from tests.integration.test_operator import condition, example, status
from tests.unit.test_gitops_health import argocd_health

pytestmark = pytest.mark.integration


def kstatus(objects: list[dict]) -> list[dict]:
    binary = (
        subprocess.run(
            ["bash", str(ROOT / "hack" / "kstatus.sh")], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .removeprefix("KSTATUS=")
    )
    out = subprocess.run([binary], input=json.dumps(objects), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


class Recorder:
    """Every distinct copy of the CR the API server serves while it lives (its status as the operator wrote it)."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.seen: dict[str, dict] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            obj = self.cluster.get("llmd", self.name, self.namespace)
            if obj:
                self.seen.setdefault(obj["metadata"]["resourceVersion"], obj)
            time.sleep(0.05)

    def close(self) -> list[dict]:
        self.stop.set()
        self.thread.join(timeout=10)
        return list(self.seen.values())


def test_argocd_and_kstatus_read_the_operators_real_statuses(cluster, operator, namespace) -> None:
    obj = example(namespace)
    obj["spec"]["cache"] = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
    rec = Recorder(cluster, namespace, "llama3-8b")
    try:
        cluster.apply(obj)
        eventually(
            lambda: (
                condition(st := status(cluster, namespace, "llama3-8b"), "Ready").get("status") == "True"
                and condition(st, "Progressing").get("status") == "False"
            ),
            120,
            what="Ready and rolled out",
        )
        time.sleep(1)
        rollout = rec.close()
    finally:
        rec.stop.set()
    judged = list(zip(rollout, kstatus(rollout), [argocd_health(o) for o in rollout], strict=True))
    for o, k, a in judged:
        st = o.get("status") or {}
        ready = condition(st, "Ready").get("status") == "True"
        settled = ready and condition(st, "Progressing").get("status") == "False"
        settled = settled and st.get("observedGeneration") == o["metadata"]["generation"]
        assert (a["status"] == "Healthy") == settled, (st.get("conditions"), a)
        if st.get("conditions"):  # before the first status write kstatus cannot tell (its documented limit)
            assert (k["status"] == "Current") == settled, (st.get("conditions"), k)
    assert judged[-1][1]["status"] == "Current" and judged[-1][2]["status"] == "Healthy"
    assert any(a["status"] == "Progressing" for _, _, a in judged)  # the rollout was seen on the way
    assert any(k["status"] == "InProgress" for _, k, _ in judged)
    wait = cluster.kubectl(
        "wait", "llmd/llama3-8b", "-n", namespace, "--for=condition=Ready", "--timeout=10s", check=False
    )
    assert wait.returncode == 0, wait.stderr

    # A spec the operator cannot size: Degraded for Argo CD, Failed (Stalled) for kstatus.
    obj["spec"]["model"]["name"] = "meta-llama/Llama-3.1-405B-Instruct"
    cluster.apply(obj)
    degraded = eventually(
        lambda: (
            (o := cluster.get("llmd", "llama3-8b", namespace))
            and condition(o.get("status") or {}, "Degraded").get("status") == "True"
            and o
        ),
        60,
        what="Degraded",
    )
    assert argocd_health(degraded)["status"] == "Degraded"
    assert "SizingFailed" in argocd_health(degraded)["message"]
    assert kstatus([degraded])[0]["status"] == "Failed"

    # Scaled to zero on purpose: Suspended for Argo CD, Current for kstatus (nothing left to do).
    obj["spec"]["model"]["name"] = "meta-llama/Meta-Llama-3-8B-Instruct"
    obj["spec"]["autoscaling"] = {"enabled": False}
    obj["spec"]["replicas"] = 0
    obj["spec"]["pools"]["onDemand"]["minReplicas"] = 0
    cluster.apply(obj)
    zero = eventually(
        lambda: (
            (o := cluster.get("llmd", "llama3-8b", namespace))
            and condition(o.get("status") or {}, "Ready").get("reason") == "ScaledToZero"
            and condition(o["status"], "Progressing").get("status") == "False"
            and o["status"].get("observedGeneration") == o["metadata"]["generation"]
            and o
        ),
        90,
        what="ScaledToZero",
    )
    assert argocd_health(zero)["status"] == "Suspended"
    assert kstatus([zero])[0]["status"] == "Current"
