"""The Reconciler's reads: what it takes from the watch-fed stores instead of asking the API server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from llmfleet.kube.fake import FakeKube
from llmfleet.reconcile.handlers import WATCH_GRACE_SECONDS, Reconciler

T0 = datetime(2026, 1, 1, tzinfo=UTC)
API = ("llmfleet.io/v1alpha1", "LLMDeployment", "ml", "demo")


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def setup(minimal_obj: dict, created: datetime) -> tuple[FakeKube, Reconciler, dict]:
    kube = FakeKube()
    minimal_obj["metadata"]["creationTimestamp"] = stamp(created)
    body = kube.add(minimal_obj)
    return kube, Reconciler(kube, options=None, clock=lambda: T0), body  # type: ignore[arg-type]


def test_new_cr_with_its_body_reconciles_without_a_single_read(minimal_obj: dict) -> None:
    kube, r, body = setup(minimal_obj, T0 + timedelta(seconds=WATCH_GRACE_SECONDS + 1))
    asyncio.run(r.reconcile("ml", "demo", body))
    assert kube.reads == 0  # no GET of the CR, no LIST of children: the watches deliver them
    assert sum(1 for k in kube.objects if k[1] == "Deployment") == 4


def test_cr_older_than_the_operator_lists_its_children_once(minimal_obj: dict) -> None:
    kube, r, body = setup(minimal_obj, T0 - timedelta(days=1))
    asyncio.run(r.reconcile("ml", "demo", body))
    first = kube.reads
    assert first >= 7  # one LIST per child kind and the engine pods: the store may not be complete yet
    r.store.cr_event(kube.get(*API), deleted=False)
    reads = kube.reads
    asyncio.run(r.reconcile("ml", "demo", follow_up=True))
    assert kube.reads == reads  # warm now, and the CR comes from the store


def test_a_follow_up_without_a_stored_cr_reads_it_and_a_deleted_cr_is_forgotten(minimal_obj: dict) -> None:
    kube, r, body = setup(minimal_obj, T0 + timedelta(minutes=5))
    asyncio.run(r.reconcile("ml", "demo", follow_up=True))
    assert kube.reads == 1  # just the GET of the CR
    r.store.cr_event(body, deleted=True)
    del kube.objects[API]
    assert asyncio.run(r.reconcile("ml", "demo", follow_up=True)) is None


def test_the_newest_copy_of_the_cr_wins(minimal_obj: dict) -> None:
    kube, r, body = setup(minimal_obj, T0 + timedelta(minutes=5))
    newer = kube.get(*API)
    newer["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 5)
    newer["spec"]["autoscaling"] = {"enabled": False}
    newer["spec"]["replicas"] = 3
    r.store.cr_event(newer, deleted=False)
    p = asyncio.run(r.reconcile("ml", "demo", body))  # the event body is older than the store's copy
    assert p is not None and p.status is not None and p.status["replicas"]["desired"] == 3


def test_a_reconcile_on_a_stale_copy_starts_from_the_status_written_here(minimal_obj: dict) -> None:
    """The watch brings our own status write back later than the next event may come: a reconcile on the stale
    copy must not write back the old status (a reclaim counted, then uncounted, was seen in the chaos bench)."""
    kube, r, body = setup(minimal_obj, T0 + timedelta(minutes=5))
    first = asyncio.run(r.reconcile("ml", "demo", body))
    assert first is not None and first.status is not None
    written = kube.get(*API)["status"]
    stale = {**body, "status": {**written, "costPerHour": -1.0}}  # what the watch still had before our write
    again = asyncio.run(r.reconcile("ml", "demo", stale))
    assert again is not None and again.status is None  # starts from what it wrote: nothing to change
    assert kube.get(*API)["status"]["costPerHour"] == written["costPerHour"]
