"""The KubePort contract: what the operator relies on from the API server, as cases any KubePort must pass.

``tests/unit/test_kube_contract.py`` runs them against ``FakeKube``; ``tests/integration/test_kube_contract.py``
against ``KubeClient`` on the real kube-apiserver. A case the fake fails is a unit test that would pass where
the cluster behaves otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from llmfleet.kube.port import KubeError, KubePort, NotFound, Ref

CR = ("llmfleet.io/v1alpha1", "LLMDeployment")
Case = Callable[[KubePort, str], None]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def configmap(
    ns: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def llmd(ns: str, name: str, max_model_len: int = 8192) -> dict[str, Any]:
    return {
        "apiVersion": CR[0],
        "kind": CR[1],
        "metadata": {"name": name, "namespace": ns},
        "spec": {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "maxModelLen": max_model_len}},
    }


def get(port: KubePort, ns: str, name: str, kind: tuple[str, str] = ("v1", "ConfigMap")) -> dict[str, Any]:
    obj = port.get(kind[0], kind[1], ns, name)
    assert obj is not None, f"{kind[1]} {ns}/{name} is missing"
    return obj


@case
def apply_creates_and_a_repeat_changes_nothing(port: KubePort, ns: str) -> None:
    port.apply(configmap(ns, "a", {"k": "v"}, {"app": "x"}))
    first = get(port, ns, "a")
    assert first["data"] == {"k": "v"} and first["metadata"]["labels"] == {"app": "x"}
    assert first["metadata"]["uid"] and first["metadata"]["resourceVersion"]
    port.apply(configmap(ns, "a", {"k": "v"}, {"app": "x"}))
    again = get(port, ns, "a")
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again["metadata"]["uid"] == first["metadata"]["uid"]


@case
def apply_removes_the_fields_we_stopped_setting(port: KubePort, ns: str) -> None:
    port.apply(configmap(ns, "a", {"k": "v", "old": "1"}, {"app": "x", "gone": "soon"}))
    port.apply(configmap(ns, "a", {"k": "v2"}, {"app": "x"}))
    obj = get(port, ns, "a")
    assert obj["data"] == {"k": "v2"}
    assert obj["metadata"]["labels"] == {"app": "x"}


@case
def apply_keeps_fields_another_manager_owns(port: KubePort, ns: str) -> None:
    port.apply(configmap(ns, "a", {"k": "v"}, {"app": "x"}))
    port.apply(configmap(ns, "a", {"theirs": "t"}, {"team": "ml"}), field_manager="kubectl")
    port.apply(configmap(ns, "a", {"k": "v"}, {"app": "x"}))
    obj = get(port, ns, "a")
    assert obj["data"] == {"k": "v", "theirs": "t"}
    assert obj["metadata"]["labels"] == {"app": "x", "team": "ml"}
    port.apply(configmap(ns, "a", {}, {"app": "x"}))  # we stop setting k: theirs stays
    assert get(port, ns, "a").get("data") == {"theirs": "t"}


@case
def apply_takes_over_a_conflicting_field(port: KubePort, ns: str) -> None:
    port.apply(configmap(ns, "a", {"k": "theirs"}), field_manager="kubectl")
    port.apply(configmap(ns, "a", {"k": "ours"}))
    assert get(port, ns, "a")["data"] == {"k": "ours"}
    port.apply(configmap(ns, "a", {"other": "1"}))  # forced: k is ours now, so dropping it removes it
    assert get(port, ns, "a")["data"] == {"other": "1"}


@case
def generation_moves_with_the_spec_not_with_status(port: KubePort, ns: str) -> None:
    port.apply(llmd(ns, "m"))
    gen = get(port, ns, "m", CR)["metadata"]["generation"]
    port.patch_status(*CR, ns, "m", {"ready": "0/1"})
    assert get(port, ns, "m", CR)["metadata"]["generation"] == gen
    port.apply(llmd(ns, "m"))
    assert get(port, ns, "m", CR)["metadata"]["generation"] == gen
    port.apply(llmd(ns, "m", max_model_len=4096))
    assert get(port, ns, "m", CR)["metadata"]["generation"] == gen + 1


@case
def apply_leaves_status_alone(port: KubePort, ns: str) -> None:
    port.apply(llmd(ns, "m"))
    port.patch_status(*CR, ns, "m", {"ready": "1/1", "endpoint": "http://m-gateway.x.svc:8080/v1"})
    with_status = {**llmd(ns, "m", max_model_len=4096), "status": {"ready": "9/9"}}
    port.apply(with_status)
    obj = get(port, ns, "m", CR)
    assert obj["status"] == {"ready": "1/1", "endpoint": "http://m-gateway.x.svc:8080/v1"}
    assert obj["spec"]["model"]["maxModelLen"] == 4096


@case
def status_patches_merge(port: KubePort, ns: str) -> None:
    port.apply(llmd(ns, "m"))
    port.patch_status(*CR, ns, "m", {"ready": "0/2", "metrics": {"queueDepth": 3.0, "running": 1.0}})
    port.patch_status(*CR, ns, "m", {"metrics": {"running": 2.0}, "endpoint": "http://e/v1"})
    status = get(port, ns, "m", CR)["status"]
    assert status == {
        "ready": "0/2",
        "endpoint": "http://e/v1",
        "metrics": {"queueDepth": 3.0, "running": 2.0},
    }
    port.patch_status(*CR, ns, "m", {"metrics": {"queueDepth": None}, "endpoint": None})
    assert get(port, ns, "m", CR)["status"] == {"ready": "0/2", "metrics": {"running": 2.0}}
    port.patch_status(
        *CR,
        ns,
        "m",
        {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllReplicasReady",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        },
    )
    port.patch_status(
        *CR,
        ns,
        "m",
        {
            "conditions": [
                {
                    "type": "Degraded",
                    "status": "False",
                    "reason": "AsExpected",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        },
    )
    assert [c["type"] for c in get(port, ns, "m", CR)["status"]["conditions"]] == [
        "Degraded"
    ]  # a list is replaced


@case
def status_patch_of_a_missing_object_is_not_found(port: KubePort, ns: str) -> None:
    with pytest.raises(NotFound):
        port.patch_status(*CR, ns, "absent", {"ready": "0/0"})


@case
def label_selectors_select_like_the_server(port: KubePort, ns: str) -> None:
    port.apply(configmap(ns, "a", {}, {"app": "a", "tier": "x"}))
    port.apply(configmap(ns, "b", {}, {"app": "b"}))
    port.apply(configmap(ns, "c", {}, {"app": "c", "tier": "y"}))
    port.apply(configmap(ns, "d", {}, {"other": "1"}))

    def names(selector: str) -> list[str]:
        return sorted(
            o["metadata"]["name"]
            for o in port.list("v1", "ConfigMap", ns, selector)
            if o["metadata"]["name"] in {"a", "b", "c", "d"}
        )  # not kube-root-ca.crt

    assert names("") == ["a", "b", "c", "d"]
    assert names("app=a") == ["a"]
    assert names("app==a,tier=x") == ["a"]
    assert names("app=a,tier=y") == []
    assert names("app!=a") == ["b", "c", "d"]
    assert names("app in (a, c)") == ["a", "c"]
    assert names("app notin (a)") == ["b", "c", "d"]
    assert names("tier") == ["a", "c"]
    assert names("!tier") == ["b", "d"]
    assert names("app,!tier") == ["b"]


@case
def list_is_scoped_to_the_namespace(port: KubePort, ns: str) -> None:
    port.apply(configmap(ns, "a", {}, {"app": "scoped"}))
    assert port.list("v1", "ConfigMap", f"{ns}-other", "app=scoped") == []
    assert [o["metadata"]["name"] for o in port.list("v1", "ConfigMap", ns, "app=scoped")] == ["a"]


@case
def get_of_a_missing_object_is_none(port: KubePort, ns: str) -> None:
    assert port.get("v1", "ConfigMap", ns, "absent") is None
    assert port.get(*CR, ns, "absent") is None


@case
def delete_with_a_stale_uid_conflicts_and_deletes_nothing(port: KubePort, ns: str) -> None:
    port.apply(configmap(ns, "a", {"k": "1"}))
    old_uid = get(port, ns, "a")["metadata"]["uid"]
    ref = Ref("v1", "ConfigMap", ns, "a")
    port.delete(ref, old_uid)
    assert port.get("v1", "ConfigMap", ns, "a") is None
    port.apply(configmap(ns, "a", {"k": "2"}))  # recreated: a new object under the old name
    with pytest.raises(KubeError) as err:
        port.delete(ref, old_uid)
    assert err.value.status == 409
    assert get(port, ns, "a")["data"] == {"k": "2"}
    port.delete(Ref("v1", "ConfigMap", ns, "absent"))  # a missing object is not an error
