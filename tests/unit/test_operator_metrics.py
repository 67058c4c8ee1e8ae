"""The operator's /metrics (reconcile/metrics.py): each CR's last computed state, as the rules and the dashboard
read it, kept by the Reconciler as it reconciles and forgotten with the CR."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.api.load import parse_spec
from llmfleet.kube.fake import FakeKube
from llmfleet.reconcile.handlers import Reconciler
from llmfleet.reconcile.metrics import FleetMetrics

T0 = datetime(2026, 1, 1, tzinfo=UTC)
API = ("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")


def samples(m: FleetMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(m.registry()).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(m: FleetMetrics, metric: str, **labels: str) -> float | None:
    for (n, ls), v in samples(m).items():
        if n == metric and all(dict(ls).get(k) == x for k, x in labels.items()):
            return v
    return None


STATUS = {
    "costPerHour": 12.5,
    "replicas": {
        "spot": {"desired": 3, "ready": 2, "pending": 1, "reclaims": 4},
        "onDemand": {"desired": 1, "ready": 1, "pending": 0},
    },
    "conditions": [
        {"type": "Ready", "status": "False", "reason": "ReplicasNotReady"},
        {"type": "SpotFallback", "status": "True", "reason": "SpotCapacityUnavailable"},
        {"type": "SomethingElse", "status": "True", "reason": "X"},
    ],
}


def test_a_recorded_status_becomes_the_series_the_rules_join_on(minimal_obj: dict) -> None:
    m = FleetMetrics()
    spec = {**minimal_obj["spec"], "autoscaling": {"ttftP95Target": "300ms", "ttftAttainmentTarget": 0.95}}
    m.record("ml", "demo", parse_spec(spec), STATUS)
    who = {"namespace": "ml", "name": "demo"}
    assert value(m, "llmfleet_deployment_replicas", **who, pool="spot", state="ready") == 2
    assert value(m, "llmfleet_deployment_replicas", **who, pool="on-demand", state="desired") == 1
    assert value(m, "llmfleet_deployment_reclaims_total", **who, pool="spot") == 4
    assert value(m, "llmfleet_deployment_reclaims_total", **who, pool="on-demand") == 0
    assert value(m, "llmfleet_deployment_cost_per_hour", **who) == 12.5
    assert value(m, "llmfleet_deployment_ttft_target_seconds", **who) == 0.3
    assert abs(value(m, "llmfleet_deployment_ttft_error_budget", **who) - 0.05) < 1e-9  # type: ignore[operator]
    # The le vLLM's histogram has at or below 300 ms (its buckets: …, 0.25, 0.5, …).
    assert value(m, "llmfleet_deployment_ttft_slo_bucket", **who, le="0.25") == 1
    assert value(m, "llmfleet_deployment_condition", **who, type="Ready", reason="ReplicasNotReady") == 0
    assert value(m, "llmfleet_deployment_condition", **who, type="SpotFallback") == 1
    assert value(m, "llmfleet_deployment_condition", **who, type="SomethingElse") is None  # only ours
    model = {dict(ls).get("model_name") for (n, ls) in samples(m) if n.startswith("llmfleet_deployment")}
    assert model == {minimal_obj["spec"]["model"].get("servedName") or "demo"}
    m.forget("ml", "demo")
    assert not [n for (n, _) in samples(m) if n.startswith("llmfleet_deployment")]


def test_an_invalid_spec_keeps_the_last_good_figures(minimal_obj: dict) -> None:
    kube = FakeKube()
    body = kube.add(minimal_obj)
    r = Reconciler(kube, options=None, clock=lambda: T0)  # type: ignore[arg-type]
    asyncio.run(r.reconcile("ml", "demo", body))
    assert value(r.gauges, "llmfleet_deployment_replicas", state="desired", pool="on-demand") == 1
    bad = {**kube.get(*API), "spec": {"model": {"name": ""}}}
    asyncio.run(r.reconcile("ml", "demo", bad))
    assert value(r.gauges, "llmfleet_deployment_replicas", state="desired", pool="on-demand") == 1


def test_the_reconciler_records_each_cr_and_counts_reconciles(minimal_obj: dict) -> None:
    kube = FakeKube()
    body = kube.add(minimal_obj)
    r = Reconciler(kube, options=None, clock=lambda: T0)  # type: ignore[arg-type]
    asyncio.run(r.reconcile("ml", "demo", body))
    desired = [
        v
        for (n, ls), v in samples(r.gauges).items()
        if n == "llmfleet_deployment_replicas"
        and dict(ls)["state"] == "desired"
        and dict(ls)["name"] == "demo"
    ]
    assert sorted(desired) == [0, 1]  # minReplicas 1, on one pool
    assert value(r.gauges, "llmfleet_operator_reconciles_total", result="ok") == 1
    assert value(r.gauges, "llmfleet_operator_leader") == 0  # the process sets it once it leads
    del kube.objects[API]
    asyncio.run(r.reconcile("ml", "demo", follow_up=True))
    assert value(r.gauges, "llmfleet_deployment_replicas") is None


def test_serve_answers_on_a_port_and_a_taken_port_is_not_fatal() -> None:
    m = FleetMetrics()
    m.leader = 1.0
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert m.serve("127.0.0.1", port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert "llmfleet_operator_leader 1.0" in resp.read().decode()
    assert not FleetMetrics().serve("127.0.0.1", port)  # in use: logged, the operator goes on
