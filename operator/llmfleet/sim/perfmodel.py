"""A continuous-batching simulation of one vLLM replica (pure: no I/O, no clock of its own), run with the
replica's ``EngineProfile`` from ``llmfleet.fleet.capacity``.

Each ``step()`` is one engine iteration: waiting requests are admitted while the KV cache has room and the
batch is below ``max_num_seqs``; prefill is chunked under a per-step token budget; every decoding sequence
emits one token. The step costs ``decode_base + decode_per_seq × batch + prefill_tokens / prefill_rate``.
A prefix cache (blocks of the prompt, LRU, bounded by KV capacity) makes repeated prefixes cheaper.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from llmfleet.fleet.capacity import EngineProfile

__all__ = ["BLOCK_TOKENS", "BatchEngine", "EngineProfile", "FastBatchEngine", "SimRequest"]

BLOCK_TOKENS = 16


@dataclass
class SimRequest:
    id: str
    prompt_tokens: int
    max_tokens: int
    prefix_blocks: tuple[int, ...] = ()  # hashes of the prompt's 16-token blocks, in order
    prefilled: int = 0
    generated: int = 0
    cached_tokens: int = 0
    admitted: bool = False


@dataclass
class StepResult:
    duration_s: float
    tokens: list[str] = field(default_factory=list)  # ids that produced one token this step
    first_token: list[str] = field(default_factory=list)  # ids whose first token came this step
    finished: list[str] = field(default_factory=list)  # ids that reached max_tokens


def prefill_chunks(candidates: Iterable[SimRequest], budget: int) -> tuple[int, list[SimRequest]]:
    """Chunked prefill under a step's token budget, in admission order: (tokens prefilled, requests whose
    prompt is now fully processed)."""
    tokens, done = 0, []
    for r in candidates:
        if budget <= 0:
            break
        chunk = min(budget, r.prompt_tokens - r.prefilled)
        r.prefilled += chunk
        budget -= chunk
        tokens += chunk
        if r.prefilled >= r.prompt_tokens:
            done.append(r)
    return tokens, done


class BatchEngine:
    def __init__(self, profile: EngineProfile) -> None:
        self.profile = profile
        self.waiting: deque[SimRequest] = deque()
        self.running: dict[str, SimRequest] = {}
        self.kv_used = 0
        self._prefix: OrderedDict[int, None] = OrderedDict()
        self.prefix_queries = 0
        self.prefix_hits = 0

    @property
    def kv_usage(self) -> float:
        return min(1.0, self.kv_used / self.profile.kv_capacity_tokens)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def submit(self, req: SimRequest) -> None:
        self.waiting.append(req)

    def abort(self, req_id: str) -> bool:
        if req_id in self.running:
            req = self.running.pop(req_id)
            self.kv_used -= req.prompt_tokens + req.generated
            return True
        for req in self.waiting:
            if req.id == req_id:
                self.waiting.remove(req)
                return True
        return False

    def _lookup_prefix(self, req: SimRequest) -> int:
        if not self.profile.prefix_caching:
            return 0
        hits = 0
        for block in req.prefix_blocks:
            if block not in self._prefix:
                break
            self._prefix.move_to_end(block)
            hits += 1
        cached = min(hits * BLOCK_TOKENS, max(0, req.prompt_tokens - 1))
        self.prefix_queries += req.prompt_tokens
        self.prefix_hits += cached
        return cached

    def _remember_prefix(self, req: SimRequest) -> None:
        if not self.profile.prefix_caching:
            return
        for block in req.prefix_blocks:
            self._prefix[block] = None
            self._prefix.move_to_end(block)
        limit = self.profile.kv_capacity_tokens // BLOCK_TOKENS
        while len(self._prefix) > limit:
            self._prefix.popitem(last=False)

    def _admit(self) -> None:
        p = self.profile
        while self.waiting and len(self.running) < p.max_num_seqs:
            req = self.waiting[0]
            need = req.prompt_tokens + 1
            if self.kv_used + need > p.kv_capacity_tokens and self.running:
                break  # wait for sequences to finish and free KV blocks
            self.waiting.popleft()
            req.cached_tokens = self._lookup_prefix(req)
            req.prefilled = req.cached_tokens
            req.admitted = True
            self.kv_used += req.prompt_tokens
            self.running[req.id] = req
            self._admitted(req)

    def _admitted(self, req: SimRequest) -> None:
        """Hook for subclasses that keep their own indexes of the running batch."""

    def step(self) -> StepResult:
        """One engine iteration. Call only when not idle."""
        self._admit()
        p = self.profile
        budget = p.max_batched_tokens
        decoding = [r for r in self.running.values() if r.prefilled >= r.prompt_tokens]
        budget -= len(decoding)
        prefill_tokens, completed_prefill = prefill_chunks(
            (r for r in self.running.values() if r.prefilled < r.prompt_tokens), budget
        )
        result = StepResult(duration_s=p.step_seconds(len(decoding), prefill_tokens))
        for r in decoding + completed_prefill:
            r.generated += 1
            self.kv_used += 1
            result.tokens.append(r.id)
            if r.generated == 1:
                result.first_token.append(r.id)
                self._remember_prefix(r)
            if r.generated >= r.max_tokens:
                result.finished.append(r.id)
        for rid in result.finished:
            r = self.running.pop(rid)
            self.kv_used -= r.prompt_tokens + r.generated
        return result


class FastBatchEngine(BatchEngine):
    """The same engine iteration as ``BatchEngine`` at a cost per step that grows with what changes (admissions,
    prefill chunks, finishes) instead of with the batch: the fleet simulator steps hundreds of replicas with
    batches of hundreds. It does not list the ids that got a token (``StepResult.tokens`` holds only the count
    in ``token_count``) and has no ``abort``; engine-sim, which streams every token, uses ``BatchEngine``.
    A unit test checks both give the same durations, first tokens and finishes on one workload.
    """

    def __init__(self, profile: EngineProfile) -> None:
        super().__init__(profile)
        self._prefilling: dict[str, SimRequest] = {}  # admitted, prompt not yet processed, in admission order
        self._decoding = 0
        self._finish: list[tuple[int, int, str]] = []  # (step index of the last token, admission order, id)
        self._steps = 0
        self._order = 0
        self.token_count = 0  # tokens produced by the last step

    def _admitted(self, req: SimRequest) -> None:
        self._prefilling[req.id] = req

    def abort(self, req_id: str) -> bool:
        raise NotImplementedError("FastBatchEngine does not abort requests; use BatchEngine")

    def step(self) -> StepResult:
        self._admit()
        p = self.profile
        step = self._steps
        self._steps += 1
        decoding = self._decoding
        budget = p.max_batched_tokens - decoding
        prefill_tokens, completed = prefill_chunks(list(self._prefilling.values()), budget)
        for r in completed:
            del self._prefilling[r.id]
        result = StepResult(duration_s=p.step_seconds(decoding, prefill_tokens))
        for r in completed:
            r.generated = 1
            result.first_token.append(r.id)
            self._remember_prefix(r)
            heapq.heappush(self._finish, (step + r.max_tokens - 1, self._order, r.id))
            self._order += 1
        self._decoding += len(completed)
        self.token_count = decoding + len(completed)
        self.kv_used += self.token_count
        while self._finish and self._finish[0][0] <= step:
            _, _, rid = heapq.heappop(self._finish)
            r = self.running.pop(rid)
            r.generated = r.max_tokens
            self.kv_used -= r.prompt_tokens + r.generated
            self._decoding -= 1
            result.finished.append(rid)
        return result
