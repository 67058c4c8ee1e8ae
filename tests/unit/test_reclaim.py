"""Reclaim notices, pure: which node signals count, which engine pods are drained, and what the plan and
status say about it (FakeKube, injected clock)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfleet.api.conditions import EventReason
from llmfleet.fleet.reclaim import DEFAULT_CONDITIONS, DEFAULT_TAINTS, NODE_DELETED, drains, notice
from llmfleet.kube.fake import FakeKube
from llmfleet.reconcile.apply import execute
from llmfleet.reconcile.observe import observe
from llmfleet.reconcile.plan import plan

RECLAIM_NOTICE = EventReason.RECLAIM_NOTICE
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def node(taints: list[str] = (), conditions: dict[str, str] | None = None, deleting: bool = False) -> dict:
    meta: dict = {"name": "n1"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"taints": [{"key": k, "effect": "NoSchedule"} for k in taints]},
        "status": {"conditions": [{"type": t, "status": s} for t, s in (conditions or {}).items()]},
    }


@pytest.mark.parametrize("key", DEFAULT_TAINTS)
def test_every_default_taint_is_a_notice(key: str) -> None:
    assert notice(node([key])) == f"taint {key}"


def test_conditions_count_only_when_true_and_deletion_counts() -> None:
    assert notice(node(conditions={"VMEventScheduled": "True"})) == "condition VMEventScheduled"
    assert notice(node(conditions={"VMEventScheduled": "False", "Ready": "True"})) is None
    assert notice(node(deleting=True)) == NODE_DELETED
    assert notice(node(["custom/going"]), taints=("custom/going",), conditions=()) == "taint custom/going"
    assert DEFAULT_CONDITIONS == ("VMEventScheduled",)


@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda k: k not in DEFAULT_TAINTS), max_size=5))
def test_other_taints_are_not_notices(keys: list[str]) -> None:
    # the spot pool's own taints (e.g. nvidia.com/gpu, capacity-type) must never drain anything
    assert notice(node(keys)) is None


def pod(name: str, node_name: str, pool: str = "spot", deleting: bool = False) -> dict:
    meta = {
        "name": name,
        "namespace": "ml",
        "uid": f"uid-{name}",
        "labels": {
            "llmfleet.io/deployment": "demo",
            "app.kubernetes.io/component": "engine",
            "llmfleet.io/pool": pool,
        },
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node_name},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_drains_pick_live_pods_on_noticed_nodes_only() -> None:
    pods = (pod("b", "n1"), pod("a", "n1"), pod("c", "n2"), pod("d", "n1", deleting=True))
    got = drains(pods, {"n1": "taint x"})
    assert [d.pod["metadata"]["name"] for d in got] == ["a", "b"]
    assert {(d.node, d.signal, d.pool) for d in got} == {("n1", "taint x", "spot")}
    assert drains(pods, {}) == []


def spot_cr(kube: FakeKube) -> dict:
    obj = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "demo", "namespace": "ml", "uid": "1234", "generation": 1},
        "spec": {
            "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
            "replicas": 2,
            "pools": {"onDemand": {"minReplicas": 0}, "spot": {"enabled": True, "maxReplicas": 4}},
        },
    }
    kube.add(obj)
    return obj


def reconcile(kube: FakeKube, notices: dict[str, str], now: datetime):
    raw = kube.get("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")
    snap = dataclasses.replace(observe(kube, "ml", "demo"), notices=notices)
    p = plan(raw, snap, now)
    execute(kube, raw, p)
    return p, kube.get("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")["status"]


def test_a_notice_drains_the_pods_records_it_and_the_condition_clears_once_replaced() -> None:
    kube = FakeKube()
    spot_cr(kube)
    reconcile(kube, {}, T0)
    for p in (pod("s1", "n1"), pod("s2", "n2")):
        kube.add(p)
    spot = kube.get("apps/v1", "Deployment", "ml", "demo-engine-spot")
    replicas_before = spot["spec"]["replicas"]

    p, status = reconcile(
        kube, {"n1": "taint aws-node-termination-handler/spot-itn"}, T0 + timedelta(seconds=5)
    )
    assert [(r.kind, r.name) for r, _ in p.to_delete] == [("Pod", "s1")]
    assert kube.get("v1", "Pod", "ml", "s1") is None and kube.get("v1", "Pod", "ml", "s2") is not None
    ((type_, reason, message),) = p.events
    assert (type_, reason) == ("Warning", RECLAIM_NOTICE) and "n1" in message and "s1" in message
    assert kube.events[-1][1] == RECLAIM_NOTICE
    assert status["replicas"]["spot"]["reclaims"] == 1
    assert status["replicas"]["spot"]["lastReclaim"] == {
        "node": "n1",
        "signal": "taint aws-node-termination-handler/spot-itn",
        "pods": ["s1"],
        "time": "2026-01-01T00:00:05Z",
    }
    cond = next(c for c in status["conditions"] if c["type"] == "Reclaim")
    assert (cond["status"], cond["reason"]) == ("True", "ReplacementPending")
    # lost capacity is replaced, not scaled away: the pool keeps its replica count
    assert kube.get("apps/v1", "Deployment", "ml", "demo-engine-spot")["spec"]["replicas"] == replicas_before

    # The replacement is up (on another node): the condition clears, the count stays, even with the reclaimed
    # pod still terminating (its node gone: no kubelet confirms the deletion until pod GC).
    kube.add(pod("s3", "n3"))
    stuck = pod("s1", "n1")
    stuck["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:05Z"
    kube.add(stuck)
    for obj in kube.objects.values():
        if obj["kind"] == "Deployment":
            n = obj["spec"]["replicas"]
            obj["status"] = {
                "observedGeneration": 1,
                "replicas": n,
                "updatedReplicas": n,
                "readyReplicas": n,
                "availableReplicas": n,
            }
            obj["metadata"]["generation"] = 1
    p, status = reconcile(
        kube, {"n1": "taint aws-node-termination-handler/spot-itn"}, T0 + timedelta(seconds=60)
    )
    assert p.to_delete == [] and p.events == []
    cond = next(c for c in status["conditions"] if c["type"] == "Reclaim")
    assert (cond["status"], cond["reason"]) == ("False", "Replaced")
    assert status["replicas"]["spot"]["reclaims"] == 1
    # and an unchanged world writes nothing more
    writes = kube.writes
    p, _ = reconcile(kube, {"n1": "taint aws-node-termination-handler/spot-itn"}, T0 + timedelta(seconds=90))
    assert kube.writes == writes and p.status is None
    # A later scale-up (replicas not ready yet) is not a reclaim: the condition stays Replaced.
    kube.objects[next(k for k in kube.objects if k[1] == "LLMDeployment")]["spec"]["replicas"] = 4
    _, status = reconcile(kube, {}, T0 + timedelta(seconds=120))
    assert status["ready"] != "4/4"
    cond = next(c for c in status["conditions"] if c["type"] == "Reclaim")
    assert (cond["status"], cond["reason"]) == ("False", "Replaced")


def test_no_notice_no_reclaim_condition() -> None:
    kube = FakeKube()
    spot_cr(kube)
    kube.add(pod("s1", "n1"))
    _, status = reconcile(kube, {}, T0)
    assert not any(c["type"] == "Reclaim" for c in status["conditions"])
    assert "reclaims" not in status["replicas"]["spot"]


def test_status_writes_every_field_the_schema_defaults() -> None:
    """The API server fills schema defaults into status; a default the computed status leaves out would make
    live and computed status differ forever (a status patch on every reconcile). Checked on statuses before
    and after a reclaim."""
    from llmfleet.api.crd import crd
    from tests.unit.test_crd import walk

    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    defaulted = [path for path, node in walk(schema, "") if "default" in node and "[]" not in path]
    kube = FakeKube()
    spot_cr(kube)
    _, before = reconcile(kube, {}, T0)
    kube.add(pod("s1", "n1"))
    _, after = reconcile(kube, {"n1": "condition VMEventScheduled"}, T0 + timedelta(seconds=1))
    for status in (before, after):
        for path in defaulted:
            *parents, leaf = path.strip(".").split(".")
            node = status
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):  # the parent is written: so must the defaulted field be
                assert leaf in node, f"status{path} has a schema default but the operator leaves it out"
