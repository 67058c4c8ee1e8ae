"""The gateway's ASGI application: client ← SSE ← gateway ← engines (or the managed API for general traffic).

Hot path, in order: auth (hash lookup) → body (whole, size-capped by the server) → one JSON parse →
sensitivity → limits → cache → route → upstream (gateway.upstream's keep-alive pool; aiohttp for the
managed API) → bytes passed through unchanged (streams are not re-serialised per chunk). A client
disconnect closes the upstream connection at once, which aborts the request in vLLM. A request is retried
on another replica only before its first byte reached the client. ASGI-shaped http calls, no middleware,
served by gateway.http, which also hands over the whole request body (``llmfleet.body``), reports a
client's disconnect by callback (``llmfleet.on_disconnect``) and runs startup/shutdown itself.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from prometheus_client import generate_latest

from llmfleet.gateway.auth import Key, KeyStore
from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.limits import Limiter
from llmfleet.gateway.routing import Endpoint, Router
from llmfleet.gateway.sensitivity import Classifier
from llmfleet.gateway.telemetry import Telemetry, now_iso
from llmfleet.gateway.upstream import Pool, Response

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Request fields that could redirect traffic or smuggle credentials (LiteLLM-style and SDK-style names).
FORBIDDEN_FIELDS = ("api_base", "base_url", "api_key", "api_version", "custom_llm_provider", "extra_headers",
                    "organization", "user_config", "metadata_url")
FORBIDDEN = frozenset(FORBIDDEN_FIELDS)
JSON = b"application/json"
MAX_ATTEMPTS = 3
RETRYABLE_STATUS = (502, 503, 504)


def error_body(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class RetryUpstream(Exception):
    """The upstream failed before anything reached the client: another replica may take the request."""


class Reply(Exception):
    """Stop handling and answer with this status and OpenAI-style error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.body, self.headers = status, error_body(status, message, type_, code, param), headers or []


def message_text(body: dict[str, Any]) -> str:
    """All user-visible text of a request (for detectors and prefix hashing)."""
    msgs = body.get("messages")
    if isinstance(msgs, list):
        parts = []
        for m in msgs:
            if isinstance(m, dict):
                c = m.get("content")
                if isinstance(c, str):
                    parts.append(c)
                elif isinstance(c, list):
                    parts.extend(str(p.get("text", "")) for p in c if isinstance(p, dict))
        return "\n".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


@dataclass(slots=True)
class Ctx:
    request_id: str
    key: Key | None
    started: float
    route: str = "self-hosted"
    why: str = ""
    status: int = 0
    endpoint: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None
    stream: bool = False
    cache: str = "off"
    sensitive: bool = True  # unclassified requests never leave the cluster
    cache_store: bool = False  # the response may be stored in the cache once complete
    cache_embedding: Any = None  # (vector, query, context) computed at lookup, reused when storing
    upstream: Any = None  # the upstream response in progress (closed at once if the client leaves)
    gone: bool = False  # the client disconnected

    def set_upstream(self, resp: Any) -> None:
        self.upstream = resp
        if self.gone:
            resp.close()

    def client_left(self) -> None:
        self.gone = True
        if self.upstream is not None:
            self.upstream.close()  # drops the upstream connection: vLLM aborts the request


class _TaskCanceller:
    """Stands for a request to the managed API until its response head is in: closing it cancels the task."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


class ExternalResponse:
    """The managed API's aiohttp response behind the interface of `upstream.Response` (what `_relay` uses)."""

    __slots__ = ("_r", "content_type", "status")

    def __init__(self, r: aiohttp.ClientResponse) -> None:
        self._r, self.status = r, r.status
        self.content_type = r.headers.get("Content-Type", "application/json").encode()

    async def read(self) -> bytes:
        return await self._r.read()

    async def readany(self) -> bytes:
        return await self._r.content.readany()

    def close(self) -> None:
        self._r.close()

    def release(self) -> None:
        self._r.release()


class Gateway:
    def __init__(self, cfg: GatewayConfig, keys: KeyStore, limiter: Limiter, router: Router,
                 classifier: Classifier, telemetry: Telemetry, cache: Any = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.cfg, self.keys, self.limiter, self.router = cfg, keys, limiter, router
        self.classifier, self.telemetry, self.cache, self.clock = classifier, telemetry, cache, clock
        self.pool: Pool | None = None
        self.external_session: aiohttp.ClientSession | None = None
        ext = cfg.external
        self.external_key = ext.api_key or (os.environ.get(ext.api_key_env) if ext.api_key_env else None)
        self.sensitivity_header = cfg.sensitivity.header.lower().encode()
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        self.pool = Pool(self.cfg.upstream_timeout_seconds, connect_timeout=2.0)
        timeout = aiohttp.ClientTimeout(total=self.cfg.upstream_timeout_seconds, sock_connect=2.0)
        if self.cfg.external.use != "never" and self.cfg.external.base_url:
            self.external_session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        for fn in self.on_startup:
            await fn()

    async def shutdown(self) -> None:
        for fn in self.on_shutdown:
            await fn()
        if self.pool is not None:
            self.pool.close()
        if self.external_session is not None:
            await self.external_session.close()
        self.telemetry.flush()

    # ------------------------------------------------------------------ ASGI entry

    async def _plain(self, send: Send, status: int, body: bytes, ctype: bytes = JSON,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            await self.completion(scope, send, path)
        elif path == "/health" or path == "/healthz":
            await self._plain(send, 200, b"ok", b"text/plain")
        elif path == "/metrics":
            await self._plain(send, 200, generate_latest(self.telemetry.registry), b"text/plain; version=0.0.4")
        elif path == "/v1/models" and method == "GET":
            headers = dict(scope["headers"])
            if self.keys.enabled and self._auth(headers) is None:
                await self._plain(send, 401, _unauthorized().body)
                return
            body = {"object": "list", "data": [{"id": self.cfg.model, "object": "model", "created": 0, "owned_by": "llmfleet"}]}
            await self._plain(send, 200, orjson.dumps(body))
        else:
            await self._plain(send, 404, error_body(404, f"Unknown route {method} {path}", "invalid_request_error",
                                                    "not_found"))

    __call__ = http  # the server calls the instance: no extra coroutine layer per request

    def _auth(self, headers: dict[bytes, bytes]) -> Key | None:
        raw = headers.get(b"authorization")
        if not raw or raw[:7].lower() != b"bearer ":
            return None
        return self.keys.check(raw[7:].strip())

    # ------------------------------------------------------------------ completions

    async def completion(self, scope: Scope, send: Send, path: str) -> None:
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id")
        # A new ID is a 64-bit random hex string: not a secret, so no getrandom() syscall per request.
        ctx = Ctx(request_id=rid.decode("latin-1")[:64] if rid else f"{random.getrandbits(64):016x}", key=None,
                  started=self.clock())
        tel = self.telemetry
        tel.in_flight.inc()
        reserved = 0
        try:
            if self.keys.enabled:
                ctx.key = self._auth(headers)
                if ctx.key is None:
                    raise _unauthorized()
            body_bytes: bytes = scope["extensions"]["llmfleet.body"]  # whole, within max_body (gateway.http: 413)
            try:
                body = orjson.loads(body_bytes)
            except orjson.JSONDecodeError as exc:
                raise Reply(400, f"We could not parse the JSON body of your request: {exc}") from None
            if not isinstance(body, dict):
                raise Reply(400, "The request body must be a JSON object.")
            model = body.get("model")
            if model != self.cfg.model:
                raise Reply(404, f"The model `{model}` does not exist or you do not have access to it.",
                            code="model_not_found", param="model")
            if path.endswith("chat/completions") and not isinstance(body.get("messages"), list):
                raise Reply(400, "'messages' is a required property and must be an array.", param="messages")
            if not FORBIDDEN.isdisjoint(body):
                for f in FORBIDDEN_FIELDS:
                    body.pop(f, None)
                body_bytes = orjson.dumps(body)
            ctx.stream = bool(body.get("stream"))
            max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 256
            if not isinstance(max_tokens, int) or max_tokens < 1:
                raise Reply(400, "max_tokens must be a positive integer.", param="max_tokens")
            ctx.prompt_tokens = max(1, len(body_bytes) // 4)
            text = message_text(body)

            ext = self.cfg.external
            if ext.use != "never":
                ctx.route, ctx.why, ctx.sensitive = self._choose_route(headers, text)
            tenant = ctx.key.name if ctx.key else "anonymous"
            reserved = ctx.prompt_tokens + max_tokens
            decision = await self.limiter.acquire(tenant, reserved)
            rl_headers = decision.headers()
            if not decision.allowed:
                reserved = 0
                kind = "requests" if decision.remaining_requests <= 0 else "tokens"
                raise Reply(429, f"Rate limit reached for {kind} per minute on key '{tenant}'. "
                            f"Please try again in {decision.retry_after:.1f}s.", kind, "rate_limit_exceeded",
                            headers=rl_headers)
            extra = [(b"x-request-id", ctx.request_id.encode()), *rl_headers]

            if self.cache is not None:
                served = await self.cache.serve(ctx, tenant, path, body, headers, send, extra)
                if served:
                    return
                extra.append((b"x-llmfleet-cache", ctx.cache.encode()))
            # From here until the answer is sent, a client that leaves closes the upstream request at once (vLLM
            # aborts it), also while waiting for a non-streaming answer, which arrives in one piece at the end.
            scope["extensions"]["llmfleet.on_disconnect"](ctx.client_left)
            if ctx.route == "external":
                await self._external(ctx, path, body, send, extra)
            else:
                await self._self_hosted(ctx, path, body, body_bytes, text, send, extra, tenant)
        except Reply as r:
            ctx.status = r.status
            await self._plain(send, r.status, r.body, JSON, [(b"x-request-id", ctx.request_id.encode()), *r.headers])
        finally:
            tel.in_flight.dec()
            if reserved:
                tenant = ctx.key.name if ctx.key else "anonymous"
                actual = ctx.prompt_tokens + ctx.completion_tokens if ctx.status == 200 else 0
                await self.limiter.settle(tenant, reserved, actual)
            self._finish(ctx)

    def _choose_route(self, headers: dict[bytes, bytes], text: str) -> tuple[str, str, bool]:
        """(route, why, sensitive). Sensitive traffic only ever goes to self-hosted engines."""
        cls, why = self.classifier.classify(headers.get(self.sensitivity_header), text)
        if cls == "sensitive":
            return "self-hosted", why, True
        if self.cfg.external.use == "general":
            return "external", why, False
        available = self.router.available()
        limit = self.cfg.external.overflow_outstanding_per_replica * len(available)
        if not available or self.router.outstanding >= limit:
            return "external", "overflow", False
        return "self-hosted", why, False

    # ------------------------------------------------------------------ upstreams

    async def _self_hosted(self, ctx: Ctx, path: str, body: dict[str, Any], body_bytes: bytes, text: str,
                           send: Send, extra: list[tuple[bytes, bytes]], tenant: str) -> None:
        assert self.pool is not None
        tel = self.telemetry
        prefix = text[:512].encode()
        tried: set[str] = set()
        for _attempt in range(MAX_ATTEMPTS):
            if ctx.gone:
                ctx.status = 499
                return
            ep = self.router.pick(prefix, tried)
            if ep is None:
                break
            tried.add(ep.url)
            self.router.begin(ep)
            try:
                resp = await self.pool.post(ep.url, path, body_bytes, ctx.request_id, ctx.set_upstream)
            except (TimeoutError, OSError):
                self.router.end(ep)
                if ctx.gone:  # closed because the client left: the engine is fine
                    ctx.status = 499
                    return
                self.router.fail(ep)
                tel.upstream_errors.labels("self-hosted", "connect").inc()
                continue
            if resp.status in RETRYABLE_STATUS:
                resp.release()
                self.router.end(ep)
                self.router.fail(ep)
                tel.upstream_errors.labels("self-hosted", f"http_{resp.status}").inc()
                continue
            try:
                ctx.endpoint = ep.url
                await self._relay(ctx, resp, send, extra + [(b"x-llmfleet-route", b"self-hosted")], tenant, path, body)
                self.router.ok(ep)
                ep.served += 1
            except RetryUpstream:
                self.router.fail(ep)
                tel.upstream_errors.labels("self-hosted", "reset").inc()
                continue
            finally:
                self.router.end(ep)
            return
        # Nothing self-hosted could take it: general traffic may overflow, sensitive traffic fails closed.
        if not ctx.sensitive and self.cfg.external.use != "never":
            ctx.route, ctx.why = "external", "overflow"
            await self._external(ctx, path, body, send, extra)
            return
        raise Reply(503, "No self-hosted engine replica is available; sensitive requests are never sent to an "
                    "external provider. Retry shortly.", "server_error", "no_healthy_upstream",
                    headers=[(b"retry-after", b"2")])

    async def _external(self, ctx: Ctx, path: str, body: dict[str, Any], send: Send,
                        extra: list[tuple[bytes, bytes]]) -> None:
        ext = self.cfg.external
        if self.external_session is None or not ext.base_url:
            raise Reply(503, "No external provider is configured.", "server_error", "no_healthy_upstream")
        out = dict(body)
        out["model"] = ext.model
        headers = {"Content-Type": "application/json", "X-Request-Id": ctx.request_id}
        if self.external_key:
            headers["Authorization"] = f"Bearer {self.external_key}"
        # Until the provider's response head arrives (for a non-streaming request, the whole generation), a
        # client that leaves cancels the request task here: aiohttp then closes the provider's connection.
        canceller = _TaskCanceller(asyncio.current_task())
        ctx.set_upstream(canceller)
        try:
            resp = ExternalResponse(await self.external_session.post(ext.base_url.rstrip("/") + path[len("/v1"):],
                                                                     data=orjson.dumps(out), headers=headers))
        except asyncio.CancelledError:
            if not ctx.gone:
                raise
            ctx.status = 499
            return
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.telemetry.upstream_errors.labels("external", "connect").inc()
            raise Reply(502, f"The external provider could not be reached: {type(exc).__name__}", "server_error",
                        "upstream_unreachable") from None
        finally:
            canceller.task = None  # from here on, a client that leaves cancels nothing (the response is closed)
        ctx.endpoint = ext.base_url
        try:
            await self._relay(ctx, resp, send, extra + [(b"x-llmfleet-route", b"external")], None, path, body)
        except RetryUpstream:
            raise Reply(502, "The external provider closed the connection before answering.", "server_error",
                        "upstream_reset") from None

    async def _relay(self, ctx: Ctx, resp: Response | ExternalResponse, send: Send, extra: list[tuple[bytes, bytes]],
                     tenant: str | None, path: str, body: dict[str, Any]) -> None:
        """Pass the upstream response to the client (closed at once if the client goes away: Ctx.client_left)."""
        ctx.status = resp.status
        ctype = resp.content_type
        ctx.set_upstream(resp)
        captured: list[bytes] | None = [] if (ctx.cache_store and resp.status == 200 and tenant) else None
        complete = False
        try:
            if not ctx.stream or not ctype.startswith(b"text/event-stream"):
                try:
                    data = await resp.read()
                except (TimeoutError, aiohttp.ClientError, OSError):
                    if ctx.gone:
                        raise
                    raise RetryUpstream() from None
                ctx.ttft = self.clock() - ctx.started
                await self._plain(send, resp.status, data, ctype, extra)
                if resp.status == 200:
                    self._usage_from_json(ctx, data)
                    if captured is not None:
                        captured.append(data)
                complete = True
            else:
                # Hold the response start until the first chunk: until then a failed replica can be retried.
                try:
                    head = await resp.readany()
                except (TimeoutError, aiohttp.ClientError, OSError):
                    if ctx.gone:
                        raise
                    raise RetryUpstream() from None
                if not head:
                    raise RetryUpstream()
                await send({"type": "http.response.start", "status": resp.status, "headers": [
                    (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *extra]})
                chunks = 0
                last = b""
                first_at = 0.0
                chunk = head
                while chunk:
                    if not first_at:
                        first_at = self.clock()
                        ctx.ttft = first_at - ctx.started
                    chunks += chunk.count(b"data: ")
                    last = chunk
                    if captured is not None:
                        captured.append(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    chunk = await resp.readany()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                complete = last.rstrip().endswith(b"[DONE]")
                ctx.completion_tokens = max(0, chunks - 2)
                if b'"usage"' in last:
                    self._usage_from_sse(ctx, last)
                if chunks > 3 and first_at:
                    self.telemetry.itl.labels(ctx.route).observe((self.clock() - first_at) / (chunks - 3))
                if not complete:
                    self.telemetry.upstream_errors.labels(ctx.route, "cut").inc()
        except (TimeoutError, aiohttp.ClientError, OSError):
            ctx.status = 499 if ctx.gone else 502
            self.telemetry.upstream_errors.labels(ctx.route, "cut").inc()
        finally:
            resp.release()
        if complete and captured is not None and self.cache is not None and tenant:
            await self.cache.store(ctx, tenant, path, body, b"".join(captured))

    @staticmethod
    def _usage_from_json(ctx: Ctx, data: bytes) -> None:
        try:
            usage = orjson.loads(data).get("usage") or {}
            ctx.prompt_tokens = int(usage.get("prompt_tokens", ctx.prompt_tokens))
            ctx.completion_tokens = int(usage.get("completion_tokens", 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            pass

    @staticmethod
    def _usage_from_sse(ctx: Ctx, chunk: bytes) -> None:
        for line in chunk.split(b"\n"):
            if line.startswith(b"data: {") and b'"usage"' in line:
                try:
                    usage = orjson.loads(line[6:]).get("usage") or {}
                    ctx.prompt_tokens = int(usage.get("prompt_tokens", ctx.prompt_tokens))
                    ctx.completion_tokens = int(usage.get("completion_tokens", ctx.completion_tokens))
                except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                    pass

    def _finish(self, ctx: Ctx) -> None:
        tel = self.telemetry
        duration = self.clock() - ctx.started
        key_label = ctx.key.label if ctx.key else "-"
        tel.requests.labels(ctx.route, str(ctx.status), key_label).inc()
        rt = tel.route(ctx.route)
        rt.duration.observe(duration)
        if ctx.ttft is not None:
            rt.ttft.observe(ctx.ttft)
        if ctx.status == 200:
            rt.prompt_tokens.inc(ctx.prompt_tokens)
            rt.completion_tokens.inc(ctx.completion_tokens)
        if self.cfg.access_log:
            tel.log({
                "ts": now_iso(), "request_id": ctx.request_id, "key": key_label, "model": self.cfg.model,
                "route": ctx.route, "why": ctx.why, "status": ctx.status, "stream": ctx.stream,
                "endpoint": ctx.endpoint, "cache": ctx.cache, "prompt_tokens": ctx.prompt_tokens,
                "completion_tokens": ctx.completion_tokens,
                "ttft_ms": round(ctx.ttft * 1000, 2) if ctx.ttft is not None else None,
                "duration_ms": round(duration * 1000, 2),
            })


def _unauthorized() -> Reply:
    return Reply(401, "Incorrect API key provided. You can find your API key in your llmfleet Secret.",
                 "invalid_request_error", "invalid_api_key")


__all__ = ["Endpoint", "Gateway", "Reply"]
