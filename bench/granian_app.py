"""The gateway behind granian's RSGI interface, for `bench/gateway.py --granian`: the measurement the choice of
HTTP front end rests on (gateway.http, our own server, against a well-kept Rust server).

    LLMFLEET_GATEWAY_CONFIG=gw.json LLMFLEET_GATEWAY_KEYS=keys granian --interface rsgi bench.granian_app:app

The adapter turns RSGI calls into the ASGI-shaped calls the gateway takes (the whole body in
``llmfleet.body``, a disconnect callback) and the gateway's ASGI messages back into RSGI responses.
"""

from __future__ import annotations

import asyncio
import os
from argparse import Namespace
from typing import Any

from llmfleet.gateway.server import build, tune_gc


class RSGIGateway:
    def __init__(self) -> None:
        args = Namespace(
            config=os.environ["LLMFLEET_GATEWAY_CONFIG"],
            model=None,
            engine=[],
            keys_file=os.environ.get("LLMFLEET_GATEWAY_KEYS"),
            redis_url=None,
            no_access_log=False,
        )
        self.gw, _ = build(args)
        self.started: asyncio.Task[None] | None = None
        tune_gc()

    def __rsgi_init__(self, loop: Any) -> None:
        pass

    def __rsgi_del__(self, loop: Any) -> None:
        pass

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if self.started is None:
            self.started = asyncio.get_running_loop().create_task(self.gw.startup())
        await self.started
        body = await proto()
        callbacks: list[Any] = []
        state: dict[str, Any] = {"status": 200, "headers": [], "stream": None}
        asgi_scope = {
            "type": "http",
            "method": scope.method,
            "path": scope.path,
            "query_string": scope.query_string.encode(),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
            "http_version": scope.http_version,
            "extensions": {"llmfleet.body": body, "llmfleet.on_disconnect": callbacks.append},
        }

        async def watch() -> None:
            await proto.client_disconnect()
            for cb in callbacks:
                cb()

        watcher = asyncio.get_running_loop().create_task(watch())

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["headers"] = [
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())
                ]
                return
            data, more = message.get("body", b""), message.get("more_body", False)
            if state["stream"] is None and not more:
                proto.response_bytes(state["status"], state["headers"], data)
                return
            if state["stream"] is None:
                state["stream"] = proto.response_stream(state["status"], state["headers"])
            if data:
                await state["stream"].send_bytes(data)

        try:
            await self.gw.http(asgi_scope, _no_receive, send)
        finally:
            watcher.cancel()


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


app = RSGIGateway()
