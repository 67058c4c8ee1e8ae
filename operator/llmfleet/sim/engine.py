"""`llmfleet engine-sim`: a server that looks like `vllm serve` from outside, driven by the perf model.

OpenAI API (chat and text completions, SSE streaming with usage and continuous usage, /v1/models, /health,
/load with --enable-server-load-tracking),
vLLM's metric names on /metrics, deterministic output derived from the prompt (so caches can be tested) that
ends as vLLM's does (EOS after a per-prompt length unless ``ignore_eos``, stop strings, ``min_tokens``,
``max_tokens``), client disconnects abort the request. Raw ASGI on uvicorn: no framework on the hot path.
tests/integration/test_vllm_conformance.py validates its answers with vLLM's own protocol models.

SIGTERM does what vLLM 0.33's API server does (``vllm/entrypoints/launchers/launcher.py`` and
``EngineCore._handle_shutdown``): the HTTP server keeps listening while the engine shuts down. With
``--shutdown-timeout 0`` (vLLM's default: "abort") every unfinished request ends at once with
``finish_reason: "abort"``; with a timeout ("drain") in-flight requests run to completion for up to that many
seconds and are aborted after it. Either way a request that arrives after the signal is rejected the way
vLLM's engine core rejects it: it finishes at once with ``finish_reason: "abort"`` and no tokens (a
streamed one still gets its 200, the role chunk, the finishing chunk and ``[DONE]``). Then the server exits.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from llmfleet import wire
from llmfleet.fleet.vllm import TTFT_BUCKETS
from llmfleet.sim.perfmodel import BLOCK_TOKENS, BatchEngine, EngineProfile, SimRequest

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

WORDS = (
    "the",
    "model",
    "serves",
    "tokens",
    "quickly",
    "while",
    "cache",
    "hits",
    "save",
    "prefill",
    "on",
    "every",
    "replica",
    "and",
    "spot",
    "capacity",
    "keeps",
    "cost",
    "low",
    "for",
    "users",
    "who",
    "stream",
)
CHARS_PER_TOKEN = 4
# vLLM 0.33's histogram bounds (vllm/v1/metrics/buckets.py; the conformance test compares them).
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
# Where an answer ends by EOS when the request does not say ignore_eos: a per-prompt length in this range.
DEFAULT_ANSWER_TOKENS = (32, 1024)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")  # vLLM's FinishReason
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")  # vLLM's PromptTokenStats


def prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        parts = []
        for m in body.get("messages") or []:
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            parts.append(f"{m.get('role', '')}: {content or ''}")
        return "\n".join(parts)
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def count_tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def prefix_blocks(text: str) -> tuple[int, ...]:
    step = BLOCK_TOKENS * CHARS_PER_TOKEN
    h = hashlib.blake2b(digest_size=8)
    out = []
    for i in range(0, len(text) - step + 1, step):
        h.update(text[i : i + step].encode())
        out.append(int.from_bytes(h.copy().digest(), "big"))
    return tuple(out)


def output_tokens(text: str, n: int) -> list[str]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return [(" " if i else "") + WORDS[(seed + i * 7) % len(WORDS)] for i in range(n)]


@dataclass(frozen=True)
class Sampling:
    """The request's fields that decide where its answer ends, as vLLM's SamplingParams reads them."""

    max_tokens: int
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False


@dataclass(frozen=True)
class Answer:
    tokens: list[str]  # one text piece per generated token; the EOS token's is ""
    finish: str  # "stop" (EOS or a stop string) or "length"
    stop_reason: str | None = None  # the stop string that ended it


def answer(text: str, sampling: Sampling, answer_tokens: tuple[int, int] | None) -> Answer:
    """The answer a model gives to `text`: deterministic words; it ends with EOS after the prompt's natural
    length (drawn from `answer_tokens`, never before `min_tokens`; `ignore_eos` or no range: never), at the
    first stop string (cut from the text unless `include_stop_str_in_output`), or at `max_tokens` — vLLM's
    order of checks (``vllm/v1/engine/detokenizer.py``, ``vllm/v1/core/sched/utils.py``)."""
    n = sampling.max_tokens
    eos_at = None
    if answer_tokens is not None and not sampling.ignore_eos:
        lo, hi = answer_tokens
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[4:8], "big")
        eos_at = max(lo + seed % (hi - lo + 1), sampling.min_tokens + 1)  # the EOS token's position, 1-based
        if eos_at <= n:
            n = eos_at
        else:
            eos_at = None
    words = output_tokens(text, n)
    if eos_at is not None:
        words[-1] = ""  # EOS: counted as a generated token, no text
    if sampling.stop:
        out = ""
        for i, word in enumerate(words):
            start = max(0, len(out) - max(map(len, sampling.stop)) + 1)
            out += word
            if i + 1 <= sampling.min_tokens:
                continue
            hits = [(pos, s) for s in sampling.stop if (pos := out.find(s, start)) >= 0]
            if hits:
                pos, s = min(hits)
                end = pos + len(s) if sampling.include_stop_str_in_output else pos
                return Answer(_cut(words[: i + 1], end), "stop", s)
    return Answer(words, "stop" if eos_at is not None else "length")


def _cut(words: list[str], end: int) -> list[str]:
    """`words` with their joined text cut to `end` characters (the token count is kept)."""
    out, seen = [], 0
    for w in words:
        out.append(w[: max(0, end - seen)])
        seen += len(w)
    return out


class Metrics:
    """The series vLLM 0.33 exports that a fleet reads, with vLLM's names, types, labels (``model_name`` and
    ``engine``, one engine here: "0") and buckets; tests/integration/test_vllm_conformance.py holds each to
    vLLM's own definitions (vllm/v1/metrics/loggers.py)."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_* as vLLM's default registry has them (restarts)
        r, labels, ids = self.registry, ["model_name", "engine"], (model, "0")

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r).labels(*ids)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r).labels(*ids)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(*ids)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        by_reason = Gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason.",
            [*labels, "reason"],
            registry=r,
        )
        self.waiting_capacity = by_reason.labels(*ids, "capacity")
        by_reason.labels(*ids, "deferred").set(0)  # LoRA budgets, KV transfers: not modelled
        self.kv = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS
        )
        self.tpot = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            LATENCY_BUCKETS,
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            LATENCY_BUCKETS,
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        sources = Counter(
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            [*labels, "source"],
            registry=r,
        )
        self.prompt_by_source = {s: sources.labels(*ids, s) for s in PROMPT_SOURCES}
        self.prompt_cached = counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local or external)."
        )
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=r,
        )
        self.success = {reason: success.labels(*ids, reason) for reason in FINISH_REASONS}
        rejections = Counter(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            ["model_name", "reason"],
            registry=r,
        )
        self.admission_rejections = {
            reason: rejections.labels(model, reason)
            for reason in ("max_num_queued_reqs", "max_num_queued_tokens")
        }
        self.model = model


@dataclass
class Pending:
    req: SimRequest
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    arrived: float = field(default_factory=time.perf_counter)
    first_at: float | None = None
    last_at: float | None = None
    words: list[str] = field(default_factory=list)
    finish: str = "length"  # vLLM's finish reason: "stop", "length", or "abort" when aborted
    scheduled: bool = False  # admitted to the running batch (its queue time and prompt sources are counted)
    scheduled_at: float | None = None


class EngineSim:
    """The scheduling loop: steps the perf model in (sped-up) real time and feeds tokens to requests."""

    def __init__(
        self,
        profile: EngineProfile,
        model: str,
        speedup: float = 1.0,
        answer_tokens: tuple[int, int] | None = DEFAULT_ANSWER_TOKENS,
    ) -> None:
        self.answer_tokens = answer_tokens
        self.engine = BatchEngine(profile)
        self.metrics = Metrics(model)
        self.model = model
        self.speedup = speedup
        self.pending: dict[str, Pending] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._prefix_seen = (0, 0)
        self.shutting_down = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def submit(self, text: str, sampling: Sampling) -> Pending:
        ans = answer(text, sampling, self.answer_tokens)
        req = SimRequest(
            id=f"r{next(self._ids)}",
            prompt_tokens=count_tokens(text),
            max_tokens=len(ans.tokens),
            prefix_blocks=prefix_blocks(text),
        )
        p = Pending(req=req, words=ans.tokens, finish=ans.finish)
        if self.shutting_down:  # vLLM's engine core rejects an add during shutdown: aborted, no tokens
            p.finish = "abort"
            p.queue.put_nowait(None)
            self.metrics.success["abort"].inc()
            return p
        self.pending[req.id] = p
        self.engine.submit(req)
        self.metrics.prompt_tokens.inc(req.prompt_tokens)
        self._wake.set()
        self.start()
        return p

    def abort(self, p: Pending) -> None:
        if self.pending.pop(p.req.id, None) is not None and self.engine.abort(p.req.id):
            self.metrics.success["abort"].inc()

    def abort_all(self) -> None:
        """End every unfinished request with finish_reason "abort" (what its client sees)."""
        for p in list(self.pending.values()):
            self.abort(p)
            p.finish = "abort"
            p.queue.put_nowait(None)

    async def shutdown(self, timeout: float) -> None:
        """vLLM's engine shutdown: abort everything (timeout 0) or let in-flight requests finish for up to
        ``timeout`` seconds, then abort what is left. New requests are rejected from the first moment."""
        self.shutting_down = True
        if timeout > 0:
            deadline = time.monotonic() + timeout
            # A 50 ms poll, once, at shutdown (as vLLM's own drain loop polls its engine).
            while self.pending and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        self.abort_all()

    def _gauges(self) -> None:
        self.metrics.running.set(len(self.engine.running))
        self.metrics.waiting.set(len(self.engine.waiting))
        self.metrics.waiting_capacity.set(len(self.engine.waiting))
        self.metrics.kv.set(self.engine.kv_usage)
        q, h = self.engine.prefix_queries, self.engine.prefix_hits
        self.metrics.prefix_queries.inc(q - self._prefix_seen[0])
        self.metrics.prefix_hits.inc(h - self._prefix_seen[1])
        self._prefix_seen = (q, h)

    def _scheduled(self) -> None:
        """Requests the step admitted: their time in the queue, and where their prompt tokens came from."""
        now = time.perf_counter()
        m = self.metrics
        for p in self.pending.values():
            if p.scheduled or not p.req.admitted:
                continue
            p.scheduled, p.scheduled_at = True, now
            m.queue_time.observe(now - p.arrived)
            cached = p.req.cached_tokens
            m.prompt_by_source["local_cache_hit"].inc(cached)
            m.prompt_by_source["local_compute"].inc(p.req.prompt_tokens - cached)
            m.prompt_cached.inc(cached)

    async def _loop(self) -> None:
        while True:
            if self.engine.idle:
                self._gauges()
                self._wake.clear()
                await self._wake.wait()
                continue
            result = self.engine.step()
            self._scheduled()
            self._gauges()
            await asyncio.sleep(result.duration_s / self.speedup)
            now = time.perf_counter()
            for rid in result.tokens:
                p = self.pending.get(rid)
                if p is None:
                    continue
                if p.first_at is None:
                    p.first_at = now
                    self.metrics.ttft.observe(now - p.arrived)
                elif p.last_at is not None:
                    self.metrics.itl.observe(now - p.last_at)
                    self.metrics.tpot.observe(now - p.last_at)
                p.last_at = now
                p.queue.put_nowait(p.words[p.req.generated - 1])
                self.metrics.generation_tokens.inc()
            for rid in result.finished:
                p = self.pending.pop(rid, None)
                if p is not None:
                    p.queue.put_nowait(None)
                    self.metrics.e2e.observe(now - p.arrived)
                    self.metrics.success[p.finish].inc()


class _ClientGone(Exception):
    pass


class EngineArgsError(ValueError):
    """Arguments engine-sim cannot run with (the CLI reports it with exit code 2)."""


class EngineTracing:
    """vLLM's request traces (``--otlp-traces-endpoint``, vllm/v1/engine/output_processor.py ``do_tracing``): one
    ``llm_request`` SERVER span per finished request, from its arrival, child of the W3C ``traceparent`` the
    request carried, with vLLM's ``gen_ai.*`` attributes. OTLP over HTTP (vLLM's
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf); the endpoint is the full URL, as vLLM passes it on."""

    def __init__(self, endpoint: str, model: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = TracerProvider(
            resource=Resource.create(
                {"vllm.instrumenting_module_name": "vllm.llm_engine", "service.name": model}
            )
        )
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer = self.provider.get_tracer("vllm.llm_engine")
        self.propagator, self.kind = TraceContextTextMapPropagator(), SpanKind.SERVER

    def record(self, p: Pending, headers: dict[str, str], request_id: str, max_tokens: int) -> None:
        if p.first_at is None or p.finish == "abort":
            return  # vLLM traces finished requests
        now = time.perf_counter()
        wall = time.time_ns()

        def ns(t: float) -> int:
            return wall - int((now - t) * 1e9)

        scheduled = p.scheduled_at or p.arrived
        last = p.last_at or p.first_at
        span = self.tracer.start_span(
            "llm_request",
            context=self.propagator.extract(headers) if headers else None,
            kind=self.kind,
            start_time=ns(p.arrived),
            attributes={
                "gen_ai.latency.time_to_first_token": p.first_at - p.arrived,
                "gen_ai.latency.e2e": now - p.arrived,
                "gen_ai.latency.time_in_queue": scheduled - p.arrived,
                "gen_ai.usage.prompt_tokens": p.req.prompt_tokens,
                "gen_ai.usage.completion_tokens": p.req.generated,
                "gen_ai.latency.time_in_model_prefill": p.first_at - scheduled,
                "gen_ai.latency.time_in_model_decode": last - p.first_at,
                "gen_ai.latency.time_in_model_inference": last - scheduled,
                "gen_ai.request.id": request_id,
                "gen_ai.request.max_tokens": max_tokens,
            },
        )
        span.end(end_time=wall)

    def shutdown(self) -> None:
        self.provider.shutdown()


def sampling_of(body: dict[str, Any], max_tokens: int) -> Sampling | tuple[str, str]:
    """The request's stop conditions, or (field, message) for a 400 (vLLM's pydantic request model)."""
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(x, str) for x in stop):
        stops = tuple(stop)
    else:
        return "stop", "stop must be a string or a list of strings"
    stops = tuple(x for x in stops if x)
    for name in ("ignore_eos", "include_stop_str_in_output"):
        if not isinstance(body.get(name, False), bool):
            return name, f"{name} must be a boolean"
    min_tokens = body.get("min_tokens", 0)
    if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or min_tokens < 0:
        return "min_tokens", "min_tokens must be a non-negative integer"
    if min_tokens > max_tokens:
        return (
            "min_tokens",
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.",
        )
    return Sampling(
        max_tokens=max_tokens,
        stop=stops,
        ignore_eos=bool(body.get("ignore_eos", False)),
        min_tokens=min_tokens,
        include_stop_str_in_output=bool(body.get("include_stop_str_in_output", False)),
    )


def _error(
    status: int, message: str, type_: str = "BadRequestError", param: str | None = None
) -> tuple[int, bytes]:
    """vLLM's ErrorResponse: the error's `code` is the HTTP status, its `type` vLLM's error class."""
    return status, orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": status}}
    )


class EngineApp:
    """The ASGI application."""

    def __init__(
        self,
        sim: EngineSim,
        served_name: str,
        max_model_len: int,
        default_max_tokens: int = 128,
        stream_interval: int = 1,
        max_num_queued_reqs: int | None = None,
        tracing: EngineTracing | None = None,
        load_tracking: bool = False,
    ) -> None:
        self.sim = sim
        self.tracing = tracing
        self.max_num_queued_reqs = max_num_queued_reqs
        self.stream_interval = max(1, stream_interval)
        self.served_name = served_name
        self.max_model_len = max_model_len
        self.default_max_tokens = default_max_tokens
        self.load_tracking = load_tracking
        self.server_load = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    self.sim.start()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/health":
            await self._send(send, 200, b"", b"text/plain")
        elif path == "/metrics":
            await self._send(
                send, 200, generate_latest(self.sim.metrics.registry), b"text/plain; version=0.0.4"
            )
        elif path == "/v1/models" and method == "GET":
            body = {
                "object": "list",
                "data": [
                    {
                        "id": self.served_name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "llmfleet-engine-sim",
                        "max_model_len": self.max_model_len,
                    }
                ],
            }
            await self._send(send, 200, orjson.dumps(body))
        elif path == "/load" and method == "GET":
            # vLLM's /load: requests in flight on the API server, counted only with --enable-server-load-tracking
            await self._send(send, 200, orjson.dumps({"server_load": self.server_load}))
        elif path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            if not self.load_tracking:
                await self._complete(scope, receive, send, chat=path.endswith("chat/completions"))
                return
            self.server_load += 1  # from the handler's start until the response has been sent (vLLM's)
            try:
                await self._complete(scope, receive, send, chat=path.endswith("chat/completions"))
            finally:
                self.server_load -= 1
        else:
            await self._send(send, *_error(404, f"no route {method} {path}", "not_found_error"))

    async def _send(
        self, send: Send, status: int, body: bytes, content_type: bytes = b"application/json"
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _complete(self, scope: Scope, receive: Receive, send: Send, chat: bool) -> None:  # noqa: C901 - vLLM's request checks, in its order
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        try:
            body = orjson.loads(b"".join(chunks))
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except (orjson.JSONDecodeError, ValueError) as exc:
            await self._send(send, *_error(400, f"invalid JSON body: {exc}"))
            return
        if body.get("model") not in (self.served_name, None):
            await self._send(
                send,
                *_error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model"),
            )
            return
        if chat and not isinstance(body.get("messages"), list):
            await self._send(send, *_error(400, "messages must be a list", param="messages"))
            return
        text = prompt_text(body)
        asked = body.get("max_tokens") or body.get("max_completion_tokens")
        if asked is not None and (not isinstance(asked, int) or asked < 1):
            await self._send(send, *_error(400, "max_tokens must be a positive integer", param="max_tokens"))
            return
        prompt_tokens = count_tokens(text)
        if prompt_tokens > self.max_model_len:
            await self._send(
                send,
                *_error(
                    400,
                    f"Input length ({prompt_tokens}) exceeds model's maximum context length ({self.max_model_len}).",
                ),
            )
            return
        # vLLM's get_max_tokens: what was asked (else the generation config's default), clamped to the rest of the
        # context, never refused for it.
        max_tokens = max(1, min(asked or self.default_max_tokens, self.max_model_len - prompt_tokens))
        if self.max_num_queued_reqs is not None and len(self.sim.pending) + 1 > self.max_num_queued_reqs:
            self.sim.metrics.admission_rejections["max_num_queued_reqs"].inc()
            await self._send(
                send,
                *_error(
                    503,
                    "The engine is currently busy and cannot accept new requests. Please "
                    "try again later or on a different instance.",
                    "Service Unavailable",
                ),
            )
            return
        sampling = sampling_of(body, max_tokens)
        if isinstance(sampling, tuple):
            await self._send(send, *_error(400, sampling[1], param=sampling[0]))
            return
        p = self.sim.submit(text, sampling)
        rid = wire.completion_id(chat)
        created = int(time.time())
        stream = bool(body.get("stream"))
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        continuous = include_usage and bool(options.get("continuous_usage_stats"))
        disconnected = asyncio.get_running_loop().create_future()

        async def watch_disconnect() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    if not disconnected.done():
                        disconnected.set_result(True)
                    return

        watcher = asyncio.get_running_loop().create_task(watch_disconnect())
        try:
            if stream:
                await self._stream(send, p, rid, created, chat, include_usage, continuous, disconnected)
            else:
                words = []
                while (word := await self._next_token(p, disconnected)) is not None:
                    words.append(word)
                await self._send(
                    send,
                    200,
                    wire.completion(
                        self.served_name,
                        chat,
                        "".join(words),
                        p.finish,
                        p.req.prompt_tokens,
                        len(words),
                        rid,
                        created,
                    ),
                )
        except _ClientGone:
            pass  # aborted and counted; nobody is listening for an answer
        finally:
            watcher.cancel()
            if p.req.id in self.sim.pending:
                self.sim.abort(p)
            if self.tracing is not None:
                headers = {
                    k.decode("latin-1"): v.decode("latin-1")
                    for k, v in scope["headers"]
                    if k in (b"traceparent", b"tracestate", b"x-request-id")
                }
                self.tracing.record(p, headers, headers.pop("x-request-id", rid), max_tokens)

    async def _next_token(self, p: Pending, disconnected: asyncio.Future[bool]) -> str | None:
        """The next token, None at the end; a client that went away aborts the request."""
        get = asyncio.ensure_future(p.queue.get())
        done, _ = await asyncio.wait({get, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        if get not in done:
            get.cancel()
            self.sim.abort(p)
            raise _ClientGone()
        return get.result()

    async def _stream(
        self,
        send: Send,
        p: Pending,
        rid: str,
        created: int,
        chat: bool,
        include_usage: bool,
        continuous: bool,
        disconnected: asyncio.Future[bool],
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        out = wire.Stream(self.served_name, chat, rid, created)
        prompt, total = p.req.prompt_tokens, len(p.words)
        n = 0

        def usage() -> tuple[int, int] | None:  # continuous_usage_stats: every chunk says the usage so far
            return (prompt, n) if continuous else None

        async def write(body: bytes) -> None:
            await send({"type": "http.response.body", "body": body, "more_body": True})

        pending: list[str] = []
        while (word := await self._next_token(p, disconnected)) is not None:
            if n == 0 and chat:  # vLLM's first write of a chat stream: the role, no text
                await write(out.delta("", usage()))
            n += 1
            pending.append(word)
            # --stream-interval: the first token alone, then every N tokens (vLLM's OutputProcessor); the last
            # token's text rides on the finishing chunk
            if n < total and (n == 1 or len(pending) >= self.stream_interval):
                await write(out.delta("".join(pending), usage()))
                pending.clear()
        if n == 0 and chat:  # an abort's stream still starts with the role chunk
            await write(out.delta("", usage()))
        # The finish chunk, the usage chunk (only when asked) and [DONE]: three writes, as vLLM makes them.
        end = out.end(p.finish, (prompt, n) if include_usage else None, "".join(pending), continuous)
        events = end.split(b"\n\n")[:-1]
        for i, event in enumerate(events):
            await send(
                {"type": "http.response.body", "body": event + b"\n\n", "more_body": i < len(events) - 1}
            )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="meta-llama/Meta-Llama-3-8B-Instruct", help="model (catalog name for sizing)"
    )
    p.add_argument("--served-model-name", help="name clients send as `model` (default: --model)")
    p.add_argument("--host", default=None, help="bind address (default: $LLMFLEET_BIND_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tensor-parallel-size", type=int, default=None)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--enable-prefix-caching", dest="prefix_caching", action="store_true", default=True)
    p.add_argument("--no-enable-prefix-caching", dest="prefix_caching", action="store_false")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--quantization", default=None)
    p.add_argument(
        "--max-num-seqs", type=int, default=None, help="default: vLLM's for the GPU (1024 on H100/H200)"
    )
    p.add_argument("--max-num-batched-tokens", type=int, default=None, help="default: vLLM's for the GPU")
    p.add_argument(
        "--max-num-queued-reqs",
        type=int,
        default=None,
        help="admission control: answer 503 while this many requests are unfinished (vLLM's)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=int,
        default=0,
        help="SIGTERM: 0 aborts in-flight requests (vLLM's default), N lets them finish for N seconds",
    )
    p.add_argument(
        "--shutdown-linger",
        type=float,
        default=0.2,
        help="SIGTERM: seconds the listener stays open after the engine has shut down (new requests get an "
        "abort; the aborted ones' last chunks go out); a second SIGTERM stops at once",
    )
    p.add_argument("--gpu", default="H100-80GB", help="GPU type from the catalog for the performance model")
    p.add_argument(
        "--speedup", type=float, default=1.0, help="run the model this many times faster than real time"
    )
    p.add_argument(
        "--otlp-traces-endpoint",
        default=None,
        help="export an llm_request span per request (vLLM's flag); OTLP over HTTP: "
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf and the full URL (…/v1/traces)",
    )
    p.add_argument("--default-max-tokens", type=int, default=128)
    p.add_argument(
        "--enable-server-load-tracking",
        action="store_true",
        help="count requests in flight for GET /load (vLLM's server_load), which gateways read",
    )
    p.add_argument(
        "--stream-interval", type=int, default=1, help="tokens per streamed chunk after the first (vLLM's)"
    )
    p.add_argument(
        "--answer-tokens",
        type=answer_range,
        default=DEFAULT_ANSWER_TOKENS,
        metavar="LO:HI",
        help="a prompt's natural answer length, after which the model emits EOS (finish_reason stop) unless the "
        "request says ignore_eos; 0 = never (every answer runs to max_tokens, as in a benchmark)",
    )


def answer_range(value: str) -> tuple[int, int] | None:
    if value.strip() == "0":
        return None
    try:
        lo, hi = (int(x) for x in value.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: want LO:HI (e.g. 32:1024) or 0") from None
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"{value!r}: want 1 <= LO <= HI")
    return lo, hi


def build_app(args: argparse.Namespace) -> EngineApp:
    from llmfleet.api.sizing import SizingError, size
    from llmfleet.api.v1alpha1 import LLMDeploymentSpec

    dtype = (
        "fp8"
        if args.quantization == "fp8"
        else (args.dtype if args.dtype in ("float16", "bfloat16") else "auto")
    )
    engine: dict[str, Any] = {"gpuMemoryUtilization": min(0.98, args.gpu_memory_utilization)}
    if args.tensor_parallel_size in (1, 2, 4, 8):
        engine["tensorParallelSize"] = args.tensor_parallel_size
    spec_doc = {
        "model": {"name": args.model, "dtype": dtype, "maxModelLen": args.max_model_len},
        "engine": engine,
        "accelerator": {"type": args.gpu},
    }
    try:
        sizing = size(LLMDeploymentSpec.model_validate(spec_doc))
    except SizingError:
        spec_doc["model"]["name"] = "meta-llama/Meta-Llama-3-8B-Instruct"  # unknown model: size as an 8B
        sizing = size(LLMDeploymentSpec.model_validate(spec_doc))
    profile = EngineProfile.from_sizing(
        sizing, args.max_num_seqs, args.prefix_caching, args.max_num_batched_tokens
    )
    served = args.served_model_name or args.model
    tracing = None
    if args.otlp_traces_endpoint:
        import os

        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
        if protocol != "http/protobuf":
            raise EngineArgsError(
                f"--otlp-traces-endpoint: engine-sim exports OTLP over HTTP only, and "
                f"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL is {protocol!r} (vLLM's default is grpc): set it to "
                "http/protobuf"
            )
        tracing = EngineTracing(args.otlp_traces_endpoint, served)
    return EngineApp(
        EngineSim(profile, served, args.speedup, args.answer_tokens),
        served,
        args.max_model_len,
        args.default_max_tokens,
        args.stream_interval,
        args.max_num_queued_reqs,
        tracing,
        args.enable_server_load_tracking,
    )


def serve(args: argparse.Namespace) -> None:
    import os
    from types import FrameType

    import uvicorn

    app = build_app(args)
    host = args.host or os.environ.get("LLMFLEET_BIND_HOST", "127.0.0.1")
    if host == "0.0.0.0" and os.environ.get("LLMFLEET_BIND_HOST"):
        host = os.environ["LLMFLEET_BIND_HOST"]

    class VllmLikeServer(uvicorn.Server):
        """uvicorn, with vLLM's order on SIGTERM: the engine shuts down first (the listener stays open and
        rejects new work with an abort), then the HTTP server stops."""

        stopping = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.stopping:  # a second signal: stop now
                super().handle_exit(sig, frame)
                return
            self.stopping = True
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(lambda: loop.create_task(self._engine_then_http()))

        async def _engine_then_http(self) -> None:
            await app.sim.shutdown(args.shutdown_timeout)
            await asyncio.sleep(args.shutdown_linger)  # the aborted requests' last chunks reach their clients
            if app.tracing is not None:
                await asyncio.to_thread(app.tracing.shutdown)  # export what is queued
            self.should_exit = True

    config = uvicorn.Config(
        app,
        host=host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    server = VllmLikeServer(config)
    server.run()
