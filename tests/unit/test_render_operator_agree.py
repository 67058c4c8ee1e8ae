"""`llmfleet render` and the operator's first reconcile produce the same children, on every example and on
generated specs: both size the fleet through the one rule in ``llmfleet.fleet.pools``.

They once disagreed: with ``autoscaling.enabled`` and ``replicas: 3`` the render path emitted the minimum while
the operator started at 3.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llmfleet.api.load import SpecError, load_documents, parse_spec
from llmfleet.api.sizing import SizingError, size
from llmfleet.autoscale.loop import Autoscaler
from llmfleet.cli import main
from llmfleet.reconcile.observe import Snapshot
from llmfleet.reconcile.plan import APPLIED_HASH, plan
from llmfleet.render import RenderOptions, render_all
from tests.conftest import EXAMPLES

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def operator_children(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """What the operator applies for a new CR: its first reconcile, autoscaler included, on an empty cluster."""
    spec = parse_spec(raw["spec"])
    meta = raw["metadata"]
    scale = Autoscaler().step((meta["namespace"], meta["name"]), spec, {}, T0)
    p = plan(raw, Snapshot(children={}, engine_pods=()), T0, RenderOptions(), scale)
    assert p.error is None, p.error
    out = []
    for m in p.desired:
        annotations = {k: v for k, v in m["metadata"]["annotations"].items() if k != APPLIED_HASH}
        meta = {k: v for k, v in m["metadata"].items() if k != "annotations"}
        out.append({**m, "metadata": {**meta, **({"annotations": annotations} if annotations else {})}})
    return out


def cli_render(path: Path) -> list[dict[str, Any]]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["render", "-f", str(path)]) == 0
    return [d for d in yaml.safe_load_all(buf.getvalue()) if d]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_llmfleet_render_matches_the_operator_on_every_example(path: Path) -> None:
    raws = [d for d in yaml.safe_load_all(path.read_text()) if d]
    want = []
    for raw in raws:
        raw.setdefault("metadata", {}).setdefault("namespace", "default")
        want.extend(operator_children(raw))
    assert cli_render(path) == want


def test_an_autoscaled_deployment_with_replicas_starts_at_replicas_both_ways(tmp_path: Path) -> None:
    raw = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {
            "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
            "replicas": 3,
            "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 6},
        },
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    rendered = cli_render(path)
    engines = [m for m in rendered if m["kind"] == "Deployment" and "-engine-" in m["metadata"]["name"]]
    assert sum(m["spec"]["replicas"] for m in engines) == 3
    assert rendered == operator_children(raw)


pool_sizes = st.integers(min_value=0, max_value=6)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    od_min = draw(pool_sizes)
    a_min = draw(pool_sizes)
    spec: dict[str, Any] = {
        "model": {
            "name": draw(
                st.sampled_from(
                    ["meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Meta-Llama-3-70B-Instruct"]
                )
            )
        },
        "pools": {
            "onDemand": {"minReplicas": od_min, "maxReplicas": od_min + draw(pool_sizes)},
            "spot": {
                "enabled": draw(st.booleans()),
                "maxReplicas": draw(pool_sizes),
                "fallbackToOnDemand": draw(st.booleans()),
            },
        },
        "autoscaling": {
            "enabled": draw(st.booleans()),
            "minReplicas": a_min,
            "maxReplicas": a_min + draw(pool_sizes),
            "scaleToZero": {"enabled": draw(st.booleans())},
        },
    }
    replicas = draw(st.none() | st.integers(min_value=0, max_value=15))
    if replicas is not None:
        spec["replicas"] = replicas
    return spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(spec=specs())
def test_render_and_operator_agree_on_generated_specs(spec: dict[str, Any]) -> None:
    raw = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "gen", "namespace": "default"},
        "spec": spec,
    }
    try:
        obj = load_documents(yaml.safe_dump(raw))[0]
        sizing = size(obj.spec)
    except (SpecError, SizingError):
        assume(False)
        return
    assert render_all(obj, sizing, options=RenderOptions()) == operator_children(raw)
