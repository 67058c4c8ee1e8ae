"""Engine endpoints for the router: a static list, or the engine Service's EndpointSlices (ready endpoints only)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from llmfleet.gateway.routing import Router
from llmfleet.kube.port import KubeError, KubePort, Obj

log = logging.getLogger("llmfleet.gateway.discovery")


def engine_url(addr: str, port: int) -> str:
    return f"http://[{addr}]:{port}" if ":" in addr else f"http://{addr}:{port}"


def ready_urls(slices: list[Obj], port: int) -> list[str]:
    urls = []
    for s in slices:
        ports = [p.get("port") for p in s.get("ports") or [] if p.get("port")]
        use_port = ports[0] if ports else port
        for ep in s.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating"):
                continue
            for addr in ep.get("addresses") or []:
                urls.append(engine_url(addr, use_port))
    return sorted(set(urls))


def ready_pod_urls(pods: list[Obj], port: int) -> list[str]:
    """Engine pods that are Ready and not terminating (the pod-discovery mode of local dev clusters)."""
    urls = []
    for p in pods:
        st = p.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
        if ready and st.get("podIP") and not p["metadata"].get("deletionTimestamp"):
            urls.append(engine_url(st["podIP"], port))
    return sorted(set(urls))


class EndpointSliceWatcher:
    """Polls EndpointSlices of the engine Service (a read every interval; no writes)."""

    def __init__(self, kube: KubePort, namespace: str, selector: str, port: int, router: Router,
                 interval: float = 2.0, on_change: Callable[[list[str]], None] | None = None,
                 pod_selector: str | None = None) -> None:
        self.kube, self.namespace, self.selector, self.port = kube, namespace, selector, port
        # Pod mode: EndpointSlices refuse loopback addresses, so dev clusters with 127.x pod IPs list pods.
        self.pod_selector = pod_selector
        self.router, self.interval, self.on_change = router, interval, on_change
        self._task: asyncio.Task[None] | None = None
        self.current: list[str] = []

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def refresh(self) -> None:
        try:
            if self.pod_selector:
                pods = await asyncio.to_thread(self.kube.list, "v1", "Pod", self.namespace, self.pod_selector)
                urls = ready_pod_urls(pods, self.port)
            else:
                slices = await asyncio.to_thread(self.kube.list, "discovery.k8s.io/v1", "EndpointSlice",
                                                 self.namespace, self.selector)
                urls = ready_urls(slices, self.port)
        except KubeError as exc:
            log.warning("endpoint discovery failed (%s); keeping %d endpoints", exc, len(self.current))
            return
        if urls != self.current:
            log.info("engine endpoints: %s", urls)
            self.current = urls
            self.router.set_endpoints(urls)
            if self.on_change:
                self.on_change(urls)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()
