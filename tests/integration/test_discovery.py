"""The gateway's engine discovery against the real API server: EndpointSlices are watched, not polled; a
terminating or unready endpoint leaves the router, a new one joins; an idle fleet costs no list requests."""

from __future__ import annotations

import asyncio
import re

from llmfleet.gateway.discovery import EndpointSliceWatcher
from llmfleet.gateway.routing import Router
from llmfleet.kube.client import KubeClient, load_config

SELECTOR = "kubernetes.io/service-name=demo-engine"


def endpoint_slice(namespace: str, endpoints: list[tuple[str, dict[str, bool]]]) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "demo-engine-abc",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": "demo-engine"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": [{"addresses": [addr], "conditions": cond} for addr, cond in endpoints],
    }


class CountingClient(KubeClient):
    """The real client, counting the lists it starts (each watch_snapshots call lists once, then watches)."""

    lists = 0

    def watch_snapshots(self, *args, **kwargs):
        self.lists += 1
        yield from super().watch_snapshots(*args, **kwargs)


async def until(check, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_endpoints_follow_a_watch_and_an_idle_fleet_costs_no_lists(cluster, namespace) -> None:
    ready = {"ready": True, "serving": True, "terminating": False}
    draining = {"ready": False, "serving": True, "terminating": True}
    assert (
        cluster.apply(endpoint_slice(namespace, [("10.0.0.1", ready), ("10.0.0.2", ready)])).returncode == 0
    )
    router = Router()
    seen: list[list[str]] = []

    async def run() -> None:
        kube = CountingClient(load_config(str(cluster.kubeconfig)))
        watcher = EndpointSliceWatcher(kube, namespace, SELECTOR, 8000, router, on_change=seen.append)
        await watcher.start()
        try:
            assert watcher.current == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
            # Idle: a poller would list every 2 s; the watch holds one request open and lists nothing more.
            # (Counted at the client: the API server's own LIST counter also counts other clients of the
            # session's shared cluster.)
            await asyncio.sleep(6)
            assert kube.lists == 1 and len(seen) == 1, (kube.lists, seen)
            # A draining endpoint (still serving its in-flight requests) gets no new ones; a new replica joins.
            await asyncio.to_thread(
                cluster.apply,
                endpoint_slice(
                    namespace, [("10.0.0.1", draining), ("10.0.0.2", ready), ("10.0.0.3", {"ready": True})]
                ),
            )
            await until(
                lambda: watcher.current == ["http://10.0.0.2:8000", "http://10.0.0.3:8000"],
                "the draining endpoint to leave and the new one to join",
            )
            assert sorted(router.endpoints) == watcher.current
            # The slice is deleted (the Service went away): no endpoints, not the last known ones.
            await asyncio.to_thread(
                cluster.kubectl, "delete", "endpointslice", "demo-engine-abc", "-n", namespace
            )
            await until(lambda: watcher.current == [], "the deleted slice's endpoints to go")
        finally:
            await watcher.stop()

    asyncio.run(run())
    assert seen[-1] == [] and all(re.fullmatch(r"http://10\.0\.0\.\d:8000", u) for s in seen for u in s)


def test_a_gateway_that_starts_before_its_engines_picks_them_up(cluster, namespace) -> None:
    """No slice yet (the engine Service is created after the gateway): it starts with no engines, synced, and
    the first slice's endpoints arrive through the watch."""
    router = Router()

    async def run() -> None:
        watcher = EndpointSliceWatcher(
            KubeClient(load_config(str(cluster.kubeconfig))), namespace, SELECTOR, 8000, router, backoff=0.2
        )
        await watcher.start()
        try:
            assert watcher.current == [] and watcher.synced.is_set()
            await asyncio.to_thread(cluster.apply, endpoint_slice(namespace, [("10.0.0.9", {"ready": True})]))
            await until(lambda: watcher.current == ["http://10.0.0.9:8000"], "the new slice's endpoint")
        finally:
            await watcher.stop()

    asyncio.run(run())
