"""The response cache on Redis: exact entries (GET/SET with TTL) and semantic entries (a RedisVL HNSW index,
cosine distance, tag filters for tenant, model and conversation context), behind one gateway-facing class.

Failure is not an outage: every Redis call has a short timeout; an error opens a circuit breaker for a
few seconds during which the cache is bypassed (counted, logged once per interval), and no request
fails because of the cache. A corrupt entry is deleted, never served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson

from llmfleet.cache import entries
from llmfleet.cache.embedding import Embedder
from llmfleet.cache.keys import cacheable, exact_key, split_last_user_turn

log = logging.getLogger("llmfleet.cache")
Send = Callable[[dict[str, Any]], Awaitable[None]]
INDEX = "llmfleet-semcache"
PREFIX = "llmfleet:sem"


class Breaker:
    """Open for ``cooldown`` seconds after a failure; logs at most once per ``log_every`` seconds."""

    def __init__(self, cooldown: float = 5.0, log_every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown, self.log_every, self.clock = cooldown, log_every, clock
        self.open_until = 0.0
        self._logged = -1e18
        self.failures = 0

    @property
    def closed(self) -> bool:
        return self.clock() >= self.open_until

    def fail(self, exc: BaseException) -> None:
        self.failures += 1
        now = self.clock()
        self.open_until = now + self.cooldown
        if now - self._logged >= self.log_every:
            self._logged = now
            log.warning("cache bypassed for %.0fs: Redis %s: %s (%d failures so far)", self.cooldown,
                        type(exc).__name__, exc, self.failures)


class ResponseCache:
    def __init__(self, redis: Any, model: str, telemetry: Any, *, exact: bool = True, semantic: bool = True,
                 ttl_seconds: float = 3600, threshold: float = 0.95, replay: str = "deterministic",
                 embedder: Embedder | None = None, timeout: float = 0.05, semantic_timeout: float = 0.25) -> None:
        self.redis, self.model, self.tel = redis, model, telemetry
        self.exact_enabled, self.semantic_enabled = exact, semantic and embedder is not None
        self.ttl, self.threshold, self.replay = int(ttl_seconds), threshold, replay
        self.embedder, self.timeout, self.semantic_timeout = embedder, timeout, semantic_timeout
        self.breaker = Breaker()
        self.index: Any = None

    async def setup(self) -> None:
        """Create the semantic index if missing (idempotent). Failure leaves semantic lookups bypassed."""
        if not self.semantic_enabled or self.embedder is None:
            return
        from redisvl.index import AsyncSearchIndex

        schema = {
            "index": {"name": INDEX, "prefix": PREFIX, "storage_type": "hash"},
            "fields": [
                {"name": "tenant", "type": "tag"}, {"name": "model", "type": "tag"}, {"name": "ctx", "type": "tag"},
                {"name": "embedding", "type": "vector", "attrs": {
                    "dims": self.embedder.dim, "distance_metric": "cosine", "algorithm": "hnsw", "datatype": "float32"}},
            ],
        }
        self.index = AsyncSearchIndex.from_dict(schema, redis_client=self.redis)
        try:
            await asyncio.wait_for(self.index.create(overwrite=False), 5)
        except Exception as exc:  # noqa: BLE001 - any Redis trouble means: run without the cache for now
            self.breaker.fail(exc)

    async def _call(self, coro: Awaitable[Any], timeout: float) -> Any:
        try:
            return await asyncio.wait_for(coro, timeout)
        except Exception as exc:  # noqa: BLE001
            self.breaker.fail(exc)
            self.tel.cache.labels("error").inc()
            return None

    # ------------------------------------------------------------------ lookup

    async def serve(self, ctx: Any, tenant: str, path: str, body: dict[str, Any], headers: dict[bytes, bytes],
                    send: Send, extra: list[tuple[bytes, bytes]]) -> bool:
        """Answer from the cache if possible (True), else remember what to store after the miss (False)."""
        opt_in = (headers.get(b"x-llmfleet-cache") or b"").lower() in (b"allow", b"on", b"true")
        lookup, store = cacheable(body, self.replay, headers.get(b"cache-control"), opt_in)
        ctx.cache_store = store and self.breaker.closed
        ctx.cache_embedding = None
        if not lookup:
            ctx.cache = "skip"
            return False
        if not self.breaker.closed:
            ctx.cache = "bypass"
            self.tel.cache.labels("bypass").inc()
            return False
        if self.exact_enabled:
            key = exact_key(tenant, self.model, path, body)
            raw = await self._call(self.redis.get(key), self.timeout)
            if raw is not None:
                try:
                    entry = entries.decode(raw)
                except entries.CorruptEntry:
                    await self._call(self.redis.delete(key), self.timeout)
                    self.tel.cache.labels("corrupt").inc()
                else:
                    await self._reply(ctx, "exact", entry, body, send, extra)
                    return True
        if self.semantic_enabled and self.index is not None and self.breaker.closed:
            split = split_last_user_turn(path, body)
            if split is not None:
                query, context = split
                emb = await asyncio.to_thread(self._embed, query)
                ctx.cache_embedding = (emb, query, context)
                hit = await self._semantic_lookup(tenant, context, emb)
                if hit is not None:
                    entry, similarity = hit
                    self.tel.cache_similarity.observe(similarity)
                    await self._reply(ctx, "semantic", entry, body, send, extra)
                    return True
        ctx.cache = "miss"
        self.tel.cache.labels("miss").inc()
        return False

    def _embed(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        return self.embedder.embed([text])[0]

    async def _semantic_lookup(self, tenant: str, context: str, emb: np.ndarray) -> tuple[dict[str, Any], float] | None:
        from redisvl.query import VectorQuery
        from redisvl.query.filter import Tag

        q = VectorQuery(vector=emb.astype(np.float32).tobytes(), vector_field_name="embedding",
                        return_fields=["entry"], num_results=1,
                        filter_expression=(Tag("tenant") == tenant) & (Tag("model") == self.model) & (Tag("ctx") == context))
        rows = await self._call(self.index.query(q), self.semantic_timeout)
        if not rows:
            return None
        row = rows[0]
        similarity = 1.0 - float(row["vector_distance"])
        if similarity < self.threshold:
            return None
        try:
            return entries.decode(row["entry"]), similarity
        except (entries.CorruptEntry, KeyError):
            await self._call(self.redis.delete(row["id"]), self.timeout)
            self.tel.cache.labels("corrupt").inc()
            return None

    async def _reply(self, ctx: Any, kind: str, entry: dict[str, Any], body: dict[str, Any], send: Send,
                     extra: list[tuple[bytes, bytes]]) -> None:
        ctx.cache = kind
        ctx.route = "cache"
        ctx.status = 200
        ctx.prompt_tokens = entry["prompt_tokens"]
        ctx.completion_tokens = 0  # nothing generated: the per-key token budget is not charged for output
        self.tel.cache.labels(kind).inc()
        self.tel.cache_saved_tokens.inc(entry["completion_tokens"])
        headers = [(b"x-llmfleet-cache", kind.encode()), (b"x-llmfleet-route", b"cache"), *extra]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            data = entries.as_sse(entry, self.model, include_usage)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *headers]})
            await send({"type": "http.response.body", "body": data})
        else:
            data = entries.as_json(entry, self.model)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]})
            await send({"type": "http.response.body", "body": data})
        ctx.ttft = 0.0

    # ------------------------------------------------------------------ store

    async def store(self, ctx: Any, tenant: str, path: str, body: dict[str, Any], data: bytes) -> None:
        """Called only for complete 200 responses (never errors, refusals or cut streams)."""
        if not getattr(ctx, "cache_store", False) or not self.breaker.closed:
            return
        chat = "messages" in body
        entry = entries.from_sse(data, chat) if body.get("stream") else entries.from_json_response(data, chat)
        if entry is None:
            return
        raw = orjson.dumps(entry)
        if self.exact_enabled:
            await self._call(self.redis.set(exact_key(tenant, self.model, path, body), raw, ex=self.ttl), self.timeout)
        cached = getattr(ctx, "cache_embedding", None)
        if self.semantic_enabled and self.index is not None and self.breaker.closed:
            if cached is None:
                split = split_last_user_turn(path, body)
                if split is None:
                    return
                query, context = split
                emb = await asyncio.to_thread(self._embed, query)
            else:
                emb, query, context = cached
            doc = {"tenant": tenant, "model": self.model, "ctx": context, "entry": raw,
                   "embedding": emb.astype(np.float32).tobytes()}
            await self._call(self.index.load([doc], ttl=self.ttl), self.semantic_timeout * 4)
