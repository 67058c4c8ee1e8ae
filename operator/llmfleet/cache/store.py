"""The response cache on Redis: exact entries (GET/SET with TTL) and semantic entries (a RedisVL HNSW index,
cosine distance, tag filters for tenant, model and conversation context), behind one gateway-facing class.
With ``max_false_hit_rate`` (spec.cache.semantic.maxFalseHitRate) a semantic candidate is served only from the
similarity cache.verify has proven; the others are answered by the engine and compared, and the outcome is
pushed to a per-deployment Redis list every replica learns from (re-read in the background every 2 s).

Failure is not an outage: every Redis call has a short timeout; a late or failed call is a miss for that
request, and three in a row open the circuit breaker (``cache.breaker``, shared with the gateway's limits) for
a few seconds during which the cache is bypassed (counted, logged once per interval), and no request
fails because of the cache. A corrupt entry is deleted, never served.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import numpy as np
import orjson

from llmfleet.cache import entries, verify
from llmfleet.cache.breaker import Breaker
from llmfleet.cache.embedding import Embedder
from llmfleet.cache.keys import cacheable, exact_key, split_last_user_turn

log = logging.getLogger("llmfleet.cache")
INDEX = "llmfleet-semcache"
PREFIX = "llmfleet:sem"
# + ":" + model: the deployment's checked semantic candidates (cache.verify), newest first.
CHECKS = "llmfleet:semchecks"


class CacheHit(NamedTuple):
    kind: str  # exact | semantic
    entry: dict[str, Any]  # as cache.entries decodes it


class ResponseCache:
    def __init__(
        self,
        redis: Any,
        model: str,
        telemetry: Any,
        *,
        exact: bool = True,
        semantic: bool = True,
        ttl_seconds: float = 3600,
        threshold: float = 0.95,
        replay: str = "deterministic",
        embedder: Embedder | None = None,
        timeout: float = 0.05,
        semantic_timeout: float = 0.25,
        max_false_hit_rate: float | None = None,
        explore: float = 0.05,
        refresh_every: float = 2.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.model, self.tel = redis, model, telemetry
        self.exact_enabled, self.semantic_enabled = exact, semantic and embedder is not None
        self.ttl, self.threshold, self.replay = int(ttl_seconds), threshold, replay
        self.embedder, self.timeout, self.semantic_timeout = embedder, timeout, semantic_timeout
        self.breaker = Breaker("cache bypassed")
        self.index: Any = None
        # Verified hits (cache.verify): candidates are checked until a threshold is proven under the bound.
        self.max_false_hit_rate, self.explore, self.refresh_every = max_false_hit_rate, explore, refresh_every
        self.rng, self.clock = rng or random.Random(), clock
        self.learned: float | None = None
        self._refreshed_at = -math.inf
        self._refresher: asyncio.Task[None] | None = None
        self.checks_key = f"{CHECKS}:{model}"
        self.tel.cache_threshold.set(math.nan if max_false_hit_rate else threshold)

    async def setup(self) -> None:
        """Create the semantic index if missing (idempotent). Failure leaves semantic lookups bypassed."""
        if not self.semantic_enabled or self.embedder is None:
            return
        from redisvl.index import AsyncSearchIndex

        schema = {
            "index": {"name": INDEX, "prefix": PREFIX, "storage_type": "hash"},
            "fields": [
                {"name": "tenant", "type": "tag"},
                {"name": "model", "type": "tag"},
                {"name": "ctx", "type": "tag"},
                {
                    "name": "embedding",
                    "type": "vector",
                    "attrs": {
                        "dims": self.embedder.dim,
                        "distance_metric": "cosine",
                        "algorithm": "hnsw",
                        "datatype": "float32",
                    },
                },
            ],
        }
        self.index = AsyncSearchIndex.from_dict(schema, redis_client=self.redis)
        try:
            await asyncio.wait_for(self.index.create(overwrite=False), 5)
        except Exception as exc:
            self.breaker.fail(exc)

    async def _call(self, coro: Awaitable[Any], timeout: float) -> Any:
        try:
            got = await asyncio.wait_for(coro, timeout)
        except Exception as exc:
            self.breaker.fail(exc)
            self.tel.cache.labels("error").inc()
            return None
        self.breaker.ok()
        return got

    # ------------------------------------------------------------------ lookup

    async def lookup(
        self,
        ctx: Any,
        tenant: str,
        path: str,
        body: dict[str, Any],
        cache_control: bytes | None,
        opt_in: bytes | None,
    ) -> CacheHit | None:
        """The cached answer for the request (a hit), or None after remembering in `ctx` what to store after the
        miss. The gateway writes the response: the cache never writes HTTP."""
        allowed = (opt_in or b"").lower() in (b"allow", b"on", b"true")
        lookup, store = cacheable(body, self.replay, cache_control, allowed)
        ctx.cache_store = store and self.breaker.closed
        ctx.cache_embedding = ctx.cache_verify = None
        if not lookup:
            ctx.cache = "skip"
            return None
        if not self.breaker.closed:
            ctx.cache = "bypass"
            self.tel.cache.labels("bypass").inc()
            return None
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
                    return self._hit("exact", entry)
        if self.semantic_enabled and self.index is not None and self.breaker.closed:
            split = split_last_user_turn(path, body)
            if split is not None:
                query, context = split
                emb = await asyncio.to_thread(self._embed, query)
                ctx.cache_embedding = (emb, query, context)
                found = await self._semantic_lookup(tenant, context, emb)
                if found is not None:
                    entry, similarity = found
                    if await self._serves(similarity):
                        self.tel.cache_similarity.observe(similarity)
                        return self._hit("semantic", entry)
                    ctx.cache_verify = (entry["content"], similarity)  # answered by the engine, then compared
        ctx.cache = "miss"
        self.tel.cache.labels("miss").inc()
        return None

    async def _serves(self, similarity: float) -> bool:
        """Whether a candidate at this similarity is served (else checked). Without a bound: always."""
        rate = self.max_false_hit_rate
        if rate is None:
            return True
        now = self.clock()
        if now - self._refreshed_at >= self.refresh_every and self._refresher is None:
            self._refreshed_at = now  # in the background: no request waits for the checks to be read
            self._refresher = asyncio.get_running_loop().create_task(self._refresh(rate))
        return self.learned is not None and similarity >= self.learned and self.rng.random() >= self.explore

    async def _refresh(self, rate: float) -> None:
        """The learned threshold from every replica's checks (Redis), at most once per ``refresh_every``."""
        try:
            raw = await self._call(
                self.redis.lrange(self.checks_key, 0, verify.MAX_OBSERVATIONS - 1), self.timeout * 4
            )
            if raw is not None:
                self.learned = verify.learned_threshold(verify.parse(raw), self.threshold, rate)
                self.tel.cache_threshold.set(math.nan if self.learned is None else self.learned)
        finally:
            self._refresher = None

    async def _record_check(self, candidate: tuple[str, float], fresh: str) -> None:
        cached, similarity = candidate
        same = verify.same_answer(cached, fresh)
        self.tel.cache_checks.labels("same" if same else "different").inc()
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.checks_key, verify.encode(similarity, same))
        pipe.ltrim(self.checks_key, 0, verify.MAX_OBSERVATIONS - 1)
        await self._call(pipe.execute(), self.timeout)

    def _hit(self, kind: str, entry: dict[str, Any]) -> CacheHit:
        self.tel.cache.labels(kind).inc()
        self.tel.cache_saved_tokens.inc(entry["completion_tokens"])
        return CacheHit(kind, entry)

    def _embed(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        return self.embedder.embed([text])[0]

    async def _semantic_lookup(
        self, tenant: str, context: str, emb: np.ndarray
    ) -> tuple[dict[str, Any], float] | None:
        from redisvl.query import VectorQuery
        from redisvl.query.filter import Tag

        q = VectorQuery(
            vector=emb.astype(np.float32).tobytes(),
            vector_field_name="embedding",
            return_fields=["entry"],
            num_results=1,
            filter_expression=(Tag("tenant") == tenant)
            & (Tag("model") == self.model)
            & (Tag("ctx") == context),
        )
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

    # ------------------------------------------------------------------ store

    async def store(self, ctx: Any, tenant: str, path: str, body: dict[str, Any], data: bytes) -> None:
        """Called only for complete 200 responses (never errors, refusals or cut streams)."""
        if not getattr(ctx, "cache_store", False) or not self.breaker.closed:
            return
        chat = "messages" in body
        entry = entries.from_sse(data, chat) if body.get("stream") else entries.from_json_response(data, chat)
        if entry is None:
            return
        candidate = getattr(ctx, "cache_verify", None)
        if candidate is not None:
            await self._record_check(candidate, entry["content"])
        raw = orjson.dumps(entry)
        if self.exact_enabled:
            await self._call(
                self.redis.set(exact_key(tenant, self.model, path, body), raw, ex=self.ttl), self.timeout
            )
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
            doc = {
                "tenant": tenant,
                "model": self.model,
                "ctx": context,
                "entry": raw,
                "embedding": emb.astype(np.float32).tobytes(),
            }
            await self._call(self.index.load([doc], ttl=self.ttl), self.semantic_timeout * 4)
