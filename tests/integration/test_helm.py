"""The Helm chart: lint, schema-valid templates, the plain install manifests in sync, and a real install
whose two operators (run by the local pod runner under the chart's ServiceAccount and RBAC) hold one leader
Lease: one reconciles, the other waits, and the API server's audit log shows one writer at a time through a
graceful handover and a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.conftest import BIN, eventually
from tests.integration.test_operator import example, status, wait_ready

sys.path.insert(0, str(ROOT / "bench"))
from harness import max_writers, operator_writes

pytestmark = pytest.mark.integration
CHART = ROOT / "charts" / "llmfleet"


def helm(*args: str, env: dict | None = None) -> str:
    result = subprocess.run([str(BIN / "helm"), *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_chart_lints_and_templates_schema_valid_objects() -> None:
    helm("lint", "--strict", str(CHART))
    for values in (
        [],
        ["--set", "watchNamespaces={a,b}"],
        ["--set", "leaderElection.enabled=false,replicaCount=1"],
    ):
        docs = [
            d
            for d in yaml.safe_load_all(helm("template", "t", str(CHART), "-n", "llmfleet-system", *values))
            if d
        ]
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"} <= kinds
        for d in docs:
            kubernetes_validate.validate(d, "1.36", strict=True)


def test_chart_crd_and_install_manifests_are_in_sync() -> None:
    assert (CHART / "crds" / "llmfleet.io_llmdeployments.yaml").read_text() == (
        ROOT / "crds" / "llmfleet.io_llmdeployments.yaml"
    ).read_text()
    rendered = helm("template", "llmfleet", str(CHART), "--namespace", "llmfleet-system", "--include-crds")
    rendered = "\n".join(line for line in rendered.splitlines() if not line.startswith("# Source:")) + "\n"
    assert (ROOT / "manifests" / "install" / "llmfleet.yaml").read_text() == rendered, "run hack/gen.sh"


def test_a_pod_monitor_selects_every_engine_and_gateway_pod_where_prometheus_operator_is() -> None:
    from llmfleet.api.load import parse_object
    from llmfleet.api.sizing import size
    from llmfleet.fleet.names import DEPLOYMENT_LABEL, POOL_LABEL
    from llmfleet.render import render_all
    from tests.conftest import EXAMPLES

    assert "PodMonitor" not in helm("template", "t", str(CHART))  # no Prometheus Operator: nothing to render
    docs = yaml.safe_load_all(
        helm("template", "t", str(CHART), "--api-versions", "monitoring.coreos.com/v1/PodMonitor")
    )
    monitors = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "PodMonitor"}
    assert set(monitors) == {"t-llmfleet-fleet", "t-llmfleet-operator"}
    pm = monitors["t-llmfleet-fleet"]
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    exprs = pm["spec"]["selector"]["matchExpressions"]
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    to_service = next(r for r in endpoint["relabelings"] if r["targetLabel"] == "service")
    seen = set()
    for path in EXAMPLES:
        obj = parse_object(yaml.safe_load(path.read_text()))
        for m in render_all(obj, size(obj.spec)):
            if m["kind"] != "Deployment":
                continue
            pod = m["spec"]["template"]
            labels = pod["metadata"]["labels"]
            selected = all(
                e["key"] in labels if e["operator"] == "Exists" else labels.get(e["key"]) in e["values"]
                for e in exprs
            )
            component = labels.get("app.kubernetes.io/component")
            assert selected == (component in ("engine", "gateway")), (m["metadata"]["name"], labels)
            if selected:
                seen.add(component)
                assert any(p["name"] == "http" for p in pod["spec"]["containers"][0]["ports"])
                # The gateway's series get the `service` label the autoscaler's wake-up query selects on.
                assert f"{component};{labels[DEPLOYMENT_LABEL]}".startswith("gateway;") == (
                    component == "gateway"
                )
                assert component != "engine" or POOL_LABEL in labels
    assert seen == {"engine", "gateway"}
    assert (to_service["regex"], to_service["replacement"]) == ("gateway;(.+)", "${1}-gateway")
    # The `component` label the crash-loop alert and the dashboard's restarts panel select on.
    assert any(r["targetLabel"] == "component" for r in endpoint["relabelings"])


def test_the_operator_is_scraped_by_pod_monitor_or_annotations_and_rules_and_dashboard_install() -> None:
    from llmfleet import monitoring

    crds = ["--api-versions", "monitoring.coreos.com/v1/PodMonitor"]
    crds += ["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
    docs = [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), "-n", "ops", *crds)) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert {"name": "LLMFLEET_METRICS_PORT", "value": "8080"} in container["env"]
    assert "annotations" not in pod["metadata"]  # the PodMonitor scrapes it
    (op,) = [d for d in docs if d["kind"] == "PodMonitor" and d["metadata"]["name"].endswith("-operator")]
    assert op["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = op["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["honorLabels"]) == ("metrics", True)  # each CR's own namespace label
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == monitoring.rule_groups()
    (board,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "t-llmfleet-dashboard"
    ]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["llmfleet.json"]) == monitoring.dashboard()

    # Without the Prometheus Operator: the operator pod carries the usual scrape annotations, no PodMonitor or
    # PrometheusRule is rendered; each piece can be turned off.
    plain = [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), "-n", "ops")) if d]
    (deployment,) = [d for d in plain if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    assert not {"PodMonitor", "PrometheusRule"} & {d["kind"] for d in plain}
    off = "metrics.enabled=false,prometheusRule.enabled=false,grafanaDashboard.enabled=false"
    docs = [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), *crds, "--set", off)) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("PodMonitor", "t-llmfleet-operator") not in kinds and (
        "PrometheusRule",
        "t-llmfleet",
    ) not in kinds
    assert ("ConfigMap", "t-llmfleet-dashboard") not in kinds
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LLMFLEET_METRICS_PORT", "value": "0"} in container["env"]
    assert all(p["name"] != "metrics" for p in container["ports"])


def test_rbac_grants_no_wildcards() -> None:
    docs = list(yaml.safe_load_all(helm("template", "t", str(CHART))))
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        assert (
            "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule.get("apiGroups", [])
        )


LEASE = {"leaseDuration": 6, "renewDeadline": 4, "retryPeriod": 1}  # short, so the test takes seconds


def terms(writes: list[tuple[float, str, str]]) -> list[str]:
    """The pods in the order they wrote, one entry per uninterrupted run of writes by one pod."""
    runs: list[str] = []
    for _, pod, _ in writes:
        if not runs or runs[-1] != pod:
            runs.append(pod)
    return runs


def holder(cluster) -> str | None:
    """The process holding the lease: its pod's name, an underscore and a per-process suffix."""
    lease = cluster.get("lease", "llmfleet", "llmfleet-system") or {}
    return (lease.get("spec") or {}).get("holderIdentity")


def pod_of(identity: str | None) -> str:
    return (identity or "").split("_")[0]


def kill_pod_process(pod: str) -> None:
    """SIGKILL the process the pod runner started for a pod (no notice, no release)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"POD_NAME={pod}".encode() in env and b"LLMFLEET_LEASE_DURATION=6" in env:
                os.killpg(int(d.name), signal.SIGKILL)
                return
    raise AssertionError(f"no process for pod {pod}")


PRUNE_PATCH = {
    "spec": {
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
        "network": {"isolation": False},
    }
}
OPERATOR_SA = "system:serviceaccount:llmfleet-system:llmfleet"
# Granted but not used in this run, each for a reason the run cannot show.
RARE = {
    ("", "pods", "delete"): "engine pods drained on a spot notice (test_operator's reclaim test, chaos.py)",
    ("coordination.k8s.io", "leases", "create"): "the Lease outlives helm uninstall; made earlier",
    ("llmfleet.io", "llmdeployments", "get"): "a reconcile of a CR the watch has not delivered yet GETs it",
    ("", "configmaps", "delete"): "prune: a child kind a later version stops rendering",
    ("", "serviceaccounts", "delete"): "prune: as above",
    ("rbac.authorization.k8s.io", "roles", "delete"): "prune: as above",
    ("rbac.authorization.k8s.io", "rolebindings", "delete"): "prune: as above",
    ("policy", "poddisruptionbudgets", "delete"): "prune: as above",
    (
        "autoscaling",
        "horizontalpodautoscalers",
        "create",
    ): "the gateway's HPA: only with spec.gateway.autoscaling (test_operator's gateway HPA test)",
    ("autoscaling", "horizontalpodautoscalers", "patch"): "as above",
    ("autoscaling", "horizontalpodautoscalers", "delete"): "as above",
    ("discovery.k8s.io", "endpointslices", "list"): "held so the gateway Role it grants is no escalation",
    ("discovery.k8s.io", "endpointslices", "watch"): "held so the gateway Role it grants is no escalation",
}


def patch_cr(cluster, namespace: str, patch: dict) -> None:
    cluster.kubectl("patch", "llmd", "llama3-8b", "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def granted(docs: list[dict], kinds: tuple[str, ...]) -> set[tuple[str, str, str]]:
    out = set()
    for d in docs:
        if d["kind"] in kinds:
            for rule in d.get("rules") or []:
                for g in rule.get("apiGroups", []):
                    for r in rule.get("resources", []):
                        out |= {(g, r, v) for v in rule["verbs"]}
    return out


def used(audit_log: Path, user: str, since: float) -> set[tuple[str, str, str]]:
    out = set()
    with open(audit_log) as f:
        for line in f:
            if user not in line:
                continue
            ev = json.loads(line)
            # A watch still open has only its ResponseStarted event: it counts as used too.
            stage = ev.get("stage")
            if (
                stage not in ("ResponseComplete", "ResponseStarted")
                or (ev.get("user") or {}).get("username") != user
            ):
                continue
            from datetime import datetime

            if (
                datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
                < since
            ):
                continue
            ref = ev.get("objectRef") or {}
            if not ref.get("resource"):
                continue  # discovery (/api, /apis): no RBAC rule needed
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            out.add((ref.get("apiGroup", ""), resource, ev["verb"]))
    return out


def compare_rbac(cluster, namespace: str, since: float) -> None:
    docs = [
        d for d in yaml.safe_load_all(helm("template", "llmfleet", str(CHART), "-n", "llmfleet-system")) if d
    ]
    grants = granted(docs, ("ClusterRole", "Role"))
    use = used(cluster.run_dir / "audit.log", OPERATOR_SA, since)
    assert use <= grants, f"used but not granted: {sorted(use - grants)}"
    assert RARE.keys() <= grants, sorted(RARE.keys() - grants)
    applied = {(g, r) for g, r, v in use if v == "patch"}  # server-side apply that creates needs create too
    unused = {(g, r, v) for g, r, v in grants - use if not (v == "create" and (g, r) in applied)}
    assert unused <= RARE.keys(), (
        f"granted but never used, with no reason on record: {sorted(unused - RARE.keys())}"
    )
    # The gateway's Role: exactly what its discovery uses (a list, then a watch), nothing more.
    role = next(
        m
        for m in json.loads(cluster.kubectl("get", "role", "-n", namespace, "-o", "json").stdout)["items"]
        if m["metadata"]["name"] == "llama3-8b-gateway"
    )
    gateway = used(
        cluster.run_dir / "audit.log", f"system:serviceaccount:{namespace}:llama3-8b-gateway", since
    )
    assert gateway and granted([role], ("Role",)) == gateway, (granted([role], ("Role",)), gateway)


def test_helm_install_runs_one_leader_that_fails_over_with_one_writer_at_a_time(
    cluster, operator, namespace
) -> None:
    operator.stop()  # the chart's operators take over for this test
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cluster.env,
    )
    since = time.time()
    try:
        helm(
            "install",
            "llmfleet",
            str(CHART),
            "-n",
            "llmfleet-system",
            "--create-namespace",
            "--wait",
            "--timeout",
            "120s",
            "--set",
            ",".join(f"leaderElection.{k}={v}" for k, v in LEASE.items()),
            env=cluster.env,
        )
        cluster.apply(  # the API keys, so the gateways start (and their API use can be audited below)
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "llama3-keys", "namespace": namespace},
                "stringData": {"ha": "sk-helm-ha-000000000000"},
            }
        )
        cluster.apply(example(namespace))
        st = wait_ready(cluster, namespace, "llama3-8b", timeout=120)
        assert st["ready"] == "1/1"
        pods = cluster.names("pod", "llmfleet-system", "app.kubernetes.io/name=llmfleet")
        assert len(pods) == 2
        first = holder(cluster)
        assert pod_of(first) in pods, (first, pods)
        writes = operator_writes(cluster.run_dir / "audit.log", since)
        assert {w.split("/")[0] for _, w, _ in writes} == {pod_of(first)}, writes  # the standby wrote nothing

        # 1. A graceful stop (pod deleted: SIGTERM) releases the lease: another operator leads within a few
        # retries, long before the lease would have expired. Usually the standby; the Deployment's replacement for
        # the deleted pod campaigns too, as soon as it starts, and may win the race (as it may in a real cluster).
        cluster.kubectl("delete", "pod", pod_of(first), "-n", "llmfleet-system", "--wait=false")
        stopped = time.monotonic()
        eventually(
            lambda: pod_of(holder(cluster)) not in ("", pod_of(first)),
            60,
            0.1,
            what="another operator to take the released lease",
        )
        graceful_s = time.monotonic() - stopped
        leader = pod_of(holder(cluster))
        patch_cr(cluster, namespace, {"spec": {"gateway": {"replicas": 3}}})
        eventually(
            lambda: status(cluster, namespace, "llama3-8b").get("observedGeneration") == 2,
            60,
            what="the new leader to reconcile a change",
        )
        desired = (status(cluster, namespace, "llama3-8b").get("replicas") or {}).get("desired")

        # 2. SIGKILL the leader: no release, the lease has to expire. The other pod is on standby now; the
        # killed container restarts as a new candidate. Either may win.
        second = holder(cluster)
        eventually(
            lambda: len(cluster.names("pod", "llmfleet-system", "app.kubernetes.io/name=llmfleet")) == 2,
            60,
            what="the replacement operator pod",
        )
        kill_pod_process(leader)
        killed = time.monotonic()
        eventually(
            lambda: holder(cluster) not in (None, second), 60, 0.1, what="a standby to take the expired lease"
        )
        kill_s = time.monotonic() - killed
        patch_cr(cluster, namespace, {"spec": {"gateway": {"replicas": 1}}})
        eventually(
            lambda: status(cluster, namespace, "llama3-8b").get("observedGeneration") == 3,
            60,
            what="the third leader to reconcile a change",
        )
        st = status(cluster, namespace, "llama3-8b")
        # The autoscaler's target came through both failovers (a fresh leader starts from status, not from min).
        assert (st.get("replicas") or {}).get("desired") == desired, st

        writes = operator_writes(cluster.run_dir / "audit.log", since)
        order = terms(writes)
        report = {
            "graceful_handover_s": round(graceful_s, 1),
            "kill_handover_s": round(kill_s, 1),
            "max_writers_in_2s": max_writers(writes),
            "terms": order,
        }
        # One writer at a time: each writer's writes form one uninterrupted run, one run per leadership term.
        assert len(order) == 3 and len(set(order)) == 3, (report, writes)
        assert [w.split("/")[0] for w in order[:2]] == [pod_of(first), leader], (report, writes)
        # Each term's writes all come before the next leader first wrote the lease (acquired it): a graceful
        # stop lets in-flight handlers finish, then releases, so the old leader's last write may come within
        # a retry period of the new leader's first (max_writers_in_2s is reported, not a bound).
        lease_writes = operator_writes(cluster.run_dir / "audit.log", since, leases=True)
        for before, after in zip(order, order[1:], strict=False):
            last = max(t for t, w, _ in writes if w == before)
            acquired = min((t for t, w, _ in lease_writes if w == after), default=None)
            assert acquired is not None, ("no lease write by the next leader in the audit log", after)
            assert last < acquired, ("a write after the next leader took the lease", before, after, report)
        # A release hands over in retries; a kill within the lease duration after the standby last saw the
        # lease change (it looks every retry period, so at most one period before the kill) and one more retry.
        # The bound adds the renew deadline as slack for kubectl polls on a busy 2-core machine (measured: 7 s).
        print("leader-election", json.dumps(report))
        assert graceful_s < LEASE["leaseDuration"], report
        assert kill_s < LEASE["leaseDuration"] + 2 * LEASE["retryPeriod"] + LEASE["renewDeadline"], report
        # RBAC: nothing denied, except writes into namespaces being deleted (other tests' CRs, seen by these
        # cluster-wide operators) and lease reads racing the RoleBinding at install (retried; leading at all
        # proves the lease verbs are granted).
        denied = [
            line
            for f in sorted(logs.glob("llmfleet-system_llmfleet-*.log"))
            for line in f.read_text().splitlines()
            if ("Forbidden" in line or " 403" in line)
            and "NamespaceTerminating" not in line
            and "being terminated" not in line
            and "leases" not in line
            and line.strip() != "Reason: Forbidden"
        ]
        assert not denied, f"RBAC denied the operator something: {denied[:5]}"

        # RBAC least privilege: prune children (the cache and the policies go), then compare what the chart
        # grants with what the operators and the gateways used in this run, from the audit log.
        patch_cr(cluster, namespace, PRUNE_PATCH)
        eventually(
            lambda: (
                cluster.get("secret", "llama3-8b-cache-auth", namespace) is None
                and not cluster.names("networkpolicy", namespace, "llmfleet.io/deployment=llama3-8b")
            ),
            60,
            what="the cache and the NetworkPolicies pruned",
        )
        compare_rbac(cluster, namespace, since)
    finally:
        subprocess.run(
            [str(BIN / "helm"), "uninstall", "llmfleet", "-n", "llmfleet-system", "--wait"],
            env=cluster.env,
            capture_output=True,
            timeout=120,
        )
        runner.terminate()
        runner.wait(timeout=60)
        operator.start()
