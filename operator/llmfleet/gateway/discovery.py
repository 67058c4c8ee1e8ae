"""Engine endpoints for the router: a static list, or the engine Service's EndpointSlices, watched.

Only endpoints that are ready and not terminating get requests. A terminating endpoint may still be
``serving`` (vLLM finishes its in-flight requests during its drain), but vLLM answers new work during the
drain with HTTP 500 or an aborted completion, so the gateway sends it none, not even as a last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmfleet.fleet import pods as fleet_pods
from llmfleet.gateway.routing import Router
from llmfleet.kube.port import KubeError, Obj

if TYPE_CHECKING:
    from llmfleet.kube.client import KubeClient

log = logging.getLogger("llmfleet.gateway.discovery")


def engine_url(addr: str, port: int) -> str:
    return f"http://[{addr}]:{port}" if ":" in addr else f"http://{addr}:{port}"


def ready_urls(slices: list[Obj], port: int) -> list[str]:
    """Addresses of endpoints that are ready (an absent ``ready`` means ready) and not terminating."""
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
    return sorted({engine_url(p["status"]["podIP"], port) for p in pods if fleet_pods.serving(p)})


class EndpointSliceWatcher:
    """Keeps the router's endpoints equal to the engine Service's ready endpoints, from a watch: a change
    (a pod turning unready, a terminating pod, a new replica) reaches the router within a round trip, and
    an idle fleet costs the API server one open request per gateway replica, not a list every 2 s.

    The watch runs in a thread (the client is synchronous) and hands each snapshot to the event loop. When
    it fails the endpoints are kept and it starts again after a growing pause (``backoff`` up to 30 s).
    """

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        selector: str,
        port: int,
        router: Router,
        on_change: Callable[[list[str]], None] | None = None,
        pod_selector: str | None = None,
        backoff: float = 1.0,
        watch_timeout_s: int = 300,
    ) -> None:
        self.kube, self.namespace, self.selector, self.port = kube, namespace, selector, port
        # Pod mode: EndpointSlices refuse loopback addresses, so dev clusters with 127.x pod IPs watch pods.
        self.pod_selector = pod_selector
        self.router, self.on_change = router, on_change
        self.backoff, self.watch_timeout_s = backoff, watch_timeout_s
        self.current: list[str] = []
        self.synced = asyncio.Event()  # set once the first list has arrived
        self._stop = threading.Event()

    async def start(self) -> None:
        """Start watching; returns once the first list is in (or failed: the gateway then starts with no
        engines and the watch keeps trying)."""
        threading.Thread(
            target=self._run, args=(asyncio.get_running_loop(),), name="endpoint-watch", daemon=True
        ).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.synced.wait(), 10)

    async def stop(self) -> None:
        self._stop.set()  # the thread ends at its next event or when the server ends the watch

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        kind, selector = ("Pod", self.pod_selector) if self.pod_selector else ("EndpointSlice", self.selector)
        pause = self.backoff
        while not self._stop.is_set():
            try:
                for objs in self.kube.watch_snapshots(kind, self.namespace, selector, self.watch_timeout_s):
                    if self._stop.is_set():
                        return
                    urls = (
                        ready_pod_urls(objs, self.port) if self.pod_selector else ready_urls(objs, self.port)
                    )
                    try:
                        loop.call_soon_threadsafe(self._update, urls)
                    except RuntimeError:  # the event loop is closed: the gateway has stopped
                        return
                    pause = self.backoff
            except KubeError as exc:
                log.warning(
                    "endpoint watch failed (%s); keeping %d endpoints, again in %.0f s",
                    exc,
                    len(self.current),
                    pause,
                )
                self._stop.wait(pause)
                pause = min(pause * 2, 30.0)

    def _update(self, urls: list[str]) -> None:
        self.synced.set()
        if urls != self.current:
            log.info("engine endpoints: %s", urls)
            self.current = urls
            self.router.set_endpoints(urls)
            if self.on_change:
                self.on_change(urls)
