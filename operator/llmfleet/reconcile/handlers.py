"""kopf handlers (thin): every trigger (CR create/update/resume, a child changing, a periodic timer) runs
the same observe → plan → execute cycle, serialised per CR and coalesced so a burst of child events
costs one reconcile.

Errors: a transient API error (conflict, throttling, 5xx, connection) becomes ``kopf.TemporaryError``
with a delay; an invalid spec becomes a ``Degraded`` condition naming the field and
``kopf.PermanentError``; nothing is deleted in either case.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from llmfleet.api.load import SpecError, parse_spec
from llmfleet.api.quantity import parse_duration
from llmfleet.api.v1alpha1 import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    LLMDeploymentSpec,
    PrometheusRef,
    ScaleRecord,
)
from llmfleet.autoscale.loop import Autoscaler
from llmfleet.autoscale.metrics import MetricsSource, Observed, PrometheusSource
from llmfleet.fleet import names, pods, reclaim
from llmfleet.fleet.names import DEPLOYMENT_LABEL, MANAGED_BY, MANAGER
from llmfleet.kube.port import KubeError, KubePort, Obj
from llmfleet.reconcile.apply import execute
from llmfleet.reconcile.metrics import FleetMetrics
from llmfleet.reconcile.observe import ChildStore, Snapshot
from llmfleet.reconcile.observe import resource_version as _rv
from llmfleet.reconcile.plan import Plan, plan
from llmfleet.render import RenderOptions
from llmfleet.render.common import stable_hash
from llmfleet.settings import OperatorSettings

log = logging.getLogger("llmfleet.operator")
DEFAULT_PROMETHEUS_URL = PrometheusRef().url
COALESCE_SECONDS = 0.2
WATCH_GRACE_SECONDS = 10.0


def _created_after(raw: Obj, when: datetime) -> bool:
    created = pods.created_at(raw)
    return created is not None and created > when


class Reconciler:
    """Runs reconciles for CRs, at most one at a time per CR, in worker threads (the client is sync)."""

    def __init__(
        self,
        port: KubePort,
        options: RenderOptions,
        clock: Callable[[], datetime],
        workers: int = 16,
        metrics: MetricsSource | None = None,
        prometheus_url: str | None = None,
        reclaim_taints: tuple[str, ...] = reclaim.DEFAULT_TAINTS,
        reclaim_conditions: tuple[str, ...] = reclaim.DEFAULT_CONDITIONS,
        gauges: FleetMetrics | None = None,
    ) -> None:
        self.port = port
        self.gauges = gauges or FleetMetrics()  # the operator's /metrics
        self.reclaim_taints, self.reclaim_conditions = reclaim_taints, reclaim_conditions
        self.options = options
        self.clock = clock
        self.autoscaler = Autoscaler()
        self.metrics: MetricsSource = metrics or PrometheusSource()
        self.prometheus_url = prometheus_url  # replaces the spec's default URL (not one the user wrote)
        self.store = ChildStore()
        # CRs created this long after start-up find every child watch running: their children need no listing.
        self.watches_up_at = clock() + timedelta(seconds=WATCH_GRACE_SECONDS)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # The status each CR was last given here, with the resourceVersion it was computed from: until the watch
        # brings a newer copy, the next reconcile starts from it, not from the stale one (a count such as
        # status.replicas.spot.reclaims would otherwise be written back to its old value).
        self._written: dict[tuple[str, str], tuple[int, Obj]] = {}
        self._scheduled: set[tuple[str, str]] = set()
        # Spec changes (create/update/resume) and child-triggered follow-ups (mostly status) run in separate
        # pools, so that during a burst the follow-ups of early CRs never queue ahead of the creation of later ones.
        self.stopping = False  # set when the operator stops: no new reconcile starts
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self._follow_pool = ThreadPoolExecutor(max_workers=max(2, workers // 4), thread_name_prefix="follow")
        self._apply_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply")

    def _secrets(
        self, namespace: str, name: str, spec: LLMDeploymentSpec, snapshot: Snapshot, tick: bool
    ) -> Snapshot:
        """Gather the Secrets the plan needs, by name (the operator lists and watches none)."""
        # The managed cache's credentials Secret: read once, then on each tick while it is (or may be)
        # wanted; the plan keeps its password, or prunes it once the cache is no longer managed.
        managed = spec.cache.any_enabled and spec.cache.redis.mode == "managed"
        known = self.store.auth(namespace, name)
        if not self.store.knows_auth(namespace, name) or (tick and (managed or known is not None)):
            secret = self.port.get("v1", "Secret", namespace, names.cache_auth(name))
            self.store.put_auth(namespace, name, secret)
        snapshot = dataclasses.replace(snapshot, cache_auth=self.store.auth(namespace, name))
        ref = spec.cache.redis.secret_ref
        if spec.cache.any_enabled and spec.cache.redis.mode == "external" and ref is not None:
            # The user's Secret with the external Redis URL: its hash rolls the gateways when it changes.
            seen, digest = self.store.url_hash(namespace, name, (ref.name, ref.key))
            if tick or not seen:
                user = self.port.get("v1", "Secret", namespace, ref.name) or {}
                value = (user.get("data") or {}).get(ref.key)
                digest = stable_hash(value) if value else None
                self.store.put_url_hash(namespace, name, (ref.name, ref.key), digest)
            snapshot = dataclasses.replace(snapshot, redis_url_hash=digest)
        return snapshot

    def _sync(
        self,
        namespace: str,
        name: str,
        body: Obj | None,
        observed: Observed | None = None,
        tick: bool = False,
    ) -> Plan | None:
        stored = self.store.cr(namespace, name)
        if body is None or (stored is not None and _rv(stored) > _rv(body)):
            body = stored  # the newest copy seen on the watch (our own status writes included)
        raw = body or self.port.get(API_VERSION, KIND, namespace, name)
        if raw is not None and _created_after(raw, self.watches_up_at):
            self.store.mark_new(namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            self.store.forget(namespace, name)
            self.autoscaler.forget((namespace, name))
            self._written.pop((namespace, name), None)
            self.gauges.forget(namespace, name)
            return None  # gone or going: garbage collection removes the children
        raw.setdefault("apiVersion", API_VERSION)
        raw.setdefault("kind", KIND)
        written = self._written.get((namespace, name))
        if written is not None:
            if _rv(raw) <= written[0]:
                raw = {**raw, "status": written[1]}  # our own write, not on the watch yet
            else:
                del self._written[(namespace, name)]
        snapshot = self.store.snapshot(self.port, namespace, name)
        now = self.clock()
        scale = None
        spec: LLMDeploymentSpec | None = None
        try:
            spec = parse_spec(raw.get("spec") or {})
        except SpecError:
            pass  # plan() reports it as a Degraded condition
        else:
            scale = self.autoscaler.step((namespace, name), spec, raw.get("status") or {}, now, observed)
            snapshot = self._secrets(namespace, name, spec, snapshot, tick)
        p = plan(raw, snapshot, now, self.options, scale, new_password=secrets.token_urlsafe(32))
        self._execute((namespace, name), raw, p, scale.scaled if scale is not None else None)
        auth = names.cache_auth(name)
        for m in p.to_apply:
            if m["kind"] == "Secret" and m["metadata"]["name"] == auth:
                self.store.put_auth(namespace, name, m)  # what we wrote is what the next plan reads
        if any(ref.kind == "Secret" and ref.name == auth for ref, _ in p.to_delete):
            self.store.put_auth(namespace, name, None)
        if p.status is not None:
            self._written[(namespace, name)] = (_rv(raw), p.status)
        if spec is not None:  # an invalid spec keeps the last good figures
            self.gauges.record(namespace, name, spec, p.status or raw.get("status") or {})
        for ref, _ in p.to_delete:
            if ref.kind == "Pod":  # engine pods drained on a notice
                self.store.mark_deleting(namespace, name, ref.name, now.isoformat())
        return p

    def _execute(self, key: tuple[str, str], raw: Obj, p: Plan, scaled: ScaleRecord | None) -> None:
        """Act on the plan; a scaling decision whose write failed is marked so in the history."""
        try:
            execute(self.port, raw, p, self._apply_pool)
        except KubeError:
            if scaled is not None:
                self.autoscaler.unwritten(key, scaled)
            raise

    def node_changed(self, node: Obj, deleted: bool) -> None:
        """A node event: record its reclaim notice (or that it has none) and reconcile the CRs with engine pods
        on it at once, so their pods start draining within the event's round trip."""
        signal = (
            reclaim.NODE_DELETED
            if deleted
            else reclaim.notice(node, self.reclaim_taints, self.reclaim_conditions)
        )
        for namespace, name in self.store.node_event(node["metadata"]["name"], signal):
            self.schedule(namespace, name)

    async def reconcile(
        self,
        namespace: str,
        name: str,
        body: Obj | None = None,
        follow_up: bool = False,
        observed: Observed | None = None,
        tick: bool = False,
    ) -> Plan | None:
        """``body``: the CR as the triggering event delivered it (else the store's copy, else a GET);
        ``observed``: fresh fleet figures for the autoscaler (a metrics tick); ``tick``: the periodic re-plan, which
        also re-reads the managed cache's credentials Secret."""
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            pool = self._follow_pool if follow_up else self._pool
            try:
                p = await asyncio.get_running_loop().run_in_executor(
                    pool, self._sync, namespace, name, body, observed, tick
                )
            except KubeError:
                self.gauges.count(ok=False)
                raise
            self.gauges.count(ok=p is None or p.error is None)
            return p

    def close(self) -> None:
        """Wait for the reconciles running in worker threads (a thread cannot be cancelled): once this returns,
        this process writes nothing more, and the leader Lease may be released."""
        self.stopping = True
        for pool in (self._pool, self._follow_pool, self._apply_pool):
            pool.shutdown(wait=True, cancel_futures=True)

    async def autoscale(
        self, namespace: str, name: str, raw_spec: dict[str, Any], stopped: Any = None
    ) -> Plan | None:
        """One autoscaler tick: read the fleet's figures, then reconcile with them. It also re-plans CRs without
        autoscaling, so time-based decisions (the spot pendingTimeout) are taken without waiting for an event."""
        try:
            spec = parse_spec(raw_spec)
        except SpecError:
            return None
        observed = None
        if spec.autoscaling.enabled:
            url = spec.autoscaling.prometheus.url
            if self.prometheus_url and url == DEFAULT_PROMETHEUS_URL:
                url = self.prometheus_url
            model = spec.model.served_name or name
            target = self.autoscaler.target((namespace, name))
            fetch = self.metrics.observe(
                url,
                namespace,
                model,
                names.gateway(name),
                expect_engines=target != 0,
                ttft_target_s=parse_duration(spec.autoscaling.ttft_p95_target),
            )
            observed = await fetch if stopped is None else await _unless_stopped(fetch, stopped)
        if self.stopping or (stopped is not None and stopped):
            return None  # the operator is stopping: no reconcile (no write) starts now
        return await self.reconcile(namespace, name, follow_up=True, observed=observed, tick=True)

    def schedule(self, namespace: str, name: str) -> None:
        """Reconcile soon; events arriving in the meantime for the same CR ride along."""
        key = (namespace, name)
        if key in self._scheduled:
            return
        self._scheduled.add(key)

        async def later() -> None:
            await asyncio.sleep(COALESCE_SECONDS)
            self._scheduled.discard(key)
            if self.stopping:
                return
            try:
                await self.reconcile(namespace, name, follow_up=True)
            except KubeError as exc:
                log.warning(
                    "%s/%s: reconcile after child change failed (%s); will retry on the next event",
                    namespace,
                    name,
                    exc,
                )

        task = asyncio.get_running_loop().create_task(later())
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _unless_stopped(work: Any, stopped: Any) -> Any:
    """``work``'s result, or None once ``stopped`` (kopf's stop flag of a timer) is set first: the operator is
    stopping and an in-flight Prometheus query must not hold its exit (kopf waits for unfinished timers)."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopped.wait())
    done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        stop.cancel()
        return task.result()
    task.cancel()
    return None


_background: set[asyncio.Task[None]] = set()
_reconciler: Reconciler | None = None
_operator_settings: OperatorSettings | None = None


def configure(reconciler: Reconciler, settings: OperatorSettings) -> None:
    """Hand the handlers their reconciler and the process's settings, and declare the autoscaler's timer.

    Settings kopf fixes at start-up (a restart of the operator applies a change): ``autoscale_interval`` (a
    timer's interval is fixed when it is declared, so it is declared here, once) and ``workers`` (kopf's
    executor, sized by the startup handler). Everything else is read per reconcile from the objects passed
    down. Call once per process, before ``kopf.run``.
    """
    global _reconciler, _operator_settings
    _reconciler, _operator_settings = reconciler, settings
    interval = settings.autoscale_interval
    kopf.timer(GROUP, VERSION, PLURAL, interval=interval, initial_delay=interval, id="autoscale")(autoscale)


def _get() -> Reconciler:
    if _reconciler is None:
        raise kopf.PermanentError("operator not configured")
    return _reconciler


@kopf.on.startup()
def _settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # our own events say what happened; kopf's only warnings
    if log.getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per child event is noise
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    if _operator_settings is not None:
        settings.execution.max_workers = _operator_settings.workers
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


async def _reconcile_or_raise(namespace: str, name: str, body: Obj | None = None) -> None:
    try:
        p = await _get().reconcile(namespace, name, body)
    except KubeError as exc:
        if exc.transient:
            raise kopf.TemporaryError(
                f"transient API error: {exc}", delay=min(60, 2 + random.random() * 8)
            ) from exc
        raise kopf.TemporaryError(f"API error: {exc}", delay=30) from exc
    if p is not None and p.error is not None:
        raise kopf.PermanentError(f"invalid spec: {p.error}")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def on_llmdeployment(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    await _reconcile_or_raise(namespace or "", name, _as_dict(body))


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def on_delete(namespace: str | None, name: str, **_: Any) -> None:
    log.info("%s/%s deleted; Kubernetes garbage collection removes its children", namespace, name)


async def autoscale(namespace: str | None, name: str, spec: kopf.Spec, stopped: Any = None, **_: Any) -> None:
    """The autoscaler's tick (declared by ``configure``); also the safety net for missed events (reads only when nothing changed)."""
    try:
        await _get().autoscale(namespace or "", name, dict(spec), stopped)
    except KubeError as exc:
        log.warning("%s/%s: autoscaler tick failed (%s); the next tick retries", namespace, name, exc)


def _as_dict(body: Any) -> Obj:
    """kopf's body view as a plain dict with apiVersion and kind (what the planner reads)."""
    obj = dict(body)
    obj.setdefault("apiVersion", API_VERSION)
    obj.setdefault("kind", KIND)
    return obj


@kopf.on.event(GROUP, VERSION, PLURAL, id="cr-store")
def _cr_changed(body: Any, type: str | None, **_: Any) -> None:
    """Keep the CR store current (no API call): child-triggered reconciles read the CR from here."""
    if _reconciler is not None and body.get("metadata", {}).get("namespace"):
        _reconciler.store.cr_event(_as_dict(body), deleted=type == "DELETED")


async def _child_changed(
    namespace: str | None,
    labels: Mapping[str, str],
    body: kopf.Body,
    type: str,
    resource: kopf.Resource,
    **_: Any,
) -> None:
    owner = labels.get(DEPLOYMENT_LABEL)
    if owner and namespace:
        r = _get()
        obj = dict(body)
        obj.setdefault("kind", resource.kind)
        obj.setdefault(
            "apiVersion", f"{resource.group}/{resource.version}" if resource.group else resource.version
        )
        r.store.event(namespace, owner, obj, deleted=type == "DELETED")
        r.schedule(namespace, owner)


_OURS = {MANAGED_BY: MANAGER}
for _group, _version, _plural in (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
):
    kopf.on.event(_group, _version, _plural, labels=_OURS, id=f"child-{_plural}")(_child_changed)
kopf.on.event(
    "",
    "v1",
    "pods",
    labels={DEPLOYMENT_LABEL: kopf.PRESENT, names.COMPONENT_LABEL: names.ENGINE},
    id="engine-pods",
)(_child_changed)


@kopf.on.event("", "v1", "nodes", id="reclaim-notices")
async def _node_changed(body: Any, type: str | None, **_: Any) -> None:
    """Reclaim notices (taints, conditions, deletion) on the nodes engine pods run on. The initial listing
    (``type`` None) counts too: a replica that takes over the lease mid-notice acts on it. Async: it runs on
    kopf's event loop, where the reconcile it schedules runs (a sync handler would run in a worker thread)."""
    if _reconciler is not None:
        _reconciler.node_changed(dict(body), deleted=type == "DELETED")


def utcnow() -> datetime:
    return datetime.now(UTC)


@kopf.on.cleanup()
async def _stopping(**_: Any) -> None:
    """The operator is stopping (after its watchers, before kopf waits for what is still running): no new
    reconcile starts, and the ones scheduled but not begun are dropped."""
    if _reconciler is not None:
        _reconciler.stopping = True
    for task in list(_background):
        task.cancel()


def close() -> None:
    """Wait for the reconciles still running in threads (process.run calls it before releasing the Lease)."""
    if _reconciler is not None:
        _reconciler.close()
