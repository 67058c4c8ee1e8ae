"""Reconcile decisions, pure: plan + status against an in-memory cluster (FakeKube), with an injected clock."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from llmfleet.kube.fake import FakeKube
from llmfleet.kube.port import KubeError
from llmfleet.reconcile.apply import execute
from llmfleet.reconcile.observe import observe
from llmfleet.reconcile.plan import is_subset, plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def kube(minimal_obj: dict) -> FakeKube:
    k = FakeKube()
    minimal_obj["metadata"]["generation"] = 1
    k.add(minimal_obj)
    return k


def cr(kube: FakeKube) -> dict:
    return kube.get("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")


def reconcile(kube: FakeKube, now: datetime = T0):
    raw = cr(kube)
    p = plan(raw, observe(kube, "ml", "demo"), now)
    execute(kube, raw, p)
    return p


def mark_ready(kube: FakeKube) -> None:
    for key, obj in kube.objects.items():
        if key[1] == "Deployment":
            n = obj["spec"]["replicas"]
            obj["status"] = {
                "observedGeneration": 1,
                "replicas": n,
                "updatedReplicas": n,
                "readyReplicas": n,
                "availableReplicas": n,
            }
            obj["metadata"]["generation"] = 1


def test_first_reconcile_creates_every_child_and_reports_progress(kube: FakeKube) -> None:
    p = reconcile(kube)
    kinds = sorted(k[1] for k in kube.objects if k[1] != "LLMDeployment")
    assert kinds.count("Deployment") == 4 and "PodDisruptionBudget" in kinds
    status = cr(kube)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ReplicasNotReady"
    assert status["tensorParallelSize"] == 1 and status["ready"] == "0/1"
    assert any("missing" in d for d in p.details)
    assert kube.events and kube.events[-1][1] == "Reconciled"


def test_second_reconcile_of_unchanged_world_makes_zero_writes(kube: FakeKube) -> None:
    reconcile(kube)
    mark_ready(kube)
    reconcile(kube, T0 + timedelta(seconds=5))
    writes = kube.writes
    p = reconcile(kube, T0 + timedelta(minutes=5))
    assert kube.writes == writes
    assert p.to_apply == [] and p.to_delete == [] and p.status is None and p.details == []


def test_ready_status_counts_pools_and_cost(kube: FakeKube) -> None:
    reconcile(kube)
    mark_ready(kube)
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p1",
                "namespace": "ml",
                "labels": {
                    "llmfleet.io/deployment": "demo",
                    "app.kubernetes.io/component": "engine",
                    "llmfleet.io/pool": "on-demand",
                },
            },
            "status": {"phase": "Running"},
        }
    )
    reconcile(kube, T0 + timedelta(seconds=10))
    status = cr(kube)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "AllReplicasReady")
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:10Z"
    assert status["replicas"]["onDemand"] == {"desired": 1, "ready": 1, "pending": 0}
    assert status["costPerHour"] == 6.88


def test_drifted_child_is_reapplied_and_deleted_child_recreated(kube: FakeKube) -> None:
    reconcile(kube)
    dep = kube.objects[("apps/v1", "Deployment", "ml", "demo-engine-ondemand")]
    dep["spec"]["replicas"] = 7
    del kube.objects[("v1", "Service", "ml", "demo-engine")]
    p = reconcile(kube)
    assert {m["metadata"]["name"] for m in p.to_apply} == {"demo-engine-ondemand", "demo-engine"}
    assert kube.objects[("apps/v1", "Deployment", "ml", "demo-engine-ondemand")]["spec"]["replicas"] == 1


def test_spec_change_reapplies_only_what_changed(kube: FakeKube) -> None:
    reconcile(kube)
    kube.objects[("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")]["spec"]["model"]["maxModelLen"] = (
        4096
    )
    p = reconcile(kube)
    assert sorted(m["metadata"]["name"] for m in p.to_apply) == ["demo-engine-ondemand", "demo-engine-spot"]
    args = kube.objects[("apps/v1", "Deployment", "ml", "demo-engine-ondemand")]["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "--max-model-len=4096" in args


def test_children_no_longer_wanted_are_pruned_but_foreign_objects_are_not(kube: FakeKube) -> None:
    reconcile(kube)
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "users-own",
            "namespace": "ml",
            "labels": {"app.kubernetes.io/managed-by": "llmfleet", "llmfleet.io/deployment": "demo"},
        },
    }
    kube.add(foreign)
    kube.objects[("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")]["spec"]["cache"] = {
        "redis": {"mode": "external", "url": "redis://x:6379"}
    }
    p = reconcile(kube)
    assert sorted((r.kind, r.name) for r, _ in p.to_delete) == [
        ("Deployment", "demo-cache"),
        ("NetworkPolicy", "demo-cache"),  # the managed cache's isolation goes with it
        ("Service", "demo-cache"),
    ]
    assert ("v1", "ConfigMap", "ml", "users-own") in kube.objects  # not owned by the CR: never deleted


def test_invalid_spec_sets_degraded_naming_the_field_and_deletes_nothing(kube: FakeKube) -> None:
    reconcile(kube)
    before = {k for k in kube.objects}
    kube.objects[("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")]["spec"]["accelerator"] = {
        "type": "B300"
    }
    p = reconcile(kube)
    assert p.error is not None and p.error.path == "spec.accelerator.type"
    assert {k for k in kube.objects} == before
    degraded = next(c for c in cr(kube)["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "SizingFailed"
    assert "unknown GPU type 'B300'" in degraded["message"]
    assert kube.events[-1][:2] == ("Warning", "InvalidSpec")


def test_schema_level_invalid_spec_names_the_path(kube: FakeKube) -> None:
    kube.objects[("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")]["spec"]["pools"] = {
        "onDemand": {"minReplicas": 3, "maxReplicas": 1}
    }
    p = reconcile(kube)
    assert p.error is not None and p.error.path == "spec.pools.onDemand"
    assert len(kube.objects) == 1  # nothing created


def test_api_failure_midway_leaves_no_half_written_status(kube: FakeKube) -> None:
    kube.fail_next = KubeError(409, "conflict")
    with pytest.raises(KubeError):
        reconcile(kube)
    assert "status" not in cr(kube)
    assert reconcile(kube).to_apply  # the next try converges


def test_scale_subresource_replicas_are_split_spot_first(kube: FakeKube) -> None:
    kube.objects[("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")]["spec"]["replicas"] = 5
    reconcile(kube)
    od = kube.objects[("apps/v1", "Deployment", "ml", "demo-engine-ondemand")]["spec"]["replicas"]
    spot = kube.objects[("apps/v1", "Deployment", "ml", "demo-engine-spot")]["spec"]["replicas"]
    assert (od, spot) == (1, 4)


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": []}, {}, True),
        ({"a": [1]}, {}, False),
        ({"a": {"b": "x"}}, {"a": {"b": "y"}}, False),
        ({"n": 1}, {"n": 1.0}, True),
        ({"f": False}, {"f": 0}, False),
        ([{"a": 1}], [{"a": 1, "z": 0}], True),
    ],
)
def test_is_subset(desired, live, expected) -> None:
    assert is_subset(copy.deepcopy(desired), live) is expected
