"""GitOps health from the status alone: Argo CD's Lua health check (manifests/argocd/health.lua, run with
lupa's Lua) and the kstatus conditions (Reconciling, Stalled) Flux reads. The real operator's statuses are
checked against both in tests/integration/test_gitops_health.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from llmfleet.api.conditions import ConditionResult, Reason
from llmfleet.reconcile.status import kstatus_conditions

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "manifests" / "argocd" / "health.lua"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the health script as Argo CD does: the object as the global ``obj``, the script's body returning a
    table with status and message."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    hs = runtime.execute(LUA.read_text())
    return {"status": hs["status"], "message": hs["message"]}


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def cr(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "llmfleet.io/v1alpha1", "kind": "LLMDeployment"}
    obj["metadata"] = {"name": "llama", "generation": generation}
    if status is not None:
        obj["status"] = status
    return obj


def cond(type_: str, status: str, reason: str, message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def test_the_argocd_patch_carries_the_health_script_verbatim() -> None:
    patch = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm.yaml").read_text())
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"]["resource.customizations.health.llmfleet.io_LLMDeployment"] == LUA.read_text()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "Progressing"),
        ({"observedGeneration": 1, "conditions": [cond("Ready", "True", "AllReplicasReady")]}, "Progressing"),
        ({"observedGeneration": 2, "conditions": [cond("Ready", "True", "AllReplicasReady")]}, "Healthy"),
        (
            {"observedGeneration": 2, "conditions": [cond("Ready", "True", "AllReplicasReady"), cond("Progressing", "True", "RollingOut")]},
            "Progressing",
        ),
        ({"observedGeneration": 2, "conditions": [cond("Ready", "False", "ReplicasNotReady")]}, "Progressing"),
        ({"observedGeneration": 2, "conditions": [cond("Ready", "True", "ScaledToZero")]}, "Suspended"),
        (
            {"observedGeneration": 2, "conditions": [cond("Ready", "True", "AllReplicasReady"), cond("Degraded", "True", "SizingFailed", "spec.engine.tensorParallelSize: …")]},
            "Degraded",
        ),
    ],
)  # fmt: skip
def test_health_of_each_state(status: dict[str, Any] | None, expected: str) -> None:
    got = argocd_health(cr(status))
    assert got["status"] == expected, got
    if expected == "Degraded":
        assert "SizingFailed" in got["message"] and "tensorParallelSize" in got["message"]


CONDITION = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["Ready", "Progressing", "Degraded", "SpotFallback", "Reclaim", "MetricsAvailable"]
        ),
        "status": st.sampled_from(["True", "False", "Unknown"]),
        "reason": st.sampled_from([r.value for r in Reason]),
        "message": st.text(max_size=40),
    }
)


@given(
    conditions=st.lists(CONDITION, max_size=8, unique_by=lambda c: c["type"]),
    observed=st.one_of(st.none(), st.integers(0, 4)),
    generation=st.integers(1, 4),
)
def test_any_status_gets_a_valid_health_and_degraded_always_wins(conditions, observed, generation) -> None:
    status: dict[str, Any] = {"conditions": conditions}
    if observed is not None:
        status["observedGeneration"] = observed
    got = argocd_health(cr(status, generation))
    assert got["status"] in ARGO_STATUSES and isinstance(got["message"], str)
    current = observed is not None and observed >= generation
    degraded = any(c["type"] == "Degraded" and c["status"] == "True" for c in conditions)
    if not current:
        assert got["status"] == "Progressing"
    elif degraded:
        assert got["status"] == "Degraded"
    ready = next((c for c in conditions if c["type"] == "Ready"), None)
    if got["status"] == "Healthy":
        assert ready is not None and ready["status"] == "True" and not degraded


R = {s: ConditionResult(s, Reason.ALL_REPLICAS_READY, "m") for s in ("True", "False", "Unknown")}  # type: ignore[arg-type]


@given(
    ready=st.sampled_from(["True", "False", "Unknown"]),
    progressing=st.sampled_from(["True", "False"]),
    degraded=st.booleans(),
)
def test_kstatus_conditions_mirror_ready_progressing_and_degraded(ready, progressing, degraded) -> None:
    d = (
        ConditionResult("True", Reason.SIZING_FAILED, "why")
        if degraded
        else ConditionResult("False", Reason.AS_EXPECTED, "")
    )
    reconciling, stalled = kstatus_conditions(
        R[ready], ConditionResult(progressing, Reason.ROLLING_OUT, "m"), d
    )  # type: ignore[arg-type]
    assert (stalled.status == "True") == degraded
    assert not (stalled.status == "True" and reconciling.status == "True")  # one verdict for kstatus
    if not degraded:
        assert (reconciling.status == "True") == (progressing == "True" or ready != "True")
