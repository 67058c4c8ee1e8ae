"""The autoscaler and the spot fallback inside reconciliation: FakeKube, a scripted metrics source, a clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from llmfleet.api.conditions import ConditionResult, Reason
from llmfleet.autoscale.metrics import Observed
from llmfleet.autoscale.policy import Observation
from llmfleet.kube.fake import FakeKube
from llmfleet.reconcile.apply import execute
from llmfleet.reconcile.handlers import Reconciler
from llmfleet.reconcile.observe import observe
from llmfleet.reconcile.plan import plan
from llmfleet.render import RenderOptions

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CR = ("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")
OK = ConditionResult("True", Reason.METRICS_READ, "read")


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def replicas(kube: FakeKube) -> tuple[int, int]:
    od = kube.objects[("apps/v1", "Deployment", "ml", "demo-engine-ondemand")]["spec"]["replicas"]
    spot = kube.objects[("apps/v1", "Deployment", "ml", "demo-engine-spot")]["spec"]["replicas"]
    return od, spot


def condition(kube: FakeKube, type_: str) -> dict:
    return next(c for c in kube.objects[CR]["status"]["conditions"] if c["type"] == type_)


def spot_pod(kube: FakeKube, name: str, created: datetime, ready: bool = False) -> None:
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "ml",
                "creationTimestamp": stamp(created),
                "labels": {
                    "llmfleet.io/deployment": "demo",
                    "app.kubernetes.io/component": "engine",
                    "llmfleet.io/pool": "spot",
                },
            },
            "status": {
                "phase": "Running" if ready else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
    )


def test_spot_replicas_pending_past_the_timeout_get_on_demand_stand_ins_until_spot_is_ready(
    minimal_obj: dict,
) -> None:
    minimal_obj["spec"]["replicas"] = 3  # 1 on-demand baseline + 2 spot
    minimal_obj["spec"]["pools"] = {"spot": {"pendingTimeout": "5m"}}
    kube = FakeKube()
    kube.add(minimal_obj)

    def reconcile(now: datetime) -> None:
        raw = kube.get(*CR)
        execute(kube, raw, plan(raw, observe(kube, "ml", "demo"), now))

    reconcile(T0)
    assert replicas(kube) == (1, 2)
    spot_pod(kube, "s1", T0)
    spot_pod(kube, "s2", T0)
    reconcile(T0 + timedelta(minutes=4))
    assert replicas(kube) == (1, 2)
    assert condition(kube, "SpotFallback")["reason"] == "SpotAvailable"
    reconcile(T0 + timedelta(minutes=5))
    assert replicas(kube) == (3, 2)  # spot stays wanted: it takes capacity as soon as there is some
    c = condition(kube, "SpotFallback")
    assert c["status"] == "True" and c["reason"] == "SpotCapacityUnavailable"
    assert "2 spot replicas not ready after 5m" in c["message"]
    assert kube.objects[CR]["status"]["replicas"]["desired"] == 3
    spot_pod(kube, "s1", T0, ready=True)
    reconcile(T0 + timedelta(minutes=6))
    assert replicas(kube) == (2, 2)
    spot_pod(kube, "s2", T0, ready=True)
    reconcile(T0 + timedelta(minutes=7))
    assert replicas(kube) == (1, 2)
    assert condition(kube, "SpotFallback")["status"] == "False"


def test_fallback_is_bounded_by_on_demand_max_and_can_be_turned_off(minimal_obj: dict) -> None:
    minimal_obj["spec"]["replicas"] = 5
    minimal_obj["spec"]["pools"] = {
        "onDemand": {"minReplicas": 1, "maxReplicas": 2},
        "spot": {"pendingTimeout": "1m"},
    }
    minimal_obj["spec"]["autoscaling"] = {"enabled": False}
    kube = FakeKube()
    kube.add(minimal_obj)
    for i in range(4):
        spot_pod(kube, f"s{i}", T0)
    raw = kube.get(*CR)
    execute(kube, raw, plan(raw, observe(kube, "ml", "demo"), T0 + timedelta(minutes=2)))
    assert replicas(kube) == (2, 4)
    assert condition(kube, "SpotFallback")["reason"] == "OnDemandAtMax"
    kube.objects[CR]["spec"]["pools"]["spot"]["fallbackToOnDemand"] = False
    raw = kube.get(*CR)
    execute(kube, raw, plan(raw, observe(kube, "ml", "demo"), T0 + timedelta(minutes=3)))
    assert replicas(kube) == (1, 4)
    assert condition(kube, "SpotFallback")["reason"] == "FallbackDisabled"


class Scripted:
    """A MetricsSource that answers with the figures a test sets (a real implementation of the protocol)."""

    def __init__(self) -> None:
        self.observed = Observed(None, ConditionResult("False", Reason.PROMETHEUS_UNREACHABLE, "down"))
        self.calls: list[tuple[str, str, str, bool]] = []

    async def observe(
        self,
        url: str,
        namespace: str,
        model: str,
        gateway_service: str,
        expect_engines: bool,
        ttft_target_s: float = 0.5,
    ) -> Observed:
        self.calls.append((url, namespace, model, gateway_service, expect_engines))
        return self.observed


def test_autoscaler_ticks_scale_spot_first_and_record_why(minimal_obj: dict) -> None:
    minimal_obj["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 8, "scaleUpWindow": "0s"}
    kube = FakeKube()
    kube.add(minimal_obj)
    now = [T0]
    metrics = Scripted()
    r = Reconciler(
        kube, RenderOptions(), clock=lambda: now[0], metrics=metrics, prometheus_url="http://prom:9090"
    )
    asyncio.run(r.reconcile("ml", "demo"))
    assert replicas(kube) == (1, 0)

    asyncio.run(r.autoscale("ml", "demo", kube.objects[CR]["spec"]))
    assert replicas(kube) == (1, 0)  # Prometheus down: hold
    c = condition(kube, "MetricsAvailable")
    assert (c["status"], c["reason"]) == ("False", "PrometheusUnreachable")
    assert metrics.calls[-1] == ("http://prom:9090", "ml", "demo", "demo-gateway", True)

    metrics.observed = Observed(Observation(waiting=14, running=40, ready=1, ttft_p95=0.3, kv_usage=0.8), OK)
    now[0] = T0 + timedelta(seconds=15)
    r.store.cr_event(kube.get(*CR), deleted=False)
    asyncio.run(r.autoscale("ml", "demo", kube.objects[CR]["spec"]))
    assert replicas(kube) == (1, 3)  # queue 14 > 4×1 → 4 replicas, spot first
    st = kube.objects[CR]["status"]
    assert st["lastScale"] == {
        "time": "2026-01-01T00:00:15Z",
        "from": 1,
        "to": 4,
        "reason": "queue depth 14 > 4×1",
    }
    assert st["metrics"] == {
        "queueDepth": 14,
        "running": 40,
        "readyReplicas": 1,
        "ttftP95": 0.3,
        "kvCacheUsage": 0.8,
    }
    assert st["replicas"]["desired"] == 4
    assert condition(kube, "MetricsAvailable")["status"] == "True"

    # A child event in between re-plans with the autoscaler's target, not the spec's minimum.
    r.store.cr_event(kube.get(*CR), deleted=False)
    asyncio.run(r.reconcile("ml", "demo", follow_up=True))
    assert replicas(kube) == (1, 3)

    # A fresh operator (restart) starts from status.replicas.desired.
    r2 = Reconciler(kube, RenderOptions(), clock=lambda: now[0], metrics=Scripted())
    asyncio.run(r2.reconcile("ml", "demo"))
    assert replicas(kube) == (1, 3)


def test_spec_prometheus_url_is_used_when_the_user_wrote_one(minimal_obj: dict) -> None:
    minimal_obj["spec"]["autoscaling"] = {"prometheus": {"url": "http://mine:9090"}}
    kube = FakeKube()
    kube.add(minimal_obj)
    metrics = Scripted()
    r = Reconciler(
        kube, RenderOptions(), clock=lambda: T0, metrics=metrics, prometheus_url="http://default:9090"
    )
    asyncio.run(r.autoscale("ml", "demo", kube.objects[CR]["spec"]))
    assert metrics.calls[0][0] == "http://mine:9090"


def test_autoscaling_off_reads_no_metrics_and_says_so(minimal_obj: dict) -> None:
    minimal_obj["spec"]["autoscaling"] = {"enabled": False}
    minimal_obj["spec"]["replicas"] = 2
    kube = FakeKube()
    kube.add(minimal_obj)
    metrics = Scripted()
    r = Reconciler(kube, RenderOptions(), clock=lambda: T0, metrics=metrics)
    asyncio.run(r.autoscale("ml", "demo", kube.objects[CR]["spec"]))
    assert metrics.calls == [] and replicas(kube) == (1, 1)
    assert condition(kube, "MetricsAvailable")["reason"] == "AutoscalingDisabled"


def test_an_idle_operator_writes_nothing_while_prometheus_fails_in_changing_ways(minimal_obj: dict) -> None:
    """The failure changes shape from tick to tick (a refused connection, a full pool, a timeout, DNS), the
    cause does not: after the first tick's status, further ticks write nothing."""
    import httpx

    from llmfleet.autoscale.metrics import PrometheusSource

    errors = [
        httpx.ConnectError("[Errno -2] Name or service not known"),
        httpx.PoolTimeout(""),
        httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
        httpx.ConnectTimeout("timed out"),
        httpx.ConnectError("[Errno 111] Connection refused"),
    ]
    calls = [0]

    def fail(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        raise errors[calls[0] % len(errors)]

    source = PrometheusSource(httpx.AsyncClient(transport=httpx.MockTransport(fail)))
    minimal_obj["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 8}

    class StatusCounting(FakeKube):
        status_writes = 0

        def patch_status(self, *args: object, **kwargs: object) -> None:
            self.status_writes += 1
            super().patch_status(*args, **kwargs)  # type: ignore[arg-type]

    kube = StatusCounting()  # children are re-applied here (no watch feeds the store); status is what counts
    kube.add(minimal_obj)
    now = [T0]
    r = Reconciler(kube, RenderOptions(), clock=lambda: now[0], metrics=source)
    asyncio.run(r.reconcile("ml", "demo"))
    asyncio.run(r.autoscale("ml", "demo", kube.objects[CR]["spec"]))
    assert condition(kube, "MetricsAvailable")["reason"] == "PrometheusUnreachable"
    assert "is not reachable" in condition(kube, "MetricsAvailable")["message"]
    before = kube.status_writes
    for tick in range(1, 13):
        now[0] = T0 + timedelta(seconds=15 * tick)
        r.store.cr_event(kube.get(*CR), deleted=False)
        asyncio.run(r.autoscale("ml", "demo", kube.objects[CR]["spec"]))
    assert calls[0] > 12 * 9 // 2  # every tick queried
    assert kube.status_writes == before


@given(st.floats(0.0, 3000.0))
def test_the_attainment_query_counts_only_first_tokens_surely_within_the_target(target: float) -> None:
    from llmfleet.autoscale.metrics import bucket_at_or_below, queries
    from llmfleet.fleet.vllm import TTFT_BUCKETS

    le = float(bucket_at_or_below(target))
    assert le in TTFT_BUCKETS
    assert le <= target or le == TTFT_BUCKETS[0]  # never a bucket above the target: no flattering share
    above = [b for b in TTFT_BUCKETS if le < b <= target]
    assert not above  # the tightest such bucket
    assert f'le="{bucket_at_or_below(target)}"' in queries(target)["ttft_within"]


def _prometheus(counts: list[str]) -> object:
    """A Prometheus HTTP API answering every grouped query with two fleets' series (and one from a namespace no
    CR has), values by fleet: team-a/llama 3, team-b/llama 5; the gateway series by service."""
    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        counts.append(q)
        if "llmfleet_gateway_received_requests_total" in q:
            series = [({"namespace": "team-a", "service": "llama-gateway"}, 2.0)]
        else:
            series = [
                ({"namespace": "team-a", "model_name": "llama"}, 3.0),
                ({"namespace": "team-b", "model_name": "llama"}, 5.0),
                ({"namespace": "other", "model_name": "llama"}, 7.0),
            ]
        body = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": m, "value": [0, str(v)]} for m, v in series],
            },
        }
        return httpx.Response(200, json=body)

    return answer


def test_many_crs_ticking_together_share_one_fetch_and_each_reads_its_own_fleet() -> None:
    import httpx

    from llmfleet.autoscale.metrics import PrometheusSource, queries

    sent: list[str] = []
    source = PrometheusSource(httpx.AsyncClient(transport=httpx.MockTransport(_prometheus(sent))))

    async def tick() -> list[Observed]:
        return await asyncio.gather(
            *(
                source.observe("http://prom", ns, "llama", f"{model}-gateway", expect_engines=True)
                for ns in ("team-a", "team-b")
                for model in ["llama"] * 30
            )
        )

    results = asyncio.run(tick())
    assert len(sent) == len(queries())  # sixty CRs, one query per figure
    a, b = results[0].observation, results[-1].observation
    assert a is not None and b is not None
    assert (a.waiting, a.ready, a.arrivals) == (3.0, 3, 2.0)  # its own namespace's series, its own gateway
    assert (b.waiting, b.ready, b.arrivals) == (5.0, 5, None)
    missing = asyncio.run(source.observe("http://prom", "team-c", "llama", "x", expect_engines=True))
    assert missing.observation is None and missing.available.reason == "NoEngineSeries"


def test_an_answer_and_a_failure_are_reused_for_max_age_then_fetched_again() -> None:
    import httpx

    from llmfleet.autoscale.metrics import PrometheusSource, queries

    sent: list[str] = []
    now = [100.0]
    answer = _prometheus(sent)
    down = [False]

    def transport(request: httpx.Request) -> httpx.Response:
        if down[0]:
            sent.append("refused")
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return answer(request)  # type: ignore[operator]

    source = PrometheusSource(
        httpx.AsyncClient(transport=httpx.MockTransport(transport)), max_age_s=5.0, clock=lambda: now[0]
    )
    observe = lambda: asyncio.run(source.observe("http://prom", "team-a", "llama", "g", True))  # noqa: E731
    observe()
    observe()
    assert len(sent) == len(queries())  # the second read within 5 s: the same answer
    now[0] += 5.0
    down[0] = True
    assert observe().available.reason == "PrometheusUnreachable"
    refused = len(sent)
    assert observe().available.reason == "PrometheusUnreachable"  # within 5 s: not asked again
    assert len(sent) == refused
    now[0] += 5.0
    down[0] = False
    assert observe().observation is not None and len(sent) > refused


def test_the_history_keeps_the_last_ten_changes_with_typed_reasons_and_survives_a_restart() -> None:
    from llmfleet.api.load import parse_spec
    from llmfleet.autoscale.loop import Autoscaler
    from llmfleet.fleet.scale import ScaleInput

    spec = parse_spec(
        {
            "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
            "pools": {"onDemand": {"minReplicas": 1, "maxReplicas": 4}, "spot": {"maxReplicas": 40}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 40, "scaleUpWindow": "0s", "loadMemory": "0s"},
        }
    )
    ok = ConditionResult("True", Reason.METRICS_READ, "read")
    a, key, t = Autoscaler(), ("ml", "demo"), T0
    got: ScaleInput | None = None
    for _ in range(14):  # a queue that keeps growing: one scale-up per tick
        t += timedelta(seconds=15)
        current = a.target(key) or 1
        o = Observation(waiting=4.0 * current + 1, running=1, ready=current, ttft_p95=0.1, kv_usage=0.2)
        got = a.step(key, spec, {}, t, Observed(o, ok))
        assert got is not None and got.scaled is not None and got.scaled.reason == "QueueDepth"
    assert got is not None and len(got.history) == 10
    assert [h.to for h in got.history] == sorted(h.to for h in got.history)  # oldest first
    last = got.history[-1]
    assert last.to == got.target and last.figures is not None and last.figures.queue_depth > 0
    assert (last.spot or 0) + (last.on_demand or 0) == last.to
    # A new operator (restart, new leader) starts from what status says, history included.
    status = {
        "observedGeneration": 1,
        "replicas": {"desired": got.target},
        "autoscaling": {"history": [h.model_dump(by_alias=True) for h in got.history]},
    }
    fresh = Autoscaler().step(key, spec, status, t + timedelta(seconds=15))
    assert fresh is not None and fresh.history == got.history and fresh.scaled is None


def test_a_scaling_decision_whose_write_failed_says_so_in_the_history_and_is_retried(
    minimal_obj: dict,
) -> None:
    import pytest

    from llmfleet.kube.port import KubeError

    minimal_obj["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 8, "scaleUpWindow": "0s"}
    kube = FakeKube()
    kube.add(minimal_obj)
    now = [T0]
    metrics = Scripted()
    r = Reconciler(kube, RenderOptions(), clock=lambda: now[0], metrics=metrics)
    asyncio.run(r.reconcile("ml", "demo"))
    metrics.observed = Observed(Observation(waiting=14, running=40, ready=1, ttft_p95=0.3, kv_usage=0.8), OK)
    now[0] = T0 + timedelta(seconds=15)
    r.store.cr_event(kube.get(*CR), deleted=False)
    kube.fail_next = KubeError(503, "the API server is unavailable")
    with pytest.raises(KubeError):
        asyncio.run(r.autoscale("ml", "demo", kube.objects[CR]["spec"]))
    assert "autoscaling" not in kube.objects[CR]["status"]  # one child failed: no status written
    # The next reconcile writes the target, and the history tells the decision's write failed.
    now[0] = T0 + timedelta(seconds=16)
    asyncio.run(r.reconcile("ml", "demo", follow_up=True))
    assert replicas(kube) == (1, 3)
    (record,) = kube.objects[CR]["status"]["autoscaling"]["history"]
    assert (record["to"], record["written"]) == (4, False)
    # A decision written at once says so.
    metrics.observed = Observed(Observation(waiting=40, running=40, ready=4, ttft_p95=0.3, kv_usage=0.8), OK)
    now[0] = T0 + timedelta(seconds=30)
    r.store.cr_event(kube.get(*CR), deleted=False)
    asyncio.run(r.autoscale("ml", "demo", kube.objects[CR]["spec"]))
    last = kube.objects[CR]["status"]["autoscaling"]["history"][-1]
    assert last["written"] is True and last["to"] > 4
