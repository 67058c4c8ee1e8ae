"""The `llmfleet` command: one entry point with subcommands (plan, render, crd, operator, gateway, …).

Bad input exits with code 2 and a message naming the file and field; no tracebacks for user errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from llmfleet import __version__
from llmfleet.api.load import SpecError, load_documents
from llmfleet.api.sizing import SizingError
from llmfleet.api.v1alpha1 import LLMDeployment

EXIT_USAGE = 2


class UserError(Exception):
    """A problem with the user's input: printed without a traceback, exit code 2."""


def _read_input(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    return p.read_text(), path


def _load(path: str) -> tuple[list[LLMDeployment], str]:
    text, source = _read_input(path)
    return load_documents(text, source), source


def cmd_plan(args: argparse.Namespace) -> int:
    from llmfleet.planning import format_plan, make_plan

    plans = []
    objs, source = _load(args.file)
    for obj in objs:
        try:
            plans.append(make_plan(obj))
        except SizingError as exc:
            raise UserError(f"{source}: {obj.metadata.name}: {exc.field}: {exc}") from None
    if args.output == "json":
        for p in plans:
            print(json.dumps(p.as_dict(), sort_keys=True))
    else:
        print("\n".join(format_plan(p) for p in plans), end="")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from llmfleet.api.sizing import size
    from llmfleet.render import RenderOptions, render_all

    options = RenderOptions(llmfleet_image=args.llmfleet_image, engine_image=args.engine_image)
    out = []
    objs, source = _load(args.file)
    for obj in objs:
        try:
            sizing = size(obj.spec)
        except SizingError as exc:
            raise UserError(f"{source}: {obj.metadata.name}: {exc.field}: {exc}") from None
        if args.namespace:
            obj = obj.model_copy(
                update={"metadata": obj.metadata.model_copy(update={"namespace": args.namespace})}
            )
        out.extend(render_all(obj, sizing, options=options))
        if obj.spec.cache.any_enabled and obj.spec.cache.redis.mode == "managed":
            print(
                f"note: the Secret {obj.metadata.name}-cache-auth (the managed Redis's password) is generated "
                "by the operator, not rendered here",
                file=sys.stderr,
            )
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False, width=120))
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from llmfleet.api.crd import render_yaml

    sys.stdout.write(render_yaml())
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    import logging

    from pydantic import ValidationError

    from llmfleet.reconcile.process import run
    from llmfleet.settings import OperatorSettings

    overrides = {
        k: v
        for k, v in {
            "namespaces": args.namespace or None,
            "kubeconfig": args.kubeconfig,
            "leader_elect": args.leader_elect,
            "lease_name": args.lease_name,
            "lease_namespace": args.lease_namespace,
            "log_level": args.log_level,
            "liveness_port": args.liveness_port,
        }.items()
        if v is not None
    }
    try:
        settings = OperatorSettings(**overrides)
    except ValidationError as exc:
        raise UserError(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        ) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(settings)


def format_status(obj: dict[str, Any]) -> str:
    """``llmfleet status``'s table: the CR's conditions, replicas, live figures and last scaling decisions."""
    meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    model = (spec.get("model") or {}).get("name", "?")
    lines = [
        f"{meta.get('namespace', '')}/{meta.get('name', '')}: {model} (TP {st.get('tensorParallelSize', '?')})"
    ]
    gen, seen = meta.get("generation"), st.get("observedGeneration")
    if seen is None or (gen is not None and seen < gen):
        lines.append(f"  the operator has not observed generation {gen} yet (observed: {seen})")
    lines.append("")
    lines.append(f"{'CONDITION':<17} {'STATUS':<7} {'REASON':<24} MESSAGE")
    for c in st.get("conditions") or []:
        lines.append(
            f"{c.get('type', ''):<17} {c.get('status', ''):<7} {c.get('reason', ''):<24} {c.get('message', '')}"
        )
    reps = st.get("replicas") or {}
    spot, od = reps.get("spot") or {}, reps.get("onDemand") or {}
    lines.append("")
    lines.append(
        f"Replicas   {st.get('ready', '?')} ready (spot {spot.get('ready', 0)}/{spot.get('desired', 0)}, "
        f"on-demand {od.get('ready', 0)}/{od.get('desired', 0)}); ${st.get('costPerHour', 0)}/h"
    )
    if st.get("endpoint"):
        lines.append(f"Endpoint   {st['endpoint']}")
    m = st.get("metrics") or {}
    if m:
        parts = [
            f"queue {m.get('queueDepth')}",
            f"running {m.get('running')}",
            f"TTFT p95 {m['ttftP95']:.3f}s" if m.get("ttftP95") is not None else "TTFT p95 -",
            f"KV cache {m['kvCacheUsage']:.0%}" if m.get("kvCacheUsage") is not None else "KV cache -",
            f"prompt {m.get('promptTokensPerSecond')} tok/s",
            f"generation {m.get('generationTokensPerSecond')} tok/s",
        ]
        lines.append("Live       " + ", ".join(parts))
    history = (st.get("autoscaling") or {}).get("history") or []
    lines.append("")
    if not history:
        lines.append("No scaling decisions recorded yet.")
    else:
        lines.append(f"{'TIME':<21} {'FROM':>4} {'TO':>4} {'SPOT':>4} {'OD':>4}  {'REASON':<15} MESSAGE")
        for h in reversed(history):
            lines.append(
                f"{h.get('time', ''):<21} {h.get('from', ''):>4} {h.get('to', ''):>4} {h.get('spot', ''):>4} "
                f"{h.get('onDemand', ''):>4}  {h.get('reason', ''):<15} {h.get('message', '')}"
            )
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    from llmfleet.api.v1alpha1 import API_VERSION, KIND
    from llmfleet.kube.client import KubeClient, load_config
    from llmfleet.kube.port import KubeError

    try:
        obj = KubeClient(load_config(args.kubeconfig)).get(API_VERSION, KIND, args.namespace, args.name)
    except KubeError as exc:
        raise UserError(f"cannot read llmdeployment {args.namespace}/{args.name}: {exc}") from None
    except Exception as exc:  # no kubeconfig, an unreachable API server: the client's own words
        raise UserError(f"cannot reach the cluster: {exc}") from None
    if obj is None:
        raise UserError(f"llmdeployment {args.namespace}/{args.name} not found")
    if args.output == "json":
        st = obj.get("status") or {}
        print(
            json.dumps(
                {
                    "name": args.name,
                    "namespace": args.namespace,
                    "generation": obj["metadata"].get("generation"),
                    "observedGeneration": st.get("observedGeneration"),
                    "conditions": st.get("conditions") or [],
                    "replicas": st.get("replicas"),
                    "costPerHour": st.get("costPerHour"),
                    "endpoint": st.get("endpoint"),
                    "metrics": st.get("metrics"),
                    "history": (st.get("autoscaling") or {}).get("history") or [],
                },
                indent=2,
            )
        )
    else:
        print(format_status(obj), end="")
    return 0


def cmd_pod_runner(args: argparse.Namespace) -> int:
    import logging

    from llmfleet.dev.podrunner import PodRunner
    from llmfleet.kube.client import KubeClient, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    targets = Path(args.prometheus_targets) if args.prometheus_targets else None
    PodRunner(KubeClient(load_config(args.kubeconfig)), Path(args.logs), prometheus_targets=targets).run()
    return 0


def cmd_engine_sim(args: argparse.Namespace) -> int:
    from llmfleet.sim.engine import serve

    serve(args)
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from llmfleet.gateway.server import serve

    if args.config and not Path(args.config).is_file():
        raise UserError(f"--config {args.config}: no such file")
    serve(args)
    return 0


def cmd_dev_up(args: argparse.Namespace) -> int:
    from llmfleet.dev.demo import run

    example = Path(args.file)
    if not example.is_file():
        raise UserError(f"{args.file}: no such file")
    load_documents(example.read_text(), str(example))  # a bad example is a user error, before any start-up
    return run(example, args.keep, Path(args.run_dir).resolve())


def cmd_prefix_cache(args: argparse.Namespace) -> int:
    from llmfleet.prefixcache import GUIDE, report, scrape

    if not args.metrics:
        print(GUIDE)
        return 0
    stats = []
    for url in args.metrics:
        try:
            stats.append(scrape(url))
        except (OSError, ValueError) as exc:
            raise UserError(f"--metrics {url}: cannot read vLLM metrics: {exc}") from None
    print(report(stats), end="")
    return 0


def _policy_names(asked: list[str]) -> tuple[str, ...]:
    from llmfleet.sim.fleet import POLICIES

    names: tuple[str, ...] = ()
    for name in asked:
        for one in POLICIES if name == "all" else (name,):
            if one not in POLICIES:
                raise UserError(f"--policy {one}: unknown; one of all, {', '.join(POLICIES)}")
            names += (one,) if one not in names else ()
    return names


def _print_policies(lines: Iterable[dict[str, Any]], where: dict[str, Any], as_json: bool) -> None:
    """One JSON object per policy, or a table (each row as soon as its replay ends)."""
    if not as_json:
        head = f"{'policy':<18} {'SLO met':>8} {'TTFT p95':>9} {'TTFT p99':>9} {'e2e p95':>8} {'cost $':>9} {'GPU-h':>7}"
        print(head)
    for line in lines:
        if as_json:
            print(json.dumps({**where, **line}), flush=True)
            continue
        att, gpu = line["ttft_slo_attainment"], sum(line["gpu_hours"].values())
        print(
            f"{line['policy']:<18} {'-' if att is None else f'{att:.2%}':>8} {line['ttft_p95_s'] or 0:>8.3f}s "
            f"{line['ttft_p99_s'] or 0:>8.3f}s {line['e2e_p95_s'] or 0:>7.1f}s {line['cost_usd']:>9.2f} "
            f"{gpu:>7.2f}",
            flush=True,
        )


def _simulate_inputs(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """The trace and the simulator's configuration from the flags, each bad value a UserError naming its flag."""
    from llmfleet.sim.fleet import SimConfig, read_azure_trace, shape

    trace_path = Path(args.trace)
    if not trace_path.is_file():
        raise UserError(f"--trace {args.trace}: no such file")
    for flag, value in (("--speed", args.speed), ("--copies", args.copies), ("--tick", args.tick)):
        if value <= 0:
            raise UserError(f"{flag} must be > 0, got {value}")
    for flag, value in (
        ("--warmup", args.warmup),
        ("--cold-start", args.cold_start),
        ("--reclaims-per-hour", args.reclaims_per_hour),
    ):
        if value < 0:
            raise UserError(f"{flag} must be >= 0, got {value}")
    if args.static is not None and args.static < 1:
        raise UserError(f"--static must be >= 1, got {args.static}")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {args.minutes}")
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"--plot {args.plot}: the file must end in .png, .svg or .pdf")
    if args.plot:
        _check_plot_available()
    try:
        trace = shape(read_azure_trace(trace_path), args.speed, args.copies, args.minutes, args.seed)
    except ValueError as exc:
        raise UserError(f"--trace: {exc}") from None
    if not trace or trace[-1].at < args.warmup * 60:
        raise UserError(f"--warmup {args.warmup:g} min leaves no request of the trace to measure")
    config = SimConfig(
        cold_start_s=args.cold_start,
        tick_s=args.tick,
        spot_reclaims_per_hour=args.reclaims_per_hour,
        spot_capacity=args.spot_capacity,
        static_replicas=args.static,
        warmup_s=args.warmup * 60,
        initial_replicas=args.initial,
        seed=args.seed,
    )
    return trace, config


def cmd_simulate(args: argparse.Namespace) -> int:
    from llmfleet.sim.fleet import compare, policies

    objs, source = _load(args.file)
    if len(objs) != 1:
        raise UserError(f"{source}: simulate takes exactly one LLMDeployment, found {len(objs)}")
    trace, config = _simulate_inputs(args)
    trace_path = Path(args.trace)
    print(
        f"llmfleet simulate: {len(trace)} requests over {trace[-1].at:.0f} s (trace {trace_path.name}, "
        f"time /{args.speed:g}, {args.copies} cop{'y' if args.copies == 1 else 'ies'})",
        file=sys.stderr,
    )
    names = _policy_names(args.policy)
    where = {"source": trace_path.name, "speed": args.speed, "copies": args.copies}
    show = sys.stderr.isatty() if args.progress is None else args.progress
    bars = _Progress(trace[-1].at) if show else None
    drawn: list[dict[str, Any]] = []

    def kept(lines: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for line in lines:
            if bars is not None:
                bars.close()
            series = line.pop("series", None)
            if series is not None:
                drawn.append({**line, "series": series})
            yield line

    series = bool(args.plot)
    try:
        if not names:
            for line in kept(compare(objs[0].spec, trace, config, bars, series)):
                print(json.dumps({**where, **line}), flush=True)
        else:
            _print_policies(
                kept(policies(objs[0].spec, trace, config, names, bars, series)), where, args.json
            )
    except SizingError as exc:
        raise UserError(f"{source}: {objs[0].metadata.name}: {exc.field}: {exc}") from None
    finally:
        if bars is not None:
            bars.close()
    if args.plot and drawn:
        from llmfleet.sim.plot import plot

        title = (
            f"{objs[0].metadata.name} on {trace_path.name} ({len(trace)} requests"
            f"{f', time /{args.speed:g}' if args.speed != 1 else ''}"
            f"{f', {args.copies} copies' if args.copies != 1 else ''})"
        )
        plot(drawn, Path(args.plot), title)
        print(f"llmfleet simulate: drew {args.plot}", file=sys.stderr)
    return 0


def _check_plot_available() -> None:
    from llmfleet.sim.plot import PLOT_EXTRA

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(f"--plot needs matplotlib, which is not installed: {PLOT_EXTRA}") from None


class _Progress:
    """One tqdm bar on stderr per replay, in simulated seconds (a long trace takes minutes to replay)."""

    def __init__(self, total_s: float) -> None:
        self.total = max(1, round(total_s))
        self.bar: Any = None

    def __call__(self, name: str) -> Callable[[float], None]:
        from tqdm import tqdm

        self.close()
        bar = self.bar = tqdm(
            total=self.total, desc=f"{name:<18}", unit="sim-s", file=sys.stderr, mininterval=0.5, leave=True
        )

        def update(now: float) -> None:
            done = min(self.total, round(now))
            if done > bar.n:
                bar.update(done - bar.n)

        return update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.total - self.bar.n)
            self.bar.close()
            self.bar = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmfleet",
        description="LLM serving fleets on Kubernetes: size, render and run LLMDeployments.",
    )
    parser.add_argument("--version", action="version", version=f"llmfleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "plan",
        help="size an LLMDeployment: TP, KV capacity, concurrency and cost",
        description="Print tensor-parallel size, GPUs per replica, KV-cache capacity, the most "
        "concurrent sequences and $/h per replica and fleet, on-demand vs spot.",
    )
    p.add_argument("-f", "--file", required=True, help="LLMDeployment YAML file (- for stdin)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table", help="output format")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "render",
        help="print every child manifest of an LLMDeployment as YAML (for GitOps)",
        description="Render the Deployments, Services, ConfigMap, RBAC and PDB the operator would "
        "apply, without a cluster.",
    )
    p.add_argument("-f", "--file", required=True, help="LLMDeployment YAML file (- for stdin)")
    p.add_argument("-n", "--namespace", help="override metadata.namespace")
    p.add_argument("--llmfleet-image", help="image for the gateway (default: spec.gateway.image)")
    p.add_argument("--engine-image", help="image for the engines (default: spec.engine.image)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "status",
        help="an LLMDeployment's state, live figures and last scaling decisions",
        description="Reads the CR from the cluster and prints its conditions, replicas per pool, the live "
        "figures the autoscaler last read and its last 10 decisions (status.autoscaling.history).",
    )
    p.add_argument("name", help="the LLMDeployment's name")
    p.add_argument("-n", "--namespace", default="default", help="its namespace (default: default)")
    p.add_argument("--kubeconfig", help="kubeconfig path (default: KUBECONFIG, then ~/.kube/config)")
    p.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table (default) or json"
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("crd", help="print the LLMDeployment CustomResourceDefinition")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser(
        "operator",
        help="run the operator (kopf) against the current cluster",
        description="Reconcile LLMDeployments: render children, apply them with server-side apply, "
        "prune leftovers, write status. Settings also come from LLMFLEET_* variables.",
    )
    p.add_argument("-n", "--namespace", action="append", help="namespace to watch (repeatable); default: all")
    p.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, then KUBECONFIG)")
    p.add_argument(
        "--leader-elect",
        action="store_true",
        default=None,
        help="act only while holding the leader Lease (run several replicas safely)",
    )
    p.add_argument("--lease-name", help="leader Lease name (default llmfleet-operator)")
    p.add_argument(
        "--lease-namespace", help="leader Lease namespace (default: POD_NAMESPACE, else llmfleet-system)"
    )
    p.add_argument("--log-level", help="log level (default: INFO)")
    p.add_argument("--liveness-port", type=int, help="port of /healthz (default 8081; 0 disables)")
    p.set_defaults(func=cmd_operator)

    from llmfleet.gateway.server import add_arguments as gateway_arguments
    from llmfleet.sim.engine import add_arguments as engine_arguments

    p = sub.add_parser(
        "engine-sim",
        help="a vLLM-compatible server driven by a continuous-batching performance model",
        description="Serves the OpenAI API like `vllm serve` (same flags, SSE, /metrics names) with "
        "latency from a performance model of the given model and GPU. Unknown vLLM flags are ignored.",
    )
    engine_arguments(p)
    p.set_defaults(func=cmd_engine_sim, allow_unknown=True)

    p = sub.add_parser(
        "gateway",
        help="the OpenAI-compatible streaming gateway (auth, limits, routing)",
        description="Serves /v1/chat/completions and /v1/completions in front of the engines: API keys, "
        "per-key limits, sensitivity routing (self-hosted vs external), prefix-affinity routing.",
    )
    gateway_arguments(p)
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser(
        "prefix-cache",
        help="prefix-cache hit rate from vLLM metrics, and how to order prompts",
        description="Reads vllm:prefix_cache_queries_total and vllm:prefix_cache_hits_total from each "
        "engine's /metrics and prints the hit rate, with guidance on prompt ordering.",
    )
    p.add_argument("--metrics", action="append", default=[], help="engine base or /metrics URL (repeatable)")
    p.set_defaults(func=cmd_prefix_cache)

    p = sub.add_parser(
        "simulate",
        help="replay a request trace through a simulated fleet, autoscaled vs static",
        description="A discrete-event fleet simulator: engines are engine-sim's continuous-batching "
        "model, routed least-outstanding, scaled by the operator's own autoscaler policy with cold "
        "starts, spot reclaims and on-demand fallback. Prints JSON lines: the autoscaled fleet, a "
        "static on-demand fleet of maxReplicas (or --static) on the same trace, and their ratio.",
    )
    p.add_argument("-f", "--file", required=True, help="LLMDeployment YAML file (- for stdin)")
    p.add_argument(
        "--trace", required=True, help="request trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens)"
    )
    p.add_argument("--speed", type=float, default=1.0, help="compress the trace's time by this factor")
    p.add_argument(
        "--copies", type=int, default=1, help="overlay this many randomly shifted copies of the trace"
    )
    p.add_argument("--minutes", type=float, help="only the first MINUTES of the (compressed) trace")
    p.add_argument("--cold-start", type=float, default=120.0, help="seconds from a new replica to serving")
    p.add_argument("--tick", type=float, default=15.0, help="autoscaler interval in seconds")
    p.add_argument(
        "--reclaims-per-hour", type=float, default=0.0, help="spot reclaims per spot replica and hour"
    )
    p.add_argument("--spot-capacity", type=int, help="spot replicas the provider has (default: unlimited)")
    p.add_argument(
        "--static", type=int, help="baseline size (default: autoscaling.maxReplicas, all on-demand)"
    )
    p.add_argument(
        "--initial", type=int, help="replicas the autoscaled fleet starts with, warm (default: minReplicas)"
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="minutes left out of latency and cost (the fleet settling from minReplicas)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (trace copies, reclaims)")
    p.add_argument(
        "--policy",
        action="append",
        default=[],
        help="replay through this scaling policy instead (repeatable; 'all' for every one): llmfleet, "
        "kubeai-like, keda-queue, hpa-like (llmfleet.sim.baselines), static-peak (the smallest static "
        "on-demand fleet reaching 99%% of requests under the TTFT target), static-peak-spot (the same, split "
        "over the CR's pools)",
    )
    p.add_argument("--json", action="store_true", help="with --policy: one JSON object per policy")
    p.add_argument(
        "--plot",
        metavar="FILE",
        help="draw load, replicas per pool (spot reclaims marked) and TTFT p95 against the target over time "
        "to FILE (.png, .svg or .pdf; needs pip install 'llmfleet[plot]')",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar per replay on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(func=cmd_simulate)

    dev = sub.add_parser("dev", help="local development helpers (a cluster without Docker)")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="DEV_COMMAND")
    p = dev_sub.add_parser(
        "pod-runner",
        help="run pods scheduled on kwok nodes as local processes on their pod IPs",
        description="A stand-in for a kubelet: the llmfleet image runs `llmfleet <args>`, vLLM "
        "images run `llmfleet engine-sim`; ConfigMap/Secret volumes and env are materialised.",
    )
    p.add_argument("--kubeconfig", help="admin kubeconfig of the local cluster (default: KUBECONFIG)")
    p.add_argument("--logs", default="build/pods", help="directory for per-pod logs (default: build/pods)")
    p.add_argument(
        "--prometheus-targets", help="write the engine pods it runs as Prometheus file_sd targets here"
    )
    p.set_defaults(func=cmd_pod_runner)
    p = dev_sub.add_parser(
        "up",
        help="the whole stack locally: control plane, operator, pods as processes, a request",
        description="Start the local control plane, the operator and the pod runner, apply an "
        "LLMDeployment, wait for Ready and stream a completion through its gateway.",
    )
    p.add_argument("-f", "--file", default="manifests/examples/llama3-8b.yaml", help="LLMDeployment to apply")
    p.add_argument("--keep", action="store_true", help="leave everything running")
    p.add_argument("--run-dir", default="build/dev-cluster", help="where the cluster keeps its state")
    p.set_defaults(func=cmd_dev_up)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Subcommands from other modules (operator, gateway, engine-sim, dev…) add themselves here.
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []  # type: ignore[type-arg]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "allow_unknown", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (UserError, SpecError) as exc:
        print(f"llmfleet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
