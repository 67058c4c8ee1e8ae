"""Generates the LLMDeployment CustomResourceDefinition from the pydantic models (``python -m llmfleet.api.crd``).

The pydantic JSON schema is turned into a Kubernetes structural schema: ``$ref``s inlined, titles
dropped, ``Optional`` as ``nullable``, the tensor-parallel enum as int-or-string, object defaults left
to the operator (scalar defaults are kept so ``kubectl get -o yaml`` shows what applies).
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from llmfleet.api import v1alpha1 as api

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"


def _structural(node: Any, defs: dict[str, Any]) -> Any:  # noqa: C901 - one case per JSON-schema construct
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    any_of = node.get("anyOf")
    if any_of is not None:
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express union {any_of} structurally")
        inner = _structural(non_null[0], defs)
        rest = {k: v for k, v in node.items() if k not in ("anyOf",)}
        merged = {**inner, **_structural(rest, defs)}
        merged.pop("default", None) if merged.get("default", 0) is None else None
        return merged
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "default" and (value is None or isinstance(value, (dict, list))):
            continue  # object/list defaults are applied by the operator, not the API server
        if key == "additionalProperties" and value is False:
            continue
        if key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True  # free-form object (e.g. valueFrom)
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
            continue
        out[key] = _structural(value, defs)
    enum = out.get("enum")
    if enum is not None and "type" not in out:
        kinds = {type(v) for v in enum}
        if kinds == {str, int}:
            out["x-kubernetes-int-or-string"] = True
            out.pop("enum")
            allowed = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in enum)
            ints = ", ".join(str(v) for v in enum if isinstance(v, int))
            strs = ", ".join(f"'{v}'" for v in enum if isinstance(v, str))
            out.setdefault("x-kubernetes-validations", []).append(
                {
                    "rule": f"type(self) == int ? self in [{ints}] : self in [{strs}]",
                    "message": f"must be one of {allowed}",
                }
            )
        elif kinds == {str}:
            out["type"] = "string"
        elif kinds == {int}:
            out["type"] = "integer"
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), (int, float)) and not isinstance(out.get(bound), bool):
            out[plain] = out.pop(bound)  # OpenAPI v3.0 form: a number plus a boolean flag
            out[bound] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    return out


def spec_schema() -> dict[str, Any]:
    raw = api.LLMDeploymentSpec.model_json_schema(by_alias=True)
    return _structural(raw, raw.get("$defs", {}))  # type: ignore[no-any-return]


def status_schema() -> dict[str, Any]:
    raw = api.LLMDeploymentStatus.model_json_schema(by_alias=True)
    return _structural(raw, raw.get("$defs", {}))  # type: ignore[no-any-return]


PRINTER_COLUMNS = [
    {
        "name": "Model",
        "type": "string",
        "jsonPath": ".spec.model.servedName",
        "description": "Served model name.",
    },
    {
        "name": "TP",
        "type": "integer",
        "jsonPath": ".status.tensorParallelSize",
        "description": "GPUs per replica.",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": ".status.ready",
        "description": "Ready/desired replicas.",
    },
    {"name": "Spot", "type": "string", "jsonPath": ".status.spot", "description": "Spot ready/desired."},
    {
        "name": "TTFT-P95",
        "type": "number",
        "jsonPath": ".status.metrics.ttftP95",
        "description": "TTFT p95 (s).",
    },
    {"name": "Cost/h", "type": "number", "jsonPath": ".status.costPerHour", "description": "USD per hour."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    spec = spec_schema()
    spec["description"] = (
        "Desired state of an LLM serving stack: model, engines, pools, autoscaling, cache, gateway."
    )
    status = status_schema()
    status["description"] = "Observed state, written by the operator."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "llmfleet"}},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": api.KIND + "List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["llmfleet"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An LLM serving fleet: vLLM engines on spot and on-demand GPUs, "
                            "a response cache, a streaming OpenAI-compatible gateway and an autoscaler.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas.ready",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def render_yaml() -> str:
    header = "# Generated by `llmfleet crd` from operator/llmfleet/api/v1alpha1.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render_yaml())
