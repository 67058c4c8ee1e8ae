"""The Prometheus series vLLM exports, read from its own source (no import: no torch needed).

    python hack/vllm_metrics.py SRC   # JSON: {name: {"type": ..., "labels": [...], "buckets": [...] | null}}

SRC is what hack/vllm-source.sh prints. Every ``self._gauge_cls/_counter_cls/_histogram_cls(name="vllm:...")``
call in ``vllm/v1/metrics/loggers.py``: its type, its label names (``labelnames`` is ``["model_name", "engine"]``
there, plus what the call adds) and, for a histogram whose buckets are a static family, the bucket bounds from
``vllm/v1/metrics/buckets.py``. A counter is listed under its exposition name (``_total`` added).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

BASE_LABELS = ["model_name", "engine"]
KINDS = {"_gauge_cls": "gauge", "_counter_cls": "counter", "_histogram_cls": "histogram"}


def _families(buckets_py: Path) -> dict[str, list[float]]:
    tree = ast.parse(buckets_py.read_text())
    consts: dict[str, list[float]] = {}
    families: dict[str, str] = {}
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if not isinstance(target, ast.Name) or node.value is None:
            continue
        if target.id.endswith("_BUCKETS"):
            consts[target.id] = [float(x) for x in ast.literal_eval(node.value)]
        if target.id == "_STATIC_FAMILY_DEFAULTS" and isinstance(node.value, ast.Dict):
            for k, v in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(v, ast.Name):
                    families[str(k.value)] = v.id
    return {family: consts[name] for family, name in families.items() if name in consts}


def _labels(node: ast.AST | None) -> list[str]:
    if node is None:
        return []
    if isinstance(node, ast.Name) and node.id == "labelnames":
        return list(BASE_LABELS)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _labels(node.left) + _labels(node.right)
    if isinstance(node, ast.List):
        return [str(e.value) for e in node.elts if isinstance(e, ast.Constant)]
    return ["?" + ast.unparse(node)]


def metrics(src: Path) -> dict[str, dict[str, Any]]:
    families = _families(src / "vllm" / "v1" / "metrics" / "buckets.py")
    tree = ast.parse((src / "vllm" / "v1" / "metrics" / "loggers.py").read_text())
    bucket_vars: dict[
        str, str
    ] = {}  # time_to_first_token_buckets = histogram_buckets("time_to_first_token", ...)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "histogram_buckets"
            and isinstance(node.targets[0], ast.Name)
        ):
            first = node.value.args[0] if node.value.args else None
            if isinstance(first, ast.Constant):
                bucket_vars[node.targets[0].id] = str(first.value)
    out: dict[str, dict[str, Any]] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in KINDS
        ):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        name_node = kw.get("name")
        if not (isinstance(name_node, ast.Constant) and str(name_node.value).startswith("vllm:")):
            continue
        kind = KINDS[node.func.attr]
        name = str(name_node.value) + ("_total" if kind == "counter" else "")
        buckets = None
        b = kw.get("buckets")
        if isinstance(b, ast.Name) and bucket_vars.get(b.id) in families:
            buckets = families[bucket_vars[b.id]]
        out[name] = {"type": kind, "labels": _labels(kw.get("labelnames")), "buckets": buckets}
    return out


if __name__ == "__main__":
    print(json.dumps(metrics(Path(sys.argv[1])), indent=1, sort_keys=True))
