"""`llmfleet dev load`: drive a kept dev fleet (``llmfleet dev up --keep``) with a real arrival trace, so the
dashboard, the alerts and the autoscaler have something to show.

Replays the Azure LLM inference trace (bench/data: arrival times, prompt and output token counts) against the
gateway as streaming chat completions: each request at its trace time (``--speed`` compresses time), a prompt
of about its ContextTokens words, ``max_tokens`` its GeneratedTokens. Progress on stderr; the last line on
stdout is a JSON summary (requests, ok, errors by status, TTFT p50/p95 as the client saw it).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from llmfleet.traces import TraceRequest, read_azure_trace, shape

ROOT = Path(__file__).resolve().parents[3]
TRACES = {
    "conv": ROOT / "bench" / "data" / "azure-llm-conv-2023.csv",
    "code": ROOT / "bench" / "data" / "azure-llm-code-2023.csv",
}
WORDS = ("fleet", "token", "engine", "spot", "cache", "gateway", "replica", "latency")


def prompt(i: int, tokens: int) -> str:
    """About ``tokens`` tokens of text, unique per request (no cache hits unless the trace repeats itself)."""
    words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(max(1, tokens - 8))]
    return f"Request {i}: " + " ".join(words)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _one(
    session: aiohttp.ClientSession, url: str, key: str, model: str, i: int, r: TraceRequest, max_tokens: int
) -> tuple[int, float | None]:
    body = {
        "model": model,
        "stream": True,
        "max_tokens": min(r.output_tokens, max_tokens),
        "messages": [{"role": "user", "content": prompt(i, r.prompt_tokens)}],
    }
    t0 = time.perf_counter()
    ttft = None
    try:
        async with session.post(
            f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            async for _chunk in resp.content.iter_any():
                if ttft is None:
                    ttft = time.perf_counter() - t0
            return resp.status, ttft
    except (aiohttp.ClientError, TimeoutError):
        return 0, None


async def replay(
    url: str,
    key: str,
    model: str,
    trace: list[TraceRequest],
    max_tokens: int = 512,
    concurrency: int = 512,
    progress: bool = True,
) -> dict[str, Any]:
    from tqdm import tqdm

    statuses: dict[str, int] = {}
    ttfts: list[float] = []
    limit = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(trace), desc="dev load", unit="req", disable=not progress, file=sys.stderr)
    timeout = aiohttp.ClientTimeout(total=600, sock_connect=10)
    start = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def run(i: int, r: TraceRequest) -> None:
            delay = r.at - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            async with limit:
                status, ttft = await _one(session, url, key, model, i, r, max_tokens)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200 and ttft is not None:
                ttfts.append(ttft)
            bar.update(1)

        await asyncio.gather(*(run(i, r) for i, r in enumerate(trace)))
    bar.close()
    p50, p95 = _quantile(ttfts, 0.5), _quantile(ttfts, 0.95)
    return {
        "requests": len(trace),
        "ok": statuses.get("200", 0),
        "statuses": statuses,
        "ttft_p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
        "ttft_p95_ms": round(p95 * 1000, 1) if p95 is not None else None,
        "duration_s": round(time.monotonic() - start, 1),
    }


def run(
    url: str,
    key: str,
    model: str,
    trace_name: str,
    minutes: float,
    speed: float,
    copies: int,
    progress: bool,
) -> dict[str, Any]:
    trace = shape(read_azure_trace(TRACES[trace_name]), speed=speed, copies=copies, minutes=minutes)
    return asyncio.run(replay(url, key, model, trace, progress=progress))
