"""A shared view of engine load across gateway replicas: each replica's GET /load, polled.

vLLM's /load (``--enable-server-load-tracking``, which the operator renders) counts the requests in flight on
that engine's API server from every client. A gateway sees its own requests at once (Router.begin/end); what
the other gateways have there is the engine's count less this gateway's own at the moment of the answer,
refreshed every ``interval`` (250 ms rendered): enough for two gateways not to pick the same idle replica,
without a shared store on the hot path. An engine that does not answer keeps its last figure for one round,
then 0 (the router's failure handling ejects it, not this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import orjson

from llmfleet.gateway.routing import Endpoint, Router

log = logging.getLogger("llmfleet.gateway.load")


class LoadPoller:
    def __init__(self, routers: list[Router], interval: float, timeout: float = 0.5) -> None:
        self.routers, self.interval, self.timeout = routers, interval, timeout
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._misses: dict[str, int] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> None:
        eps = [ep for r in self.routers for ep in r.endpoints.values()]
        live = {ep.url for ep in eps}
        for url in [u for u in self._misses if u not in live]:  # engines discovery dropped
            del self._misses[url]
        await asyncio.gather(*(self._one(ep) for ep in eps))

    async def _one(self, ep: Endpoint) -> None:
        assert self._session is not None
        url = ep.url
        try:
            async with self._session.get(url + "/load") as resp:
                data = orjson.loads(await resp.read()) if resp.status == 200 else None
            load = int(data["server_load"]) if isinstance(data, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            load = None
        if load is None:
            misses = self._misses[url] = self._misses.get(url, 0) + 1
            if misses > 1:
                ep.others = 0
            return
        self._misses[url] = 0
        ep.others = max(0, load - ep.outstanding)
