"""The Helm chart: lint, schema-valid templates, the plain install manifests in sync, and a real install
whose operator (run by the local pod runner under the chart's ServiceAccount and RBAC) reconciles a CR."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.conftest import BIN, eventually
from tests.integration.test_operator import example, wait_ready

pytestmark = pytest.mark.integration
CHART = ROOT / "charts" / "llmfleet"


def helm(*args: str, env: dict | None = None) -> str:
    result = subprocess.run([str(BIN / "helm"), *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_chart_lints_and_templates_schema_valid_objects() -> None:
    helm("lint", "--strict", str(CHART))
    for values in ([], ["--set", "watchNamespaces={a,b}"], ["--set", "peering.enabled=false,replicaCount=1"]):
        docs = [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), "-n", "llmfleet-system", *values)) if d]
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"} <= kinds
        for d in docs:
            if d["apiVersion"].startswith("kopf.dev"):
                continue
            kubernetes_validate.validate(d, "1.36", strict=True)


def test_chart_crd_and_install_manifests_are_in_sync() -> None:
    assert (CHART / "crds" / "llmfleet.io_llmdeployments.yaml").read_text() == (ROOT / "crds" / "llmfleet.io_llmdeployments.yaml").read_text()
    rendered = helm("template", "llmfleet", str(CHART), "--namespace", "llmfleet-system", "--include-crds")
    rendered = "\n".join(line for line in rendered.splitlines() if not line.startswith("# Source:")) + "\n"
    assert (ROOT / "manifests" / "install" / "llmfleet.yaml").read_text() == rendered, "run hack/gen.sh"


def test_rbac_grants_no_wildcards() -> None:
    docs = list(yaml.safe_load_all(helm("template", "t", str(CHART))))
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule.get("apiGroups", [])


def test_helm_install_runs_two_peered_operators_that_reconcile_a_cr(cluster, operator, namespace) -> None:
    operator.stop()  # the chart's operators take over for this test
    logs = Path(tempfile.mkdtemp(prefix="llmfleet-pods-"))
    runner = subprocess.Popen([sys.executable, "-m", "llmfleet", "dev", "pod-runner", "--kubeconfig",
                               str(cluster.kubeconfig), "--logs", str(logs)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster.env)
    try:
        helm("install", "llmfleet", str(CHART), "-n", "llmfleet-system", "--create-namespace", "--wait",
             "--timeout", "120s", env=cluster.env)
        cluster.apply(example(namespace))
        st = wait_ready(cluster, namespace, "llama3-8b", timeout=120)
        assert st["ready"] == "1/1"

        def two_peers() -> dict:
            # Both operators registered in the peering object (kopf keeps one entry per live peer).
            peering = cluster.get("clusterkopfpeering", "llmfleet", "default") or {}
            return peering if len(peering.get("status") or {}) == 2 else {}

        eventually(two_peers, 90, what="two operator pods in the kopf peering")
        files = sorted(logs.glob("llmfleet-system_llmfleet-*.log"))
        texts = [f.read_text() for f in files]
        # One reconciled the CR, the other stayed on standby. (Which one logs "Pausing operations" depends on
        # the order they start in: a standby that starts after the leader never leaves its initial pause.)
        assert len(files) == 2 and sorted("llmfleet.reconcile" in t for t in texts) == [False, True], texts
        assert not any("Forbidden" in t or " 403" in t for t in texts), "RBAC denied the operator something"
    finally:
        subprocess.run([str(BIN / "helm"), "uninstall", "llmfleet", "-n", "llmfleet-system", "--wait"],
                       env=cluster.env, capture_output=True, timeout=120)
        runner.terminate()
        runner.wait(timeout=60)
        operator.start()
