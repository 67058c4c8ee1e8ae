"""Every child pod is admitted under the `restricted` Pod Security Standard, on the real local API server (which
enforces Pod Security admission): a namespace labelled `pod-security.kubernetes.io/enforce=restricted`, each
Deployment's pod template created as a Pod with a server-side dry run (admission runs, nothing is stored)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from llmfleet.api.load import parse_object
from llmfleet.api.sizing import size
from llmfleet.render import render_all
from tests.conftest import EXAMPLES, ROOT
from tests.integration.conftest import BIN, Cluster

pytestmark = pytest.mark.integration
NS = "pss-restricted"


@pytest.fixture(scope="module")
def restricted(cluster: Cluster) -> str:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NS,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
    )
    return NS


def admit(cluster: Cluster, template: dict, name: str) -> subprocess.CompletedProcess[str]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": template["metadata"].get("labels", {})},
        "spec": template["spec"],
    }
    return cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)


def test_the_namespace_really_enforces_restricted(cluster: Cluster, restricted: str) -> None:
    """The control: a pod with no securityContext is refused, so an admitted pod below means something."""
    r = admit(cluster, {"metadata": {}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, "plain")
    assert r.returncode != 0 and 'violates PodSecurity "restricted' in r.stderr, r.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_child_pod_of_every_example_is_admitted(cluster: Cluster, restricted: str, path) -> None:
    obj = parse_object(yaml.safe_load(path.read_text()))
    manifests = render_all(obj, size(obj.spec), cache_password="p")
    for m in manifests:  # the gateway's ServiceAccount must exist for its pod to be admitted
        if m["kind"] == "ServiceAccount":
            cluster.apply({**m, "metadata": {**m["metadata"], "namespace": NS, "ownerReferences": []}})
    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    assert {
        m["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for m in deployments
    } >= {
        "engine",
        "gateway",
    }
    for m in deployments:
        r = admit(cluster, m["spec"]["template"], m["metadata"]["name"])
        assert r.returncode == 0 and "Warning" not in r.stderr, (m["metadata"]["name"], r.stderr)


def test_the_charts_operator_pod_is_admitted(cluster: Cluster, restricted: str) -> None:
    docs = yaml.safe_load_all(
        subprocess.run(
            [str(BIN / "helm"), "template", "llmfleet", str(ROOT / "charts/llmfleet"), "-n", NS],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        ).stdout
    )
    docs = [d for d in docs if d]
    for d in docs:
        if d["kind"] == "ServiceAccount":
            cluster.apply({**d, "metadata": {**d["metadata"], "namespace": NS}})
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    r = admit(cluster, deployment["spec"]["template"], "operator")
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr
