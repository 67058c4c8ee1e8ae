"""Benchmark: llmfleet gateway vs LiteLLM proxy vs Portkey's gateway vs the direct path, same upstream, same
load, same run.

Layout: each proxy pinned to CPU 1 (one worker), the upstream and the load generator on CPU 0. The
upstream is a trivially fast OpenAI-compatible server (bench/harness.py), so what is measured is the
gateway's own cost. Every llmfleet feature is on: API keys, per-key limits, prefix-affinity routing,
sensitivity detectors with an external provider configured for overflow, metrics and the access log.
LiteLLM runs with a master key (its auth) and one worker; Portkey's open-source gateway (npm, on node, one
process) with the upstream as its custom host. Cases: concurrency 1, 16, 64 × stream false/true, with the CPU
per request of every proxy. One JSON line per case, then a summary line with the ratios.

Then the worst case for the sensitivity scan (--no-worst-case skips it): per detector, a request whose prompt
is adversarial for it, at the body limit (4 MiB, over the scan cap: judged sensitive by size) and just under
the scan cap (1 MiB of text, scanned whole), sent one after another: the gateway's CPU per such request (an
upper bound of the time it holds the event loop). And the TTFT p95 of ordinary streams (concurrency 16)
with and without a client sending those requests back to back beside them.

    python bench/gateway.py [--duration 10] [--quick] [--soak] [--no-litellm] [--no-portkey] [--relay-floor]

--soak holds 10,000 concurrent streams (a token every 50 ms, 20 s each, opened over 15 s, so all of them
are open together from 15 s until the first ends at 20 s) through one gateway process and reports RSS per
open stream and added TTFT p95 against the direct path (with --relay-floor, the same soak through the byte
relay too: what any Python proxy on one core manages at that cadence). A stream lasts --soak-seconds; its
token count follows from the interval unless --soak-tokens is given. LiteLLM is installed into
~/.cache/llmfleet/peers/litellm by hack/peers.sh (run it first, or pass --no-litellm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "operator"))

from harness import hold_streams, load, pct, run_asgi_upstream, run_sink, run_upstream  # noqa: E402
from harness import proc_cpu_seconds as cpu_seconds  # noqa: E402
from harness import proc_rss_kib as rss_kib  # noqa: E402

LITELLM = Path.home() / ".cache" / "llmfleet" / "peers" / "litellm" / "bin" / "litellm"
PORTKEY = (
    Path.home()
    / ".cache"
    / "llmfleet"
    / "peers"
    / "portkey"
    / "node_modules"
    / "@portkey-ai"
    / "gateway"
    / "build"
    / "start-server.js"
)
KEY = "sk-bench-0123456789abcdef"
PROXY_CPU, CLIENT_CPU = 1, 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    port: int, path: str = "/health", timeout: float = 120, headers: dict[str, str] | None = None
) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.25)
    raise RuntimeError(f"port {port}{path} not ready")


def taskset(cmd: list[str]) -> list[str]:
    return (
        ["taskset", "-c", str(PROXY_CPU), *cmd]
        if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1
        else cmd
    )


def start_llmfleet(
    upstream: int,
    workdir: Path,
    ext_port: int,
    otlp: int | None = None,
    ratio: float = 1.0,
    route: str | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    start_llmfleet_config(upstream, workdir, ext_port, otlp, ratio, route)
    log = open(workdir / "gateway-access.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        taskset(
            [
                sys.executable,
                "-m",
                "llmfleet",
                "gateway",
                "--config",
                str(workdir / "gw.json"),
                "--keys-file",
                str(workdir / "keys"),
                "--port",
                str(port),
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_http(port)
    return proc, port


def start_llmfleet_config(
    upstream: int,
    workdir: Path,
    ext_port: int,
    otlp: int | None = None,
    ratio: float = 1.0,
    route: str | None = None,
) -> None:
    """Every feature on: keys, limits, prefix-affinity, and an external provider for general traffic with the
    shipped default (sensitive): every request is scanned (nothing found, so it stays self-hosted). In
    overflow mode the scan runs only while the engines are saturated; this measures the dearer case."""
    cfg = {
        "model": "m",
        "engines": {"static": [f"http://127.0.0.1:{upstream}"]},
        "routing": "prefix-affinity",
        "limits": {"requestsPerMinute": 100_000_000, "tokensPerMinute": 1_000_000_000},
        "sensitivity": {"detectors": ["email", "credit-card", "ssn", "secret"], "default": "sensitive"},
        "external": {"use": "general", "baseURL": f"http://127.0.0.1:{ext_port}/v1", "model": "m"},
    }
    if otlp is not None:  # a share of requests traced, exported to an OTLP/HTTP sink
        cfg["tracing"] = {"endpoint": f"http://127.0.0.1:{otlp}", "sampleRatio": ratio}
    if route is not None:  # spec.routing: two members on the same upstream; rules that read key, header, task
        engines = {"static": [f"http://127.0.0.1:{upstream}"]}
        cfg["route"] = {
            "members": [
                {"name": "self", "model": "m", "engines": engines},
                {"name": "small", "model": "m-small", "engines": engines},
            ],
            "rules": [
                {"match": {"keys": ["batch"]}, "to": "small"},
                {"match": {"headers": {"x-tier": "cheap"}}, "to": "small"},
                {"match": {"tasks": ["code", "math"]}, "to": "self"},
            ],
            **({"auto": {"small": "small", "large": "self"}} if route == "auto" else {"default": "small"}),
        }
    (workdir / "gw.json").write_text(json.dumps(cfg))
    (workdir / "keys").write_text(f"bench: {KEY}\n")


def start_litellm(upstream: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (workdir / "litellm.yaml").write_text(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/m\n"
        f"      api_base: http://127.0.0.1:{upstream}/v1\n      api_key: dummy\n"
        f"general_settings:\n  master_key: {KEY}\nlitellm_settings:\n  drop_params: true\n"
        "  telemetry: false\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
        "NO_DOCS": "True",
    }
    log = open(workdir / "litellm.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        taskset(
            [
                str(LITELLM),
                "--config",
                str(workdir / "litellm.yaml"),
                "--port",
                str(port),
                "--num_workers",
                "1",
                "--host",
                "127.0.0.1",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_http(port, "/health/liveliness", timeout=180)
    return proc, port


GRANIAN = (
    Path(sys.executable).parent / "granian"
)  # in .venv: it must import llmfleet (hack/peers.sh --granian)


def start_granian(upstream: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The same gateway (same config, same keys) behind granian's RSGI interface, one worker, uvloop."""
    start_llmfleet_config(upstream, workdir, upstream)
    port = free_port()
    env = {
        **os.environ,
        "LLMFLEET_GATEWAY_CONFIG": str(workdir / "gw.json"),
        "LLMFLEET_GATEWAY_KEYS": str(workdir / "keys"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
    }
    log = open(workdir / "granian.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        taskset(
            [
                str(GRANIAN),
                "--interface",
                "rsgi",
                "--workers",
                "1",
                "--loop",
                "uvloop",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ws",
                "bench.granian_app:app",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    wait_http(port)
    return proc, port


def start_portkey(upstream: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Portkey's gateway on node. It listens on every interface and has no option for it: a preload pins its
    listen() to loopback."""
    port = free_port()
    pin = workdir / "loopback.cjs"
    pin.write_text(
        "const net = require('net'); const listen = net.Server.prototype.listen;\n"
        "net.Server.prototype.listen = function (...a) {\n"
        "  if (typeof a[0] === 'object' && a[0] !== null) { a[0] = { ...a[0], host: '127.0.0.1' }; }\n"
        "  else if (typeof a[0] === 'number') { a.splice(1, typeof a[1] === 'string' ? 1 : 0, '127.0.0.1'); }\n"
        "  return listen.apply(this, a); };\n"
    )
    log = open(workdir / "portkey.log", "wb")  # noqa: SIM115
    env = {**os.environ, "NODE_ENV": "production"}
    proc = subprocess.Popen(
        taskset(["node", "-r", str(pin), str(PORTKEY), f"--port={port}", "--headless"]),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_http(port, "/", timeout=60)
    TARGET_HEADERS["portkey"] = {
        "authorization": "Bearer dummy",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{upstream}/v1",
    }
    return proc, port


TARGET_HEADERS: dict[str, dict[str, str]] = {}


def start_relay(upstream: int) -> tuple[subprocess.Popen[bytes], int]:
    """The byte-relay floor (harness.serve_relay), pinned like the proxies: no Python proxy can cost less."""
    port = free_port()
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import harness; harness.run_relay({port}, {upstream})"
    proc = subprocess.Popen(taskset([sys.executable, "-c", code]))
    wait_http(port)
    return proc, port


def body(stream: bool) -> bytes:
    msgs = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Summarise the benefits of continuous batching in two sentences."},
    ]
    return json.dumps({"model": "m", "messages": msgs, "max_tokens": 64, "stream": stream}).encode()


def run_case(
    port: int, stream: bool, concurrency: int, duration: float, target: str = ""
) -> dict[str, float]:
    import uvloop

    res = uvloop.run(
        load(
            "127.0.0.1",
            port,
            "/v1/chat/completions",
            body(stream),
            TARGET_HEADERS.get(target, {"authorization": f"Bearer {KEY}"}),
            concurrency,
            duration,
        )
    )
    ok = len(res.latencies)
    return {
        "rps": round(ok / res.elapsed, 1) if res.elapsed else 0.0,
        "p50_ms": round(pct(res.latencies, 0.5) * 1000, 3),
        "p99_ms": round(pct(res.latencies, 0.99) * 1000, 3),
        "ttft_p50_ms": round(pct(res.ttfts, 0.5) * 1000, 3),
        "ttft_p95_ms": round(pct(res.ttfts, 0.95) * 1000, 3),
        "errors": res.errors,
        "requests": ok,
    }


MAX_BODY = 4 * 1024 * 1024  # the gateway's default body limit
SCAN_CAP = 1 << 20  # the default sensitivity.maxScanBytes


def adversarial_prompts(size: int) -> dict[str, str]:
    """A prompt of about `size` characters that is as costly as we know how to make it for each detector."""

    def fill(unit: str) -> str:  # `size` bytes of UTF-8
        return unit * (size // len(unit.encode()))

    return {
        "email": fill("a" * 4000 + "@"),  # long runs of address characters next to an `@` (quadratic in `re`)
        "credit-card": fill("4111 1111 1111 1112 x "),  # many card-shaped runs, none Luhn-valid
        "ssn": fill("SSN 000-12-3456 "),  # many SSN candidates, none valid
        "secret": fill("sk-proj-" + "A" * 15 + " AKIA" + "B" * 15 + " password: " + "x" * 5 + " "),
        "unicode": fill("４​１ ｊ＠"),  # fullwidth, zero-width and NBSP: the NFKC path
    }


def worst_case(port: int, pid: int, seconds: float) -> list[dict[str, Any]]:
    """Worst-case requests: gateway CPU per request, then the TTFT of other streams beside a flood of them."""
    import uvloop

    lines: list[dict[str, Any]] = []
    headers = {"authorization": f"Bearer {KEY}"}
    for size_name, size in (("body-limit", MAX_BODY - 4096), ("scan-cap", SCAN_CAP - 4096)):
        for detector, prompt in adversarial_prompts(size).items():
            payload = json.dumps(
                {"model": "m", "prompt": prompt, "max_tokens": 1}, ensure_ascii=False
            ).encode()
            n = 5
            cpu0 = cpu_seconds(pid)
            res = uvloop.run(_sequential(port, payload, headers, n))
            cpu = cpu_seconds(pid) - cpu0
            lines.append(
                {
                    "case": "worst-case",
                    "detector": detector,
                    "size": size_name,
                    "body_bytes": len(payload),
                    "requests": n,
                    "errors": res.errors,
                    "statuses": res.statuses,
                    "gateway_cpu_ms_per_request": round(cpu / n * 1000, 1),
                    "latency_p50_ms": round(pct(res.latencies, 0.5) * 1000, 1),
                }
            )
    # Ordinary streams with and without a client flooding worst-case requests beside them.
    flood_body = json.dumps(
        {"model": "m", "prompt": adversarial_prompts(SCAN_CAP - 4096)["email"], "max_tokens": 1},
        ensure_ascii=False,
    ).encode()

    async def streams(flood: bool) -> Any:
        stop = asyncio.Event()

        async def flooder() -> int:
            sent = 0
            while not stop.is_set():
                await _sequential(port, flood_body, headers, 1)
                sent += 1
            return sent

        task = asyncio.get_running_loop().create_task(flooder()) if flood else None
        res = await load("127.0.0.1", port, "/v1/chat/completions", body(True), headers, 16, seconds)
        stop.set()
        sent = await task if task else 0
        return res, sent

    quiet, _ = uvloop.run(streams(False))
    loud, sent = uvloop.run(streams(True))
    lines.append(
        {
            "case": "worst-case-beside-streams",
            "concurrency": 16,
            "seconds": seconds,
            "worst_case_requests_sent": sent,
            "errors": quiet.errors + loud.errors,
            "ttft_p95_unloaded_ms": round(pct(quiet.ttfts, 0.95) * 1000, 2),
            "ttft_p95_beside_worst_case_ms": round(pct(loud.ttfts, 0.95) * 1000, 2),
            "ttft_p95_added_ms": round((pct(loud.ttfts, 0.95) - pct(quiet.ttfts, 0.95)) * 1000, 2),
        }
    )
    return lines


async def _sequential(port: int, payload: bytes, headers: dict[str, str], n: int) -> Any:
    """n requests one after another on one connection."""
    from harness import Result, _read_response, request_bytes

    res = Result()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    req = request_bytes("127.0.0.1", port, "/v1/completions", payload, headers)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(req)
            await _read_response(reader, t0, res)
            res.latencies.append(time.perf_counter() - t0)
    finally:
        writer.close()
    res.elapsed = 1.0
    return res


def soak(
    upstream_soak: int, targets: dict[str, tuple[int, int]], streams: int, seconds: float, ramp: float
) -> list[dict[str, object]]:
    """N concurrent long streams direct, then through each target (name -> (port, pid)) in turn; a line per
    target with its RSS per open stream and TTFT added to the direct path's."""
    import uvloop

    async def hold(port: int, measure_pid: int | None) -> tuple[object, int, int]:
        base = rss_kib(measure_pid) if measure_pid else 0
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                await asyncio.sleep(0.5)
                if measure_pid:
                    peak = max(peak, rss_kib(measure_pid))

        sampler = asyncio.get_running_loop().create_task(sample())
        res = await hold_streams(
            "127.0.0.1",
            port,
            "/v1/chat/completions",
            body(True),
            {"authorization": f"Bearer {KEY}"},
            streams,
            ramp,
            timeout=ramp + seconds + 120,
        )
        sampler.cancel()
        return res, base, peak

    direct, _, _ = uvloop.run(hold(upstream_soak, None))
    lines = []
    for target, (port, pid) in targets.items():
        cpu0 = cpu_seconds(pid)
        through, base, peak = uvloop.run(hold(port, pid))
        cpu = cpu_seconds(pid) - cpu0
        added = pct(through.ttfts, 0.95) - pct(direct.ttfts, 0.95)  # type: ignore[attr-defined]
        done = len(through.latencies)  # type: ignore[attr-defined]
        lines.append(
            {
                "case": "soak",
                "target": target,
                "concurrent_streams": streams,
                "stream_seconds": seconds,
                "ramp_seconds": ramp,
                "peak_open_streams_at_least": streams if ramp <= seconds else round(streams * seconds / ramp),
                "completed": done,
                "errors": streams - done,  # every stream that did not complete with status 200
                "rss_base_kib": base,
                "rss_peak_kib": peak,
                "rss_kib_per_stream": round((peak - base) / streams, 2),
                "ttft_direct_p95_ms": round(pct(direct.ttfts, 0.95) * 1000, 2),  # type: ignore[attr-defined]
                "ttft_gateway_p95_ms": round(pct(through.ttfts, 0.95) * 1000, 2),  # type: ignore[attr-defined]
                "ttft_added_p95_ms": round(added * 1000, 2),
                "ttft_gateway_p50_ms": round(pct(through.ttfts, 0.5) * 1000, 2),  # type: ignore[attr-defined]
                "ttft_gateway_p99_ms": round(pct(through.ttfts, 0.99) * 1000, 2),  # type: ignore[attr-defined]
                "statuses": through.statuses,  # type: ignore[attr-defined]
                "direct_statuses": direct.statuses,  # type: ignore[attr-defined]
                "gateway_cpu_s": round(cpu, 1),
                "gateway_cpu_share": round(cpu / through.elapsed, 2),  # type: ignore[attr-defined]
            }
        )
    return lines


def main() -> int:  # noqa: C901 - one script: flags, then each case in turn
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--quick", action="store_true", help="2 s per case, no soak (under two minutes)")
    ap.add_argument("--soak", action="store_true", help="also run the 10,000-stream soak")
    ap.add_argument("--soak-streams", type=int, default=10_000)
    ap.add_argument(
        "--soak-interval", type=float, default=0.05, help="seconds between tokens of a soak stream"
    )
    ap.add_argument("--soak-seconds", type=float, default=20.0, help="length of a soak stream")
    ap.add_argument(
        "--soak-tokens",
        type=int,
        default=None,
        help="tokens per soak stream (default: --soak-seconds / --soak-interval)",
    )
    ap.add_argument("--soak-ramp", type=float, default=15.0, help="seconds over which the soak streams open")
    ap.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (e.g. not installed)")
    ap.add_argument("--no-portkey", action="store_true", help="skip Portkey's gateway (e.g. not installed)")
    ap.add_argument(
        "--granian",
        action="store_true",
        help="also run the gateway behind granian's RSGI interface "
        "(target llmfleet-granian; granian from hack/peers.sh --granian)",
    )
    ap.add_argument("--no-worst-case", action="store_true", help="skip the sensitivity-scan worst case")
    ap.add_argument(
        "--relay-floor",
        action="store_true",
        help="also measure a byte relay that parses nothing "
        "(target relay-floor): the least any Python proxy pinned to one core can cost here",
    )
    ap.add_argument(
        "--upstream",
        choices=("raw", "uvicorn"),
        default="raw",
        help="the fast upstream: a raw asyncio protocol (the default; far cheaper than any Python "
        "HTTP server) or an ASGI app on uvicorn, as a Python engine server such as vLLM is "
        "(its one-message streams make the direct streaming path much faster)",
    )
    ap.add_argument("--soak-only", action="store_true", help="only the soak case")
    ap.add_argument(
        "--tracing",
        action="store_true",
        help="also a gateway tracing every request (OpenTelemetry, OTLP/HTTP to a sink): what tracing on costs "
        "beside the same gateway with it off",
    )
    ap.add_argument(
        "--model-route",
        action="store_true",
        help="also the gateway with a model route (spec.routing): rules only, and rules with the auto policy "
        "(a query embedding and the bank's vote per request): what model selection costs per request",
    )
    args = ap.parse_args()
    if args.quick:
        args.duration, args.soak = 2.0, False
    if args.soak_only:
        args.soak, args.no_litellm, args.no_portkey, args.no_worst_case = True, True, True, True
    if args.soak_tokens is None:
        args.soak_tokens = max(1, round(args.soak_seconds / args.soak_interval))
    # For this run only (children inherit it): a gateway holding N streams needs 2N descriptors. Raising
    # the hard limit needs privileges; without them, the soft limit goes as high as the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (262144, max(hard, 262144)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # One gateway process holds two descriptors per stream (client and upstream). Where the hard limit cannot
    # be raised (no CAP_SYS_RESOURCE, as in this container: 20,000), the soak holds as many as fit and says so.
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    soak_streams = min(args.soak_streams, (fd_limit - 64) // 2)
    if os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {CLIENT_CPU})
    use_litellm = not args.no_litellm and LITELLM.exists()
    if not args.no_litellm and not use_litellm:
        print(json.dumps({"warning": f"LiteLLM not found at {LITELLM}; run hack/peers.sh"}), flush=True)
    use_portkey = not args.no_portkey and PORTKEY.exists() and shutil.which("node") is not None
    if not args.no_portkey and not use_portkey:
        print(
            json.dumps(
                {"warning": f"Portkey's gateway not found at {PORTKEY} (or no node); run hack/peers.sh"}
            ),
            flush=True,
        )

    workdir = Path(tempfile.mkdtemp(prefix="llmfleet-bench-gw-"))
    ctx = multiprocessing.get_context("spawn")
    up_port, soak_port = free_port(), free_port()
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=run_asgi_upstream, args=(up_port, 32, CLIENT_CPU), daemon=True)
        if args.upstream == "uvicorn"
        else ctx.Process(target=run_upstream, args=(up_port, 32, 0.0, CLIENT_CPU), daemon=True),
    ]
    if args.soak:
        procs.append(
            ctx.Process(
                target=run_upstream,
                args=(soak_port, args.soak_tokens, args.soak_interval, CLIENT_CPU),
                daemon=True,
            )
        )
    if args.tracing:
        sink_port = free_port()
        procs.append(ctx.Process(target=run_sink, args=(sink_port, CLIENT_CPU), daemon=True))
    for p in procs:
        p.start()
    time.sleep(1)
    servers: dict[str, tuple[subprocess.Popen[bytes] | None, int]] = {"direct": (None, up_port)}
    try:
        servers["llmfleet"] = start_llmfleet(up_port, workdir, up_port)
        if args.tracing:  # every request traced, and the default share (spec.gateway.tracing.sampleRatio)
            from llmfleet.gateway.config import TracingConfig

            (workdir / "traced").mkdir()
            (workdir / "traced-default").mkdir()
            servers["llmfleet-traced"] = start_llmfleet(up_port, workdir / "traced", up_port, sink_port)
            servers["llmfleet-traced-default"] = start_llmfleet(
                up_port, workdir / "traced-default", up_port, sink_port, TracingConfig().sample_ratio
            )
        if args.model_route:  # spec.routing: rules only (to the small member), then rules and auto
            for route in ("rules", "auto"):
                (workdir / f"route-{route}").mkdir()
                servers[f"llmfleet-route-{route}"] = start_llmfleet(
                    up_port, workdir / f"route-{route}", up_port, route=route
                )
        if use_litellm:
            servers["litellm"] = start_litellm(up_port, workdir)
        if args.granian:
            (workdir / "granian").mkdir()
            servers["llmfleet-granian"] = start_granian(up_port, workdir / "granian")
        no_stream: set[str] = set()
        if use_portkey:
            servers["portkey"] = start_portkey(up_port, workdir)
            probe = run_case(servers["portkey"][1], True, 1, 0.2, "portkey")
            if probe["errors"]:
                no_stream.add("portkey")
                print(
                    json.dumps(
                        {
                            "warning": "Portkey's gateway fails every streaming request here (see portkey.log "
                            f"in {workdir}): its streaming cases are left out",
                            "probe": probe,
                        }
                    ),
                    flush=True,
                )
        if args.relay_floor:
            servers["relay-floor"] = start_relay(up_port)
        results: dict[tuple[str, bool, int], dict[str, Any]] = {}
        for stream in () if args.soak_only else (False, True):
            for conc in (1, 16, 64):
                for target, (proc, port) in servers.items():
                    if stream and target in no_stream:
                        continue
                    run_case(port, stream, conc, min(1.0, args.duration / 4), target)  # warm-up
                    cpu0 = cpu_seconds(proc.pid) if proc else 0.0
                    figures = run_case(port, stream, conc, args.duration, target)
                    cpu = (cpu_seconds(proc.pid) - cpu0) if proc else 0.0
                    n = figures["requests"] or 1
                    line = {
                        "target": target,
                        "stream": stream,
                        "concurrency": conc,
                        **figures,
                        "gateway_cpu_s": round(cpu, 2),
                        "cpu_us_per_request": round(cpu / n * 1e6, 1) if proc else None,
                    }
                    results[(target, stream, conc)] = line
                    print(json.dumps(line), flush=True)

        def get(t: str, s: bool, c: int, k: str) -> float:
            return results.get((t, s, c), {}).get(k, float("nan"))

        summary = {
            "summary": True,
            "upstream": args.upstream,
            "added_p50_ms": round(get("llmfleet", False, 1, "p50_ms") - get("direct", False, 1, "p50_ms"), 3),
            "added_p99_ms": round(get("llmfleet", False, 1, "p99_ms") - get("direct", False, 1, "p99_ms"), 3),
            "stream_ttft_added_p50_ms": round(
                get("llmfleet", True, 1, "ttft_p50_ms") - get("direct", True, 1, "ttft_p50_ms"), 3
            ),
            "share_of_direct": round(get("llmfleet", False, 64, "rps") / get("direct", False, 64, "rps"), 3),
            "stream_share_of_direct": round(
                get("llmfleet", True, 64, "rps") / get("direct", True, 64, "rps"), 3
            ),
        }
        if args.tracing:
            for s_ in (False, True):
                for target, name in (("llmfleet-traced", "all"), ("llmfleet-traced-default", "default")):
                    key = f"{'stream_' if s_ else ''}tracing_{name}"
                    base_cpu = get("llmfleet", s_, 64, "cpu_us_per_request")
                    summary[f"{key}_rps_share"] = round(
                        get(target, s_, 64, "rps") / get("llmfleet", s_, 64, "rps"), 3
                    )
                    summary[f"{key}_cpu_us_added"] = round(
                        get(target, s_, 64, "cpu_us_per_request") - base_cpu, 1
                    )
        if args.model_route:
            for s_ in (False, True):
                for route in ("rules", "auto"):
                    key = f"{'stream_' if s_ else ''}route_{route}"
                    summary[f"{key}_cpu_us_added"] = round(
                        get(f"llmfleet-route-{route}", s_, 64, "cpu_us_per_request")
                        - get("llmfleet", s_, 64, "cpu_us_per_request"),
                        1,
                    )
                    summary[f"{key}_added_p50_ms"] = round(
                        get(f"llmfleet-route-{route}", s_, 1, "p50_ms" if not s_ else "ttft_p50_ms")
                        - get("llmfleet", s_, 1, "p50_ms" if not s_ else "ttft_p50_ms"),
                        3,
                    )
        if use_litellm:
            summary["rps_ratio_vs_litellm"] = round(
                get("llmfleet", False, 64, "rps") / get("litellm", False, 64, "rps"), 2
            )
            summary["stream_rps_ratio_vs_litellm"] = round(
                get("llmfleet", True, 64, "rps") / get("litellm", True, 64, "rps"), 2
            )
            summary["litellm_added_p50_ms"] = round(
                get("litellm", False, 1, "p50_ms") - get("direct", False, 1, "p50_ms"), 3
            )
        if use_portkey:
            summary["rps_ratio_vs_portkey"] = round(
                get("llmfleet", False, 64, "rps") / get("portkey", False, 64, "rps"), 2
            )
            if "portkey" not in no_stream:
                summary["stream_rps_ratio_vs_portkey"] = round(
                    get("llmfleet", True, 64, "rps") / get("portkey", True, 64, "rps"), 2
                )
        if args.granian:
            summary["granian_cpu_ratio"] = round(
                get("llmfleet-granian", False, 64, "cpu_us_per_request")
                / get("llmfleet", False, 64, "cpu_us_per_request"),
                2,
            )
            summary["granian_stream_cpu_ratio"] = round(
                get("llmfleet-granian", True, 64, "cpu_us_per_request")
                / get("llmfleet", True, 64, "cpu_us_per_request"),
                2,
            )
        for name in ("llmfleet", "llmfleet-granian", "litellm", "portkey", "relay-floor"):
            if (name, False, 64) in results:
                summary[f"{name}_cpu_us_per_request"] = get(name, False, 64, "cpu_us_per_request")
            if (name, True, 64) in results:
                summary[f"{name}_stream_cpu_us_per_request"] = get(name, True, 64, "cpu_us_per_request")
        if args.relay_floor:
            summary["cpu_ratio_vs_relay_floor"] = round(
                get("llmfleet", False, 64, "cpu_us_per_request")
                / get("relay-floor", False, 64, "cpu_us_per_request"),
                2,
            )
            summary["stream_cpu_ratio_vs_relay_floor"] = round(
                get("llmfleet", True, 64, "cpu_us_per_request")
                / get("relay-floor", True, 64, "cpu_us_per_request"),
                2,
            )
        if args.relay_floor:
            summary["relay_floor_share_of_direct"] = round(
                get("relay-floor", False, 64, "rps") / get("direct", False, 64, "rps"), 3
            )
            summary["relay_floor_stream_share_of_direct"] = round(
                get("relay-floor", True, 64, "rps") / get("direct", True, 64, "rps"), 3
            )
        if not args.soak_only:
            print(json.dumps(summary), flush=True)
        if not args.no_worst_case:
            proc, port = servers["llmfleet"]
            assert proc is not None
            for line in worst_case(port, proc.pid, max(3.0, args.duration)):
                print(json.dumps(line), flush=True)
                results[(f"worst {line.get('detector', line['case'])} {line.get('size', '')}", True, 0)] = (
                    line
                )
        if args.soak:
            gw_proc, _ = servers.pop("llmfleet")
            if gw_proc is not None:
                gw_proc.send_signal(signal.SIGTERM)
                gw_proc.wait(timeout=60)
            soak_proc, soak_gw = start_llmfleet(soak_port, workdir, soak_port)
            servers["llmfleet-soak"] = (soak_proc, soak_gw)
            targets = {"llmfleet": (soak_gw, soak_proc.pid)}
            if args.relay_floor:  # the same soak through the byte relay: what any Python proxy manages here
                relay_proc, relay_port = start_relay(soak_port)
                servers["relay-floor-soak"] = (relay_proc, relay_port)
                targets["relay-floor"] = (relay_port, relay_proc.pid)
            for line in soak(
                soak_port, targets, soak_streams, args.soak_tokens * args.soak_interval, args.soak_ramp
            ):
                print(
                    json.dumps(
                        {
                            **line,
                            "streams_requested": args.soak_streams,
                            "fd_limit": fd_limit,
                            "token_interval_s": args.soak_interval,
                            "tokens_per_stream": args.soak_tokens,
                        }
                    ),
                    flush=True,
                )
                results[(f"soak {line['target']}", True, soak_streams)] = (
                    line  # its errors count in the exit code
                )
        errors = sum(int(v.get("errors", 0)) for v in results.values())
        return 0 if errors == 0 else 1
    finally:
        for proc, _ in servers.values():
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    sys.exit(main())
