"""The gateway's ASGI application: client ← SSE ← gateway ← engines (or the managed API for general traffic).

A completion goes through named stages, each with a typed result, sequenced by `Gateway.completion` alone:
read (one pass over the headers into a slotted `Request`) → authenticate (`Key`) → parse (the body, once,
with orjson) → admit (the per-key limits' `Decision`, before any content scan) → classify and route (`Verdict` over
every leaf of the body that would be forwarded; in overflow mode only once the engines are saturated or have
failed, the only times it could leave) → cache (`CacheHit` or a miss) → dispatch (self-hosted
engines through gateway.upstream's keep-alive pool, or the managed API through aiohttp) → relay, whole or
streamed (bytes passed through unchanged) → settle (the tokens actually generated are charged). Once a stream's
head has reached the client, the rest goes from the engine connection's read callback straight to the client's
transport (`_Stream`: upstream.Response.pipe → the server's ``llmfleet.writer``), one write per engine read,
with no task wake-up and no ASGI message per chunk, and back-pressure both ways (a client that stops reading
pauses the engine socket). Measured on bench/scale.py (a token every 25 ms per stream, 200 and 400 streams,
one pinned core, medians of three runs in one A/B): 20.4 µs of CPU per chunk against 26.1 µs for the
task-driven loop it replaced and 12.9 µs for a byte relay that parses nothing (1.58× the floor, was 1.94×);
what is left is Python's own per-call cost across the read, the checks and the write. A client
disconnect closes the upstream connection at once, which aborts the request in vLLM. A request is retried on
another replica only before its first byte reached the client: after a connect error, a reset, a 500/502-504,
or vLLM's answer to a request it will not run (`finish_reason: "abort"` before any text: what an engine that is
shutting down answers); up to three attempts that reached an engine, while refused connections and abort
answers (nothing generated: a replica not listening yet, or leaving) move on to the next replica for free. A stream that does not end the
way the engine meant (no `[DONE]`, cut, or aborted by a shutting-down engine) ends with an SSE error event,
never as a normal end. Token counts are the engine's own usage (asked for when the client did not, and then
stripped from what the client gets).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from prometheus_client import generate_latest

from llmfleet import wire
from llmfleet.cache.entries import as_json, as_sse
from llmfleet.gateway.auth import Key, KeyStore
from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.limits import Decision, Limiter
from llmfleet.gateway.models import Member, ModelRoute
from llmfleet.gateway.output import OutputPolicy, asked_field, changes, decide, for_key
from llmfleet.gateway.routing import Endpoint, Router
from llmfleet.gateway.sensitivity import Classifier, Verdict
from llmfleet.gateway.telemetry import Telemetry, now_iso
from llmfleet.gateway.tracing import Tracing
from llmfleet.gateway.upstream import Pool, Response
from llmfleet.modelroute import WHY_EXPLICIT, WHY_SENSITIVE

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


class Writer(Protocol):
    """gateway.http's ``llmfleet.writer`` scope extension: a started response's body written directly."""

    def write(self, body: bytes) -> bool: ...

    def on_writable(self, callback: Callable[[], None]) -> None: ...


# Request fields that could redirect traffic or smuggle credentials (LiteLLM-style and SDK-style names).
FORBIDDEN_FIELDS = (
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "custom_llm_provider",
    "extra_headers",
    "organization",
    "user_config",
    "metadata_url",
)
FORBIDDEN = frozenset(FORBIDDEN_FIELDS)
JSON = wire.JSON_CONTENT_TYPE
MAX_ATTEMPTS = 3
# 500: vLLM's GenerationError ("a retryable request-level internal error" in its own words).
RETRYABLE_STATUS = (500, 502, 503, 504)
ABORTED = b'"finish_reason":"abort"'  # vLLM's finish reason for a request its engine aborted
ERROR_EVENT = b'data: {"error"'  # vLLM's in-stream error event (json.dumps: `{"error": {...}}`), then [DONE]
DONE_EVENT = b"data: [DONE]"
USAGE = b'"usage":{'  # a usage object in a stream event (orjson and pydantic write no space after the colon)
DEFAULT_MAX_TOKENS = 256  # reserved against the token limit when a request names none

# Routes, as the response header, metrics and the access log name them.
SELF_HOSTED, EXTERNAL, CACHE = "self-hosted", "external", "cache"
WHY_OVERFLOW = "overflow"
WHY_CAPACITY = "capacity"  # overflow mode with room on the engines: self-hosted, nothing to classify


def error_body(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> bytes:
    """An OpenAI-style error body (the status is the caller's: the body does not carry it)."""
    return wire.error_body(message, type_, code, param)


class RetryUpstream(Exception):
    """The upstream failed before anything reached the client: another replica may take the request."""


class Reply(Exception):
    """Stop handling and answer with this status and OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = wire.INVALID_REQUEST,
        code: str | None = None,
        param: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.body, self.headers = (
            status,
            wire.error_body(message, type_, code, param),
            headers or [],
        )


class Request:
    """What the stages read of one completion request: headers gathered in one pass, the body parsed once."""

    __slots__ = (
        "authorization",
        "body",
        "body_bytes",
        "cache_control",
        "cache_opt_in",
        "chat",
        "max_tokens",
        "path",
        "pinned",
        "request_id",
        "sensitivity",
        "clamped_from",
        "set_max_tokens",
        "stream",
        "strip_usage",
        "traceparent",
        "tracestate",
    )

    def __init__(self, path: str, raw_headers: Headers, body_bytes: bytes, sensitivity_header: bytes) -> None:
        self.path = path
        self.chat = path.endswith("chat/completions")
        self.body_bytes = body_bytes
        self.body: dict[str, Any] = {}
        self.authorization: list[bytes] = []
        self.sensitivity: list[bytes] = []  # every value of every field of the sensitivity header
        self.request_id: bytes | None = None
        self.cache_control: bytes | None = None
        self.cache_opt_in: bytes | None = None
        self.traceparent: bytes | None = None  # W3C trace context, read only when tracing is on
        self.tracestate: bytes | None = None
        self.stream = False
        self.strip_usage = False  # the engine is asked for the usage chunk the client did not ask for
        self.max_tokens = DEFAULT_MAX_TOKENS
        self.set_max_tokens: int | None = None  # what the output policy set, when it set anything
        self.clamped_from: int | None = None  # what the client asked for, when the policy clamped it
        self.pinned: Member | None = None  # the route member the client named by its model name
        for name, value in raw_headers:
            if name == b"authorization":
                self.authorization.append(value)
            elif name == sensitivity_header:
                self.sensitivity.append(value)
            elif name == b"x-request-id":
                self.request_id = value
            elif name == b"cache-control":
                self.cache_control = value
            elif name == b"x-llmfleet-cache":
                self.cache_opt_in = value
            elif name == b"traceparent":
                self.traceparent = value
            elif name == b"tracestate":
                self.tracestate = value


@dataclass(slots=True)
class Ctx:
    request_id: str
    key: Key | None
    started: float
    route: str = SELF_HOSTED
    why: str = ""
    status: int = 0
    endpoint: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_seen: bool = False  # the counts are the engine's own usage, not an estimate
    ttft: float | None = None
    stream: bool = False
    cache: str = "off"
    sensitive: bool = True  # unclassified requests never leave the cluster
    classified: bool = False
    cache_store: bool = False  # the response may be stored in the cache once complete
    cache_embedding: Any = None  # (vector, query, context) computed at lookup, reused when storing
    # (cached answer, similarity) of a semantic candidate checked against this request's answer
    cache_verify: Any = None
    upstream: Any = None  # the upstream response in progress (closed at once if the client leaves)
    gone: bool = False  # the client disconnected
    answered: bool = False  # an upstream answered 200: what it generated is charged, whoever ends the request
    span: Any = None  # the request's OpenTelemetry span when tracing is on (gateway/tracing.py)
    model: str = ""  # the route member that served (spec.routing); "" without a route
    writer: Writer | None = None  # the server's direct writer (gateway.http's llmfleet.writer), if it has one

    @property
    def tenant(self) -> str:
        return self.key.name if self.key else "anonymous"

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
    """The managed API's aiohttp response behind the interface of `upstream.Response` (what the relay uses)."""

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
    def __init__(
        self,
        cfg: GatewayConfig,
        keys: KeyStore,
        limiter: Limiter,
        router: Router,
        classifier: Classifier,
        telemetry: Telemetry,
        cache: Any = None,
        clock: Callable[[], float] = time.perf_counter,
        tracing: Tracing | None = None,
        model_route: ModelRoute | None = None,
    ) -> None:
        self.cfg, self.keys, self.limiter, self.router = cfg, keys, limiter, router
        self.tracing = tracing
        self.model_route = model_route
        self.classifier, self.telemetry, self.cache, self.clock = classifier, telemetry, cache, clock
        self.pool: Pool | None = None
        self.external_session: aiohttp.ClientSession | None = None
        ext = cfg.external
        self.external_key = ext.api_key or (os.environ.get(ext.api_key_env) if ext.api_key_env else None)
        self.sensitivity_header = cfg.sensitivity.header.lower().encode()
        out = cfg.output_tokens
        self.output_policy = OutputPolicy(out.default, out.max)
        self.output_per_key = {k: OutputPolicy(v.default, v.max) for k, v in out.keys.items()}
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
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports what is queued

    # ------------------------------------------------------------------ ASGI entry

    async def _plain(
        self, send: Send, status: int, body: bytes, ctype: bytes = JSON, headers: Headers | None = None
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            await self.completion(scope, send, path)
        elif path == "/health" or path == "/healthz":
            await self._plain(send, 200, b"ok", b"text/plain")
        elif path == "/metrics":
            await self._plain(
                send, 200, generate_latest(self.telemetry.registry), b"text/plain; version=0.0.4"
            )
        elif path == "/v1/models" and method == "GET":
            try:
                self.authenticate([v for n, v in scope["headers"] if n == b"authorization"])
            except Reply as r:
                await self._plain(send, r.status, r.body)
                return
            body = {
                "object": "list",
                "data": [{"id": self.cfg.model, "object": "model", "created": 0, "owned_by": "llmfleet"}],
            }
            await self._plain(send, 200, orjson.dumps(body))
        else:
            await self._plain(
                send,
                404,
                wire.error_body(f"Unknown route {method} {path}", wire.INVALID_REQUEST, "not_found"),
            )

    __call__ = http  # the server calls the instance: no extra coroutine layer per request

    # ------------------------------------------------------------------ stages

    def authenticate(self, authorization: list[bytes]) -> Key | None:
        """The key of the request's one bearer token (None when auth is off); 401 for none or a wrong one, 400
        for several Authorization headers (which one counts would depend on who reads them)."""
        if not self.keys.enabled:
            return None
        if len(authorization) > 1:
            raise Reply(
                400,
                "The request has more than one Authorization header; send exactly one.",
                code="duplicate_authorization",
                param="Authorization",
            )
        raw = authorization[0] if authorization else b""
        if raw[:7].lower() != b"bearer ":
            raise _unauthorized()
        key = self.keys.check(raw[7:].strip())
        if key is None:
            raise _unauthorized()
        return key

    def parse(self, req: Request, key: Key | None = None) -> None:
        """The body, once: a JSON object for the served model, with a positive max_tokens; fields that could
        redirect traffic are dropped, the key's output-length policy applied (and the bytes to forward
        re-encoded only when either changed them)."""
        try:
            body = orjson.loads(req.body_bytes)
        except orjson.JSONDecodeError as exc:
            raise Reply(400, f"We could not parse the JSON body of your request: {exc}") from None
        if not isinstance(body, dict):
            raise Reply(400, "The request body must be a JSON object.")
        req.pinned = self._pinned(body.get("model"))
        if req.chat and not isinstance(body.get("messages"), list):
            raise Reply(400, "'messages' is a required property and must be an array.", param="messages")
        dirty = not FORBIDDEN.isdisjoint(body)
        if dirty:
            for f in FORBIDDEN_FIELDS:
                body.pop(f, None)
        field = asked_field(body)
        asked = body.get(field)
        if asked is not None and (type(asked) is not int or asked < 1):
            raise Reply(400, f"{field} must be a positive integer.", param=field)
        policy = (
            self.output_policy
            if not self.output_per_key
            else for_key(self.output_policy, self.output_per_key, key.name if key else None)
        )
        if policy.active:
            decision = decide(asked, field if asked is not None else None, policy)
            if decision is not None:
                body.update(changes(body, decision))
                req.set_max_tokens, req.clamped_from, asked, dirty = (
                    decision.value,
                    decision.clamped_from,
                    decision.value,
                    True,
                )
        if dirty:
            req.body_bytes = orjson.dumps(body)
        req.body, req.max_tokens, req.stream = body, asked or DEFAULT_MAX_TOKENS, bool(body.get("stream"))
        if req.stream:
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                # Token limits and telemetry need the engine's own usage (frame counts are off with tool parsers,
                # speculative decoding, --stream-interval): ask for it, and strip it from what the client gets.
                extra = options if isinstance(options, dict) else {}
                req.body_bytes = orjson.dumps({**body, "stream_options": {**extra, "include_usage": True}})
                req.strip_usage = True

    def _pinned(self, model: Any) -> Member | None:
        """The route member a request names by its model (None: it names the served model); 404 for any other."""
        if model == self.cfg.model:
            return None
        member = None if self.model_route is None else self.model_route.pinned(model)
        if member is None:
            raise Reply(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return member

    async def admit(self, ctx: Ctx, req: Request) -> Decision:
        """The per-key limits, before any content is scanned: a throttled key costs a hash lookup, no scan."""
        decision = await self.limiter.acquire(ctx.tenant, ctx.prompt_tokens + req.max_tokens)
        if not decision.allowed:
            kind = "requests" if decision.remaining_requests <= 0 else "tokens"
            raise Reply(
                429,
                f"Rate limit reached for {kind} per minute on key '{ctx.tenant}'. "
                f"Please try again in {decision.retry_after:.1f}s.",
                kind,
                "rate_limit_exceeded",
                headers=decision.headers(),
            )
        return decision

    def classify(self, ctx: Ctx, req: Request) -> Verdict:
        """Sensitive or general over the whole body that would be forwarded (every leaf), the header's values
        and the key's policy; recorded on ctx. Without an external provider nothing leaves the cluster: no
        scan is needed."""
        if self.cfg.external.use == "never":
            verdict = Verdict(True, "")
        else:
            # The request ID goes out too (X-Request-Id): it is scanned with the body.
            verdict = self.classifier.classify(
                req.sensitivity, [req.body, ctx.request_id], ctx.key.name if ctx.key else None
            )
        ctx.sensitive, ctx.classified = verdict.sensitive, True
        return verdict

    def saturated(self) -> bool:
        available = self.router.available()
        return (
            not available
            or self.router.outstanding >= self.cfg.external.overflow_outstanding_per_replica * len(available)
        )

    def route(self, ctx: Ctx, req: Request) -> tuple[str, str]:
        """(route, why): sensitive traffic only ever goes to self-hosted engines. In overflow mode a request
        is classified only when the engines are saturated, the one case where it could leave the cluster
        (3.8 µs of the gateway's ~60 µs for a typical chat request, 20-27 µs per KiB of prompt); the
        self-hosted fallback classifies it before it may overflow."""
        use = self.cfg.external.use
        if use == "overflow" and not self.saturated():
            return SELF_HOSTED, WHY_CAPACITY
        verdict = self.classify(ctx, req)
        if verdict.sensitive:
            return SELF_HOSTED, verdict.why
        if use == "general":
            return EXTERNAL, verdict.why
        return EXTERNAL, WHY_OVERFLOW

    async def reply_cached(self, ctx: Ctx, hit: Any, req: Request, send: Send, extra: Headers) -> None:
        ctx.cache, ctx.route, ctx.status = hit.kind, CACHE, 200
        ctx.prompt_tokens = hit.entry["prompt_tokens"]
        ctx.completion_tokens = 0  # nothing generated: the per-key token budget is not charged for output
        headers = [(b"x-llmfleet-cache", hit.kind.encode()), (b"x-llmfleet-route", CACHE.encode()), *extra]
        model = self.cfg.model
        if req.stream:
            include_usage = bool((req.body.get("stream_options") or {}).get("include_usage"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", wire.SSE_CONTENT_TYPE),
                        (b"cache-control", b"no-cache"),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": as_sse(hit.entry, model, include_usage)})
        else:
            await self._plain(send, 200, as_json(hit.entry, model), JSON, headers)
        ctx.ttft = 0.0

    # ------------------------------------------------------------------ completions

    async def completion(self, scope: Scope, send: Send, path: str) -> None:
        req = Request(path, scope["headers"], scope["extensions"]["llmfleet.body"], self.sensitivity_header)
        rid = req.request_id
        # A new ID is a 64-bit random hex string: not a secret, so no getrandom() syscall per request.
        ctx = Ctx(
            request_id=rid.decode("latin-1")[:64] if rid else f"{random.getrandbits(64):016x}",
            key=None,
            started=self.clock(),
            writer=scope["extensions"].get("llmfleet.writer"),
        )
        tel = self.telemetry
        tel.in_flight.inc()
        reserved = 0
        span = None if self.tracing is None else self.tracing.start(req.traceparent, req.tracestate, path)
        ctx.span = span
        try:
            ctx.key = self.authenticate(req.authorization)
            if span is not None:
                span.add_event("auth")
            self.parse(req, ctx.key)
            ctx.stream = req.stream
            ctx.prompt_tokens = max(1, len(req.body_bytes) // 4)
            decision = await self.admit(ctx, req)
            reserved = ctx.prompt_tokens + req.max_tokens
            if span is not None:
                span.add_event("limits")
            ctx.route, ctx.why = self.route(ctx, req)
            if span is not None:
                span.add_event("route", {"llmfleet.route": ctx.route, "llmfleet.classified": ctx.classified})
            extra = [(b"x-request-id", ctx.request_id.encode()), *decision.headers()]
            extra += _output_headers(req)
            if self.cache is not None:
                hit = await self.cache.lookup(
                    ctx, ctx.tenant, path, req.body, req.cache_control, req.cache_opt_in
                )
                if span is not None:
                    span.add_event("cache", {"llmfleet.cache": ctx.cache if hit is None else hit.kind})
                if hit is not None:
                    await self.reply_cached(ctx, hit, req, send, extra)
                    return
                extra.append((b"x-llmfleet-cache", ctx.cache.encode()))
            member = None
            if self.model_route is not None:
                member = await self.choose_model(ctx, req, scope["headers"], extra)
            # From here until the answer is sent, a client that leaves closes the upstream request at once (vLLM
            # aborts it), also while waiting for a non-streaming answer, which arrives in one piece at the end.
            scope["extensions"]["llmfleet.on_disconnect"](ctx.client_left)
            if ctx.route == EXTERNAL:
                await self._external(ctx, req, send, extra)
            else:
                await self._self_hosted(ctx, req, send, extra, None if member is None else member.router)
        except Reply as r:
            ctx.status = r.status
            await self._plain(
                send, r.status, r.body, JSON, [(b"x-request-id", ctx.request_id.encode()), *r.headers]
            )
        finally:
            tel.in_flight.dec()
            if reserved:
                await self.settle(ctx, reserved)
            self._finish(ctx)

    async def choose_model(
        self, ctx: Ctx, req: Request, raw_headers: Headers, extra: Headers
    ) -> Member | None:
        """The route member that serves the request (spec.routing), or None when it goes out by the hybrid
        rule (gateway.external). A member other than the one the body names gets the body with its own model
        name; `external` takes general traffic only: a sensitive request goes to the route's self-hosted
        fallback."""
        mr = self.model_route
        assert mr is not None
        if ctx.route == EXTERNAL:
            ctx.model = "external"
            extra.append((b"x-llmfleet-model", (self.cfg.external.model or "").encode()))
            return None
        if req.pinned is not None:
            member, why = req.pinned, WHY_EXPLICIT
        else:
            vector = None if ctx.cache_embedding is None else ctx.cache_embedding[0]
            member, choice = await mr.choose(
                ctx.key.name if ctx.key else None, req.path, raw_headers, req.body, vector
            )
            why = choice.why
        if member.router is None:  # external: general traffic only
            if not ctx.classified:
                self.classify(ctx, req)
            if ctx.sensitive or self.external_session is None:
                member, why = mr.fallback, WHY_SENSITIVE
            else:
                ctx.route, ctx.why = EXTERNAL, why
        ctx.model = member.name
        self.telemetry.models.labels(member.name, why).inc()
        if ctx.route == EXTERNAL:
            extra.append((b"x-llmfleet-model", (self.cfg.external.model or "").encode()))
            return None
        extra.append((b"x-llmfleet-model", member.model_header))
        capped = None if member.output is None else self._member_cap(member.output, req, extra)
        if req.body.get("model") != member.model or capped:
            out = {**req.body, **(capped or {}), "model": member.model}
            if req.strip_usage:
                options = out.get("stream_options")
                out["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
            req.body_bytes = orjson.dumps(out)
        return member

    @staticmethod
    def _member_cap(policy: OutputPolicy, req: Request, extra: Headers) -> dict[str, int] | None:
        """The member's own output-length policy (routing.members[].outputTokens), after the deployment's and
        the key's: the body fields to change (None: none), with the response headers updated to say so. It
        applies after admission, so the key's reservation keeps the larger value until the request settles."""
        field = asked_field(req.body)
        asked = req.body.get(field)
        d = decide(asked, field if asked is not None else None, policy)
        if d is None:
            return None
        req.set_max_tokens = d.value
        if req.clamped_from is None:
            req.clamped_from = d.clamped_from
        extra[:] = [h for h in extra if h[0] not in OUTPUT_HEADERS] + _output_headers(req)
        return changes(req.body, d)

    async def settle(self, ctx: Ctx, reserved: int) -> None:
        """Charge what was generated: a request an upstream answered is charged its prompt and every token it
        produced, also when the client left or the stream was cut; a refused or failed one is charged nothing."""
        actual = ctx.prompt_tokens + ctx.completion_tokens if ctx.answered and ctx.route != CACHE else 0
        if ctx.route == CACHE:
            actual = ctx.prompt_tokens
        await self.limiter.settle(ctx.tenant, reserved, actual)

    # ------------------------------------------------------------------ dispatch

    async def _self_hosted(
        self, ctx: Ctx, req: Request, send: Send, extra: Headers, router: Router | None = None
    ) -> None:
        assert self.pool is not None
        tel = self.telemetry
        router = router or self.router  # a route member's engines, or this deployment's
        prefix = _prefix(req.body)
        span = ctx.span
        traceparent = None if span is None else Tracing.traceparent(span)
        tried: set[str] = set()
        attempts = 0  # attempts that reached an engine; a refused connection sent nothing and uses none up
        while attempts < MAX_ATTEMPTS:
            if ctx.gone:
                ctx.status = 499
                return
            ep = router.pick(prefix, tried)
            if ep is None:
                break
            tried.add(ep.url)
            router.begin(ep)
            try:
                resp = await self.pool.post(
                    ep.url, req.path, req.body_bytes, ctx.request_id, ctx.set_upstream, traceparent
                )
            except ConnectionRefusedError:  # not listening (yet, or any more): the next replica, at no cost
                router.end(ep)
                router.fail(ep)
                tel.upstream_errors.labels(SELF_HOSTED, "refused").inc()
                continue
            except (TimeoutError, OSError):
                attempts += 1
                router.end(ep)
                if ctx.gone:  # closed because the client left: the engine is fine
                    ctx.status = 499
                    return
                router.fail(ep)
                tel.upstream_errors.labels(SELF_HOSTED, "connect").inc()
                continue
            if resp.status in RETRYABLE_STATUS:
                attempts += 1
                resp.release()
                router.end(ep)
                if resp.status == 503:  # vLLM's admission control: healthy, its queue is full
                    router.busy(ep)
                else:
                    router.fail(ep)
                tel.upstream_errors.labels(SELF_HOSTED, f"http_{resp.status}").inc()
                continue
            try:
                ctx.endpoint = ep.url
                if span is not None:
                    span.add_event(
                        "upstream", {"llmfleet.engine": ep.url, "http.response.status_code": resp.status}
                    )
                await self._relay(
                    ctx, resp, send, extra + [(b"x-llmfleet-route", b"self-hosted")], req, cache=True
                )
                router.ok(ep)
                ep.served += 1
            except RetryUpstream as exc:
                if (
                    not exc.args or exc.args[0] != "abort"
                ):  # an engine that is leaving turned it away: free, too
                    attempts += 1
                router.fail(ep)
                tel.upstream_errors.labels(SELF_HOSTED, exc.args[0] if exc.args else "reset").inc()
                continue
            finally:
                router.end(ep)
            return
        # Nothing self-hosted could take it: general traffic may overflow, sensitive traffic fails closed.
        if not ctx.classified:
            self.classify(ctx, req)
        if not ctx.sensitive and self.cfg.external.use != "never":
            ctx.route, ctx.why = EXTERNAL, WHY_OVERFLOW
            await self._external(ctx, req, send, extra)
            return
        raise Reply(
            503,
            "No self-hosted engine replica is available; sensitive requests are never sent to an "
            "external provider. Retry shortly.",
            wire.SERVER_ERROR,
            "no_healthy_upstream",
            headers=[(b"retry-after", b"2")],
        )

    async def _external(self, ctx: Ctx, req: Request, send: Send, extra: Headers) -> None:
        ext = self.cfg.external
        if (
            ctx.sensitive or not ctx.classified
        ):  # the one door out checks the verdict itself, whoever called it
            raise Reply(
                503,
                "Sensitive requests are never sent to an external provider.",
                wire.SERVER_ERROR,
                "no_healthy_upstream",
            )
        if self.external_session is None or not ext.base_url:
            raise Reply(503, "No external provider is configured.", wire.SERVER_ERROR, "no_healthy_upstream")
        out = dict(req.body)  # exactly what was classified: every leaf was scanned, only the model is ours
        out["model"] = ext.model
        headers = {"Content-Type": "application/json", "X-Request-Id": ctx.request_id}
        if self.external_key:
            headers["Authorization"] = f"Bearer {self.external_key}"
        # Until the provider's response head arrives (for a non-streaming request, the whole generation), a
        # client that leaves cancels the request task here: aiohttp then closes the provider's connection.
        canceller = _TaskCanceller(asyncio.current_task())
        ctx.set_upstream(canceller)
        try:
            resp = ExternalResponse(
                await self.external_session.post(
                    ext.base_url.rstrip("/") + req.path[len("/v1") :], data=orjson.dumps(out), headers=headers
                )
            )
        except asyncio.CancelledError:
            if not ctx.gone:
                raise
            ctx.status = 499
            return
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.telemetry.upstream_errors.labels(EXTERNAL, "connect").inc()
            raise Reply(
                502,
                f"The external provider could not be reached: {type(exc).__name__}",
                wire.SERVER_ERROR,
                "upstream_unreachable",
            ) from None
        finally:
            canceller.task = (
                None  # from here on, a client that leaves cancels nothing (the response is closed)
            )
        ctx.endpoint = ext.base_url
        try:
            await self._relay(ctx, resp, send, extra + [(b"x-llmfleet-route", b"external")], req, cache=False)
        except RetryUpstream:
            raise Reply(
                502,
                "The external provider closed the connection before answering.",
                wire.SERVER_ERROR,
                "upstream_reset",
            ) from None

    # ------------------------------------------------------------------ relay

    async def _relay(
        self,
        ctx: Ctx,
        resp: Response | ExternalResponse,
        send: Send,
        extra: Headers,
        req: Request,
        cache: bool,
    ) -> None:
        """Pass the upstream response to the client (closed at once if the client goes away: Ctx.client_left)."""
        ctx.status = resp.status
        ctx.set_upstream(resp)
        captured: list[bytes] | None = [] if (cache and ctx.cache_store and resp.status == 200) else None
        complete = False
        try:
            if not ctx.stream or not resp.content_type.startswith(wire.SSE_CONTENT_TYPE):
                complete = await self._relay_whole(ctx, resp, send, extra, captured)
            else:
                complete = await self._relay_stream(ctx, resp, send, extra, captured, req.strip_usage)
        finally:
            resp.release()
        if complete and captured is not None and self.cache is not None:
            await self.cache.store(ctx, ctx.tenant, req.path, req.body, b"".join(captured))

    async def _relay_whole(
        self,
        ctx: Ctx,
        resp: Response | ExternalResponse,
        send: Send,
        extra: Headers,
        captured: list[bytes] | None,
    ) -> bool:
        data = await _before_output(ctx, resp.read)
        if data is None:
            return False
        if resp.status == 200:
            # A body delimited by the connection's close can be cut without the transport noticing: a 200 that is
            # not whole JSON never reaches the client as an answer (another replica may take the request).
            if not self._usage_from_json(ctx, data):
                raise RetryUpstream()
            if ABORTED in data:  # the engine is shutting down (or aborted it): nothing reached the client yet
                raise RetryUpstream("abort")
            ctx.answered = True
            if captured is not None:
                captured.append(data)
        ctx.ttft = self.clock() - ctx.started
        await self._plain(send, resp.status, data, resp.content_type, extra)
        return True

    async def _relay_stream(  # noqa: C901 - the stream hot path, kept in one frame (see module docstring)
        self,
        ctx: Ctx,
        resp: Response | ExternalResponse,
        send: Send,
        extra: Headers,
        captured: list[bytes] | None,
        strip_usage: bool = False,
    ) -> bool:
        # Hold the response start until the first chunk: until then a failed replica can be retried.
        head = await _before_output(ctx, resp.readany)
        if head is None:
            return False
        # vLLM's role chunk comes before any text, an aborted request's too: hold it until text or the finish.
        while head and _role_only(head):
            more = await _before_output(ctx, resp.readany)
            if more is None:
                return False
            if not more:  # the engine closed before any text: nothing of value reached anyone
                raise RetryUpstream()
            head += more
        if not head:
            raise RetryUpstream()
        if ABORTED in head:  # rejected or aborted by a shutting-down engine before the client saw a byte
            raise RetryUpstream("abort")
        ctx.answered = resp.status == 200
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [
                    (b"content-type", wire.SSE_CONTENT_TYPE),
                    (b"cache-control", b"no-cache"),
                    *extra,
                ],
            }
        )
        first_at = self.clock()
        ctx.ttft = first_at - ctx.started
        relay = _Stream(ctx, captured, strip_usage)
        try:
            chunk = relay.take(head)
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            writer = ctx.writer
            if relay.failure:
                pass
            elif writer is not None and isinstance(resp, Response):
                # The fast path: the rest goes from the engine connection's read callback to the client's
                # transport, coalesced per read, with no task wake-up and no ASGI message per chunk.
                relay.pipe(resp, writer)
                await resp.ended()
            else:
                while not relay.failure:
                    chunk = await resp.readany()
                    if not chunk:
                        break
                    chunk = relay.take(chunk)
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            relay.failure = relay.failure or type(exc).__name__
        finally:
            if not ctx.usage_seen:  # an engine that sends no usage: one token per content frame, an estimate
                ctx.completion_tokens = max(0, relay.chunks - 2)
        failure, last, chunks = relay.failure, relay.last, relay.chunks
        if ctx.gone:
            ctx.status = 499
            return False
        complete = not failure and last.rstrip().endswith(b"[DONE]")
        if complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if relay.engine_error:  # ended as the engine meant, with its error event: counted, never cached
                ctx.status = 502
                self.telemetry.upstream_errors.labels(ctx.route, "error_event").inc()
                complete = False
        else:
            # The client must not take a cut stream for a whole one: an error event, then the end.
            ctx.status = 502
            self.telemetry.upstream_errors.labels(ctx.route, "cut").inc()
            why = f" ({failure})" if failure else ""
            event = wire.sse_error(
                f"The upstream stream ended before it was complete{why}; the answer is cut.", "upstream_cut"
            )
            # An event cut half-way is ended first, so that the error is an event of its own.
            await send(
                {
                    "type": "http.response.body",
                    "more_body": False,
                    "body": event if not last or last.endswith(b"\n\n") else b"\n\n" + event,
                }
            )
        if chunks > 3:
            self.telemetry.itl.labels(ctx.route).observe((self.clock() - first_at) / (chunks - 3))
        return complete

    @staticmethod
    def _usage_from_json(ctx: Ctx, data: bytes) -> bool:
        """Read the usage of a whole JSON answer; False if the body is not a whole JSON object."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(doc, dict):
            return False
        try:
            usage = doc.get("usage") or {}
            ctx.prompt_tokens = int(usage.get("prompt_tokens", ctx.prompt_tokens))
            ctx.completion_tokens = int(usage.get("completion_tokens", 0))
        except (AttributeError, TypeError, ValueError):
            pass
        return True

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
        if ctx.span is not None:
            end_span(ctx.span, ctx, key_label, duration)
        if self.cfg.access_log:
            tel.log(
                {
                    "ts": now_iso(),
                    "request_id": ctx.request_id,
                    "key": key_label,
                    "model": ctx.model or self.cfg.model,
                    "route": ctx.route,
                    "why": ctx.why,
                    "status": ctx.status,
                    "stream": ctx.stream,
                    "endpoint": ctx.endpoint,
                    "cache": ctx.cache,
                    "prompt_tokens": ctx.prompt_tokens,
                    "completion_tokens": ctx.completion_tokens,
                    "ttft_ms": round(ctx.ttft * 1000, 2) if ctx.ttft is not None else None,
                    "duration_ms": round(duration * 1000, 2),
                }
            )


class _Stream:
    """A stream's relay once its head reached the client: each piece the engine sends is checked (an abort, the
    engine's error event, its usage), kept for the cache, counted and passed on. Driven by the request's task
    (`take`, then an ASGI message) or, on the gateway's own server, by the engine connection (`pipe`)."""

    __slots__ = ("captured", "chunks", "ctx", "engine_error", "failure", "last", "resp", "strip", "writer")

    def __init__(self, ctx: Ctx, captured: list[bytes] | None, strip: bool) -> None:
        self.ctx, self.captured, self.strip = ctx, captured, strip
        self.chunks = 0  # SSE events passed on
        self.last = b""  # the last piece passed on (a whole stream's ends with [DONE])
        self.engine_error = False
        self.failure = ""  # why the stream ends here, cut
        self.resp: Response | None = None
        self.writer: Writer | None = None

    def take(self, chunk: bytes) -> bytes:
        """What the client gets of one piece of the engine's stream (maybe nothing); sets `failure` when the
        stream must end after it."""
        if ABORTED in chunk:  # the engine aborted the stream (shut down): a cut answer, not a whole one
            chunk = chunk.split(DONE_EVENT, 1)[0]
            self.failure = "aborted by the engine"
        if ERROR_EVENT in chunk:  # the engine's own error event reaches the client; it is no answer
            self.engine_error = True
        if self.captured is not None:
            self.captured.append(chunk)  # as the engine wrote it, usage included
        if USAGE in chunk:  # the engine's usage (its own write, before [DONE])
            chunk = _take_usage(self.ctx, chunk, self.strip)
        self.chunks += chunk.count(b"data: ")
        if chunk:
            self.last = chunk
        return chunk

    def pipe(self, resp: Response, writer: Writer) -> None:
        self.resp, self.writer = resp, writer
        resp.pipe(self.feed)

    def feed(self, chunk: bytes) -> None:
        """Called by the engine connection once per read (Response.pipe)."""
        resp, writer = self.resp, self.writer
        assert resp is not None and writer is not None
        if self.failure:
            return
        chunk = self.take(chunk)
        if chunk and not writer.write(chunk):  # the client's buffer is full: read no more until it drains
            resp.pause_reading()
            writer.on_writable(resp.resume_reading)
        if self.failure:
            resp.close()  # ends the pipe (ended() returns); the engine has stopped anyway


OUTPUT_HEADERS = (b"x-llmfleet-max-tokens", b"x-llmfleet-max-tokens-clamped")


def _output_headers(req: Request) -> Headers:
    """What the output-length policies did to the request, as response headers (none: nothing)."""
    if req.set_max_tokens is None:
        return []
    out = [(OUTPUT_HEADERS[0], str(req.set_max_tokens).encode())]
    if req.clamped_from is not None:
        out.append((OUTPUT_HEADERS[1], str(req.clamped_from).encode()))
    return out


def end_span(span: Any, ctx: Ctx, key_label: str, duration: float) -> None:
    """The request's figures on its span, a ``first_token`` event at its time, then the end."""
    if not span.is_recording():  # sampled out: nothing to fill in
        span.end()
        return
    if ctx.ttft is not None:
        # The span started a few µs after the request's clock did: start + TTFT can land after now (the span's
        # end), so the event is kept within the span.
        at = min(span.start_time + int(ctx.ttft * 1e9), time.time_ns())
        span.add_event("first_token", timestamp=at)
    span.set_attributes(
        {
            "llmfleet.request_id": ctx.request_id,
            "llmfleet.key": key_label,
            "llmfleet.route": ctx.route,
            "llmfleet.route.why": ctx.why,
            "llmfleet.cache": ctx.cache,
            "llmfleet.stream": ctx.stream,
            "http.response.status_code": ctx.status,
            "gen_ai.usage.input_tokens": ctx.prompt_tokens,
            "gen_ai.usage.output_tokens": ctx.completion_tokens,
            "llmfleet.ttft_ms": round(ctx.ttft * 1000, 3) if ctx.ttft is not None else -1.0,
            "llmfleet.duration_ms": round(duration * 1000, 3),
        }
    )
    if ctx.status >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, f"HTTP {ctx.status}"))
    span.end()


async def _before_output(ctx: Ctx, read: Callable[[], Awaitable[bytes]]) -> bytes | None:
    """A read before anything reached the client: a failure may be retried on another replica (RetryUpstream);
    None when the client has left (499)."""
    try:
        return await read()
    except (TimeoutError, aiohttp.ClientError, OSError):
        if ctx.gone:
            ctx.status = 499
            return None
        raise RetryUpstream() from None


def _take_usage(ctx: Ctx, chunk: bytes, strip: bool) -> bytes:
    """Read the usage events of a piece of a stream into ctx (exact counts); with ``strip``, leave out the usage
    chunk (no choices) the client did not ask for. Runs once a stream, where the engine writes its usage."""
    kept = []
    for event in chunk.split(b"\n\n"):
        if event.startswith(b"data: {") and USAGE in event:
            try:
                doc = orjson.loads(event[6:])
                usage = doc["usage"]
                ctx.prompt_tokens = int(usage["prompt_tokens"])
                ctx.completion_tokens = int(usage["completion_tokens"])
                ctx.usage_seen = True
                if strip and not doc.get("choices"):
                    continue
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                pass  # half an event (split across reads) or no usage after all: passed on as it came
        kept.append(event)
    return b"\n\n".join(kept)


def _role_only(head: bytes) -> bool:
    """The head of a stream holds whole events with no text and no finish yet (vLLM's role chunk)."""
    return (
        head.endswith(b"\n\n")
        and b'"finish_reason":"' not in head
        and DONE_EVENT not in head
        and head.count(b"data: ") == head.count(b'"content":""') + head.count(b'"text":""')
    )


def _prefix(body: dict[str, Any]) -> bytes:
    """The first 512 characters of the prompt's text, for prefix-affinity routing."""
    msgs = body.get("messages")
    if isinstance(msgs, list):
        parts = []
        size = 0
        for m in msgs:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, list):
                c = "\n".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
            if isinstance(c, str):
                parts.append(c)
                size += len(c)
                if size >= 512:
                    break
        return "\n".join(parts)[:512].encode()
    prompt = body.get("prompt")
    return prompt[:512].encode() if isinstance(prompt, str) else b""


def _unauthorized() -> Reply:
    return Reply(
        401,
        "Incorrect API key provided. You can find your API key in your llmfleet Secret.",
        wire.INVALID_REQUEST,
        "invalid_api_key",
    )


__all__ = ["Endpoint", "Gateway", "Reply"]
