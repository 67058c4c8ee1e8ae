"""The CRD: generated from the models, committed, structural, with CEL rules and printer columns."""

from __future__ import annotations

import kubernetes_validate
import yaml

from llmfleet.api.crd import crd, render_yaml
from tests.conftest import ROOT

CRD_PATH = ROOT / "crds" / "llmfleet.io_llmdeployments.yaml"


def walk(schema: dict, path: str = ""):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_the_models() -> None:
    assert CRD_PATH.read_text() == render_yaml(), (
        "crds/ is stale: run `llmfleet crd > crds/llmfleet.io_llmdeployments.yaml`"
    )


def test_crd_is_a_valid_object() -> None:
    kubernetes_validate.validate(crd(), "1.36", strict=True)


def test_schema_is_structural_and_documented() -> None:
    version = crd()["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in walk(root["properties"]["spec"], ".spec"):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        if not path.endswith(("[]", "}")):
            assert node.get("description"), f"{path} has no description"


def test_names_subresources_and_columns() -> None:
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["llmd"] and spec["names"]["categories"] == ["llmfleet"]
    v = spec["versions"][0]
    assert v["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in v["subresources"]
    assert [c["name"] for c in v["additionalPrinterColumns"]] == [
        "Model",
        "TP",
        "Ready",
        "Spot",
        "TTFT-P95",
        "Cost/h",
        "Age",
    ]


def test_cross_field_rules_are_cel() -> None:
    text = yaml.safe_dump(crd(), width=float("inf"))
    for message in (
        "minReplicas must be <= maxReplicas",
        "none of the flags the operator owns",
        "baseURL and model are required unless use is never",
        "external Redis needs url or secretRef",
        "must be one of 'auto', 1, 2, 4, 8",
        "each rule's `to` is self, external, auto or a member's deployment name",
    ):
        assert message in text
