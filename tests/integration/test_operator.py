"""The operator against a real API server (with controller-manager, scheduler and kwok GPU nodes)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import EXAMPLES, ROOT
from tests.integration.conftest import Cluster, eventually

pytestmark = pytest.mark.integration

EXAMPLE_8B = ROOT / "manifests" / "examples" / "llama3-8b.yaml"
CHILDREN = "app.kubernetes.io/managed-by=llmfleet"


def example(namespace: str, path=EXAMPLE_8B, name: str | None = None) -> dict:
    obj = yaml.safe_load(path.read_text())
    obj["metadata"]["namespace"] = namespace
    if name:
        obj["metadata"]["name"] = name
    return obj


def rendered(obj: dict) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "llmfleet", "render", "-f", "-"],
        input=yaml.safe_dump(obj),
        capture_output=True,
        text=True,
        check=True,
    )
    return list(yaml.safe_load_all(out.stdout))


def status(cluster: Cluster, ns: str, name: str) -> dict:
    obj = cluster.get("llmd", name, ns)
    return (obj or {}).get("status") or {}


def condition(st: dict, type_: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def wait_ready(cluster: Cluster, ns: str, name: str, timeout: float = 90) -> dict:
    def ready():
        st = status(cluster, ns, name)
        return (
            st
            if condition(st, "Ready").get("status") == "True"
            and condition(st, "Progressing").get("status") == "False"
            else None
        )

    return eventually(ready, timeout, what=f"{ns}/{name} Ready")  # type: ignore[return-value]


def test_apply_example_creates_every_rendered_child_and_becomes_ready(cluster, operator, namespace) -> None:
    obj = example(namespace)
    assert cluster.apply(obj).returncode == 0
    expected = {(m["kind"], m["metadata"]["name"]) for m in rendered(obj)}
    kinds = "deployments,services,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,networkpolicies"

    def children():
        out = json.loads(cluster.kubectl("get", kinds, "-n", namespace, "-l", CHILDREN, "-o", "json").stdout)
        got = {(i["kind"], i["metadata"]["name"]) for i in out["items"]}
        return got if got == expected else None

    eventually(children, 60, what="children")
    engine = cluster.get("deployment", "llama3-8b-engine-ondemand", namespace)
    want = next(m for m in rendered(obj) if m["metadata"]["name"] == "llama3-8b-engine-ondemand")
    assert (
        engine["spec"]["template"]["spec"]["containers"][0]["args"]
        == want["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert engine["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"
    st = wait_ready(cluster, namespace, "llama3-8b")
    assert st["replicas"]["onDemand"]["ready"] == 1 and st["replicas"]["desired"] == 1
    assert st["tensorParallelSize"] == 1 and st["ready"] == "1/1"
    assert st["observedGeneration"] == 1
    table = cluster.kubectl("get", "llmd", "-n", namespace).stdout
    assert "llama3-8b" in table and "1/1" in table and "6.88" in table
    described = cluster.kubectl("describe", "llmd", "llama3-8b", "-n", namespace).stdout
    assert "AllReplicasReady" in described and "Reconciled" in described
    # The managed cache's credentials: generated into their Secret, owned by the CR, and in no log line.
    secret = cluster.get("secret", "llama3-8b-cache-auth", namespace)
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) >= 32
    assert password not in operator.output() and secret["data"]["password"] not in operator.output()


def test_spec_change_rolls_out_and_scale_splits_spot_first(cluster, operator, namespace) -> None:
    obj = example(namespace)
    cluster.apply(obj)
    wait_ready(cluster, namespace, "llama3-8b")
    obj["spec"]["model"]["maxModelLen"] = 4096
    obj["spec"]["replicas"] = 4
    assert cluster.apply(obj).returncode == 0

    def rolled():
        d = cluster.get("deployment", "llama3-8b-engine-ondemand", namespace)
        s = cluster.get("deployment", "llama3-8b-engine-spot", namespace)
        return (
            "--max-model-len=4096" in d["spec"]["template"]["spec"]["containers"][0]["args"]
            and s["spec"]["replicas"] == 3
        )

    eventually(rolled, 60, what="rollout")
    st = wait_ready(cluster, namespace, "llama3-8b")
    assert st["replicas"]["spot"] == {"desired": 3, "ready": 3, "pending": 0}
    assert st["observedGeneration"] == 2
    assert st["spot"] == "3/3"


def test_deleted_or_edited_child_is_restored(cluster, operator, namespace) -> None:
    cluster.apply(example(namespace))
    wait_ready(cluster, namespace, "llama3-8b")
    uid = cluster.get("service", "llama3-8b-engine", namespace)["metadata"]["uid"]
    cluster.kubectl("delete", "service", "llama3-8b-engine", "-n", namespace)
    eventually(
        lambda: (
            (cluster.get("service", "llama3-8b-engine", namespace) or {}).get("metadata", {}).get("uid")
            not in (None, uid)
        ),
        60,
        what="service restored",
    )
    cluster.kubectl("scale", "deployment", "llama3-8b-engine-ondemand", "-n", namespace, "--replicas=5")
    eventually(
        lambda: cluster.get("deployment", "llama3-8b-engine-ondemand", namespace)["spec"]["replicas"] == 1,
        60,
        what="replicas restored",
    )
    cluster.kubectl(
        "patch",
        "configmap",
        "llama3-8b-gateway",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"data":{"gateway.json":"{}"}}',
    )
    eventually(
        lambda: cluster.get("configmap", "llama3-8b-gateway", namespace)["data"]["gateway.json"] != "{}",
        60,
        what="config restored",
    )


def test_deleting_the_cr_garbage_collects_every_child(cluster, operator, namespace) -> None:
    cluster.apply(example(namespace))
    wait_ready(cluster, namespace, "llama3-8b")
    cluster.kubectl("delete", "llmd", "llama3-8b", "-n", namespace)
    kinds = "deployments,services,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,networkpolicies,replicasets"
    eventually(
        lambda: (
            cluster.kubectl(
                "get", kinds, "-n", namespace, "-l", "llmfleet.io/deployment=llama3-8b", "-o", "name"
            ).stdout.strip()
            == ""
        ),
        90,
        what="garbage collection",
    )


def test_invalid_cr_is_rejected_by_the_api_server_with_the_cel_message(cluster, namespace) -> None:
    obj = example(namespace)
    obj["spec"]["pools"]["onDemand"] = {"minReplicas": 5, "maxReplicas": 2}
    obj["spec"]["engine"]["extraArgs"] = ["--port=9000"]
    result = cluster.apply(obj)
    assert result.returncode != 0
    assert "spec.pools.onDemand.minReplicas: Invalid value" in result.stderr
    assert "minReplicas must be <= maxReplicas" in result.stderr
    assert "none of the flags the operator owns" in result.stderr


def test_invalid_schedules_are_rejected_by_the_api_server(cluster, namespace) -> None:
    obj = example(namespace)
    night = {"name": "night", "start": "22:00", "end": "06:00", "minReplicas": 3, "maxReplicas": 1}
    obj["spec"]["autoscaling"]["schedules"] = [night]
    result = cluster.apply(obj)
    assert result.returncode != 0
    assert "spec.autoscaling.schedules[0].minReplicas: Invalid value" in result.stderr
    assert "minReplicas must be <= maxReplicas" in result.stderr
    obj["spec"]["autoscaling"]["schedules"] = [{**night, "minReplicas": 0}, {**night, "maxReplicas": 2}]
    result = cluster.apply(obj)
    assert result.returncode != 0 and "Duplicate value" in result.stderr, result.stderr
    obj["spec"]["autoscaling"]["schedules"] = [{k: v for k, v in night.items() if not k.endswith("Replicas")}]
    result = cluster.apply(obj)
    assert result.returncode != 0 and "sets minReplicas, maxReplicas or both" in result.stderr
    obj["spec"]["autoscaling"]["schedules"] = [{**night, "minReplicas": 0, "start": "7:00"}]
    result = cluster.apply(obj)
    assert result.returncode != 0 and "spec.autoscaling.schedules[0].start" in result.stderr
    obj["spec"]["autoscaling"]["schedules"] = [{**night, "minReplicas": 0}]
    assert cluster.apply(obj).returncode == 0


def test_spec_the_operator_cannot_size_is_degraded_and_nothing_is_deleted(
    cluster, operator, namespace
) -> None:
    obj = example(namespace)
    cluster.apply(obj)
    wait_ready(cluster, namespace, "llama3-8b")
    before = cluster.names("deployments", namespace, CHILDREN)
    obj["spec"]["model"]["name"] = "meta-llama/Llama-3.1-405B-Instruct"  # passes the CRD, cannot fit one node
    cluster.apply(obj)

    def degraded():
        c = condition(status(cluster, namespace, "llama3-8b"), "Degraded")
        return c if c.get("status") == "True" else None

    c = eventually(degraded, 60, what="Degraded")
    assert c["reason"] == "SizingFailed"
    assert "spec.engine.tensorParallelSize" in c["message"] and "fp8" in c["message"]
    assert cluster.names("deployments", namespace, CHILDREN) == before
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=InvalidSpec", "-o", "name"
    ).stdout
    assert events.strip()


def test_idle_reconciles_make_zero_writes(cluster, operator, namespace) -> None:
    cluster.apply(example(namespace))
    wait_ready(cluster, namespace, "llama3-8b")
    time.sleep(2)  # let the last status write land
    since = time.time()
    # Poke the operator with child events that change nothing it owns: it must reconcile and write nothing.
    for i in range(3):
        cluster.kubectl(
            "annotate", "deployment", "llama3-8b-gateway", "-n", namespace, f"poke=n{i}", "--overwrite"
        )
        time.sleep(1)
    time.sleep(3)
    writes = [
        w
        for w in cluster.audit_writes(since, ("llmfleet-operator", "kopf"))
        if w.get("objectRef", {}).get("namespace") == namespace
    ]
    assert writes == [], [(w["verb"], w["objectRef"]) for w in writes]


def test_operator_restart_converges_without_duplicates(cluster, operator, namespace) -> None:
    obj = example(namespace)
    cluster.apply(obj)
    wait_ready(cluster, namespace, "llama3-8b")
    operator.stop()
    try:
        # While it is down: a spec change, a deleted child and a new CR.
        obj["spec"]["gateway"]["replicas"] = 3
        cluster.apply(obj)
        cluster.kubectl("delete", "deployment", "llama3-8b-engine-spot", "-n", namespace)
        second = example(namespace, EXAMPLES[0], name="second")
        cluster.apply(second)
    finally:
        operator.start()
    eventually(
        lambda: cluster.get("deployment", "llama3-8b-engine-spot", namespace) is not None, 60, what="restored"
    )
    eventually(
        lambda: cluster.get("deployment", "llama3-8b-gateway", namespace)["spec"]["replicas"] == 3,
        60,
        what="gateway scaled",
    )
    wait_ready(cluster, namespace, "second")
    names = cluster.names("deployments", namespace, CHILDREN)
    assert names == sorted(
        [f"llama3-8b-{s}" for s in ("cache", "engine-ondemand", "engine-spot", "gateway")]
        + [f"second-{s}" for s in ("engine-ondemand", "engine-spot", "gateway")]
    )


def test_kube_client_reuses_its_connections(cluster, namespace) -> None:
    """Every write on one pooled TLS connection: an unread response would cost a handshake per request."""
    import urllib3.connectionpool

    from llmfleet.kube.client import KubeClient, load_config

    kube = KubeClient(load_config(str(cluster.kubeconfig)))
    made = []
    original = urllib3.connectionpool.HTTPSConnectionPool._new_conn

    def counting(pool):  # type: ignore[no-untyped-def]
        made.append(1)
        return original(pool)

    urllib3.connectionpool.HTTPSConnectionPool._new_conn = counting  # type: ignore[method-assign]
    try:
        for i in range(20):
            kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "reuse", "namespace": namespace},
                    "data": {"i": str(i)},
                }
            )
            assert kube.get("v1", "ConfigMap", namespace, "reuse")["data"]["i"] == str(i)
        assert kube.list("v1", "ConfigMap", namespace, "")
    finally:
        urllib3.connectionpool.HTTPSConnectionPool._new_conn = original  # type: ignore[method-assign]
    assert len(made) <= 1, f"{len(made)} new connections for 41 requests"


def test_a_reclaim_notice_drains_the_spot_pod_and_replaces_it_elsewhere(cluster, operator, namespace) -> None:
    """A spot node gets the AWS termination handler's taint: its engine pod is deleted at once (terminating,
    so its endpoint stops being ready), an Event and status say so, and the replacement runs on another node
    while the pool keeps its replica count."""
    obj = example(namespace)
    obj["spec"]["replicas"] = 3
    cluster.apply(obj)
    st = wait_ready(cluster, namespace, "llama3-8b")

    def spot_pods() -> list[dict]:
        out = cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", "llmfleet.io/pool=spot", "-o", "json"
        ).stdout
        return json.loads(out)["items"]

    victim = next(p for p in spot_pods() if p["spec"].get("nodeName"))
    node = victim["spec"]["nodeName"]
    replicas = st["replicas"]["spot"]["desired"]
    taint = "aws-node-termination-handler/spot-itn"
    cluster.kubectl("taint", "node", node, f"{taint}=true:NoSchedule")
    try:

        def drained():
            p = cluster.get("pod", victim["metadata"]["name"], namespace)
            return p is None or bool(p["metadata"].get("deletionTimestamp"))

        eventually(drained, 30, 0.1, what="the pod on the noticed node to be draining")
        st = eventually(
            lambda: (s := status(cluster, namespace, "llama3-8b"))["replicas"]["spot"].get("reclaims") and s,
            30,
            what="status to record the reclaim",
        )
        last = st["replicas"]["spot"]["lastReclaim"]
        assert (last["node"], last["signal"], last["pods"]) == (
            node,
            f"taint {taint}",
            [victim["metadata"]["name"]],
        )
        events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        assert any(e["reason"] == "ReclaimNotice" and node in e["message"] for e in events)

        def replaced():
            live = [p for p in spot_pods() if not p["metadata"].get("deletionTimestamp")]
            on_other = [p for p in live if p["spec"].get("nodeName") not in (None, node)]
            return (
                len(on_other) == replicas
                and condition(status(cluster, namespace, "llama3-8b"), "Reclaim").get("reason") == "Replaced"
            )

        eventually(
            replaced, 60, what="the replacement to run off the noticed node and the condition to clear"
        )
        spot = cluster.get("deployment", "llama3-8b-engine-spot", namespace)
        assert spot["spec"]["replicas"] == replicas  # replaced, not scaled down
        assert status(cluster, namespace, "llama3-8b")["replicas"]["spot"]["reclaims"] == 1
        # The node event itself acted (not the next periodic tick, which would also find the notice).
        failed = [line for line in operator.output().splitlines() if "'reclaim-notices' failed" in line]
        assert not failed, failed
    finally:
        cluster.kubectl("taint", "node", node, f"{taint}-", check=False)


def test_a_route_rule_naming_no_member_is_rejected_by_the_api_server(cluster, namespace) -> None:
    obj = example(namespace)
    obj["spec"]["routing"] = {"members": [{"deployment": "small"}], "rules": [{"to": "smal"}]}
    result = cluster.apply(obj)
    assert result.returncode != 0
    assert "spec.routing.rules: Invalid value" in result.stderr, result.stderr
    assert "each rule's `to` is self, external, auto or a member's deployment name" in result.stderr
    obj["spec"]["routing"]["rules"] = [{"match": {"keys": ["batch"]}, "to": "small"}]
    assert cluster.apply(obj).returncode == 0


def test_gateway_autoscaling_renders_an_hpa_that_owns_the_replica_count(cluster, operator, namespace) -> None:
    """spec.gateway.autoscaling: an HPA on CPU for the gateway; the operator stops applying the gateway's
    replica count (the HPA's to set), and both come back when autoscaling is turned off."""
    obj = example(namespace)
    obj["spec"]["gateway"] = {"autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilization": 60}}
    assert cluster.apply(obj).returncode == 0
    hpa = eventually(
        lambda: (
            cluster.get("hpa", "llama3-8b-gateway", namespace)
            if cluster.names("hpa", namespace, CHILDREN)
            else None
        ),
        60,
        what="the gateway HPA",
    )
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llama3-8b-gateway",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60

    def replicas_owned_by_llmfleet() -> bool:
        args = (
            "get",
            "deployment",
            "llama3-8b-gateway",
            "-n",
            namespace,
            "-o",
            "json",
            "--show-managed-fields",
        )
        gw = json.loads(cluster.kubectl(*args).stdout)
        fields = [m for m in gw["metadata"]["managedFields"] if m.get("manager") == "llmfleet"]
        assert fields, gw["metadata"]["managedFields"]  # the operator applied it
        return any("f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {}) for m in fields)

    assert not replicas_owned_by_llmfleet()
    # The HPA holds its floor: the controller-manager's HPA controller scales the Deployment to minReplicas.
    eventually(
        lambda: cluster.get("deployment", "llama3-8b-gateway", namespace)["spec"]["replicas"] == 2,
        60,
        what="the HPA's minReplicas on the gateway",
    )
    obj["spec"]["gateway"] = {"replicas": 3}
    assert cluster.apply(obj).returncode == 0
    eventually(lambda: not cluster.names("hpa", namespace, CHILDREN), 60, what="the HPA pruned")
    eventually(
        lambda: cluster.get("deployment", "llama3-8b-gateway", namespace)["spec"]["replicas"] == 3,
        60,
        what="the fixed replica count applied again",
    )
    assert replicas_owned_by_llmfleet()
