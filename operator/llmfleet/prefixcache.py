"""`llmfleet prefix-cache`: how well vLLM's prefix cache is hitting, from the engines' own counters.

vLLM reuses the KV cache of a prompt prefix it has seen (``--enable-prefix-caching``, on by default in
llmfleet); the gateway's prefix-affinity routing sends prompts that share a prefix to the same replica.
Both only help when prompts are ordered stable-first: system prompt, then tools and long shared
context, then the conversation, and the part that changes (the user's new question) last.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

GUIDE = """How to order prompts so the prefix cache hits (saves 50-90% of prefill on long shared prefixes):
  1. the system prompt first, byte-for-byte identical across requests (no timestamps or request ids in it)
  2. then tool definitions and long shared documents, in a fixed order
  3. then the conversation history, oldest first (it only grows at the end)
  4. the new user message last
Anything that varies early in the prompt (a date, a user name in the system prompt) ends the shared prefix there."""


@dataclass(frozen=True)
class PrefixStats:
    endpoint: str
    queries: float
    hits: float

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries else None


def parse(text: str, endpoint: str = "") -> PrefixStats:
    def total(name: str) -> float:
        out = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                out += float(line.rsplit(" ", 1)[1])
        return out

    return PrefixStats(
        endpoint, total("vllm:prefix_cache_queries_total"), total("vllm:prefix_cache_hits_total")
    )


def scrape(url: str) -> PrefixStats:
    if not url.endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return parse(resp.read().decode(), url)


def report(stats: list[PrefixStats]) -> str:
    lines = ["ENDPOINT                                   PROMPT TOKENS   CACHED   HIT RATE"]
    for s in stats:
        rate = f"{s.hit_rate:.1%}" if s.hit_rate is not None else "-"
        lines.append(f"{s.endpoint[:42]:<42} {s.queries:>13.0f} {s.hits:>8.0f} {rate:>10}")
    q, h = sum(s.queries for s in stats), sum(s.hits for s in stats)
    if len(stats) > 1:
        lines.append(f"{'all':<42} {q:>13.0f} {h:>8.0f} {(h / q if q else 0):>10.1%}")
    return "\n".join(lines) + "\n\n" + GUIDE + "\n"
