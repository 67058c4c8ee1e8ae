"""Chaos benchmark: faults under streaming load, on the local control plane, with nothing lost.

The stack is the real one: the control plane (hack/cluster.sh: API server with an audit log, scheduler,
controller manager, kwok GPU nodes in a spot and an on-demand pool), the Helm chart's two operator replicas
under leader election (run by the pod runner under the chart's ServiceAccount, with pod-bound tokens, so the
audit log names the pod behind every write), and one LLMDeployment whose engine pods run as
`llmfleet engine-sim` (vLLM 0.33's SIGTERM behaviour) and whose gateway pods run the real gateway. Clients
stream chat completions through the gateways (picked like a Service would: pods that exist, are not
terminating and answer /health), closed-loop, with prompt and output lengths from the Azure conversation trace
(bench/data, CC-BY 4.0, Patel et al., ISCA 2024), output capped by --max-tokens.

Scenarios (each on a fleet that is whole again, one JSON line each, then a summary line):
- ``spot-notice``: a spot node hosting an engine gets AWS node termination handler's spot-interruption taint;
  the node is deleted ``--notice`` seconds later (2 minutes in a cloud; compressed, the line says by how much).
- ``spot-stockout``: every spot node gets the notice at once and is deleted after it; no spot capacity comes
  back for ``--stockout`` seconds, then the nodes return.
- ``engine-kill``: SIGKILL one engine process, no notice (its container restarts, as a kubelet would).
- ``node-loss``: a spot node's machine dies (its processes SIGKILLed) and the Node is deleted, no taint first.
- ``operator-failover``: SIGKILL the leading operator, then ``spot-notice`` while the lease is still held by
  the dead leader: the standby must take over and act on the notice.
- ``gateway-restart``: ``kubectl rollout restart`` of the gateway Deployment under load.

Each line: ``sent`` (requests answered or failed while the scenario ran), ``completed`` (a whole answer:
``[DONE]`` after a normal finish), ``failed`` (no answer: an error status, or the connection failed before a
byte), ``truncated`` (a stream that started and did not finish), ``truncated_with_error_event`` (of those, the
ones that ended with the gateway's SSE error event), ``retried`` (attempts the gateways moved to another
replica), ``client_reconnects`` (requests whose connection failed before any answer came back: refused by a
gateway that had stopped listening, or a kept-alive connection it had just closed; sent again by the client
after 0.5 s and 1 s, as OpenAI's SDK does), ``replacement_ready_s`` (fault → the fleet serving at full strength again),
``ttft_p95_before_s``/``ttft_p95_during_s`` (first token as the client saw it, before the fault and from the
fault until the end), ``max_concurrent_writers`` (most distinct operator pods that wrote to the API within any
2 seconds of the scenario, from the audit log; must be 1), and what status and Events said.

Reconnects in ``gateway-restart`` come from kwok, not the gateway: kwok frees a deleted pod's IP at once and
may give it to a new pod while the old process still drains on it (a kubelet keeps a terminating pod's IP).

    python bench/chaos.py [--scenarios a,b] [--streams 120] [--short] [--cluster-dir DIR]

``--short`` runs ``spot-notice`` and ``operator-failover`` with fewer streams and shorter phases (the version
``.ci/run`` runs through tests/integration/test_bench_smoke.py). ``--cluster-dir`` uses a running cluster made
by hack/cluster.sh (its kubeconfig, audit log and nodes.yaml) instead of starting one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402

from harness import max_writers, operator_writes, pct  # noqa: E402
from llmfleet.dev.podrunner import PodRunner  # noqa: E402
from llmfleet.fleet import names  # noqa: E402
from llmfleet.fleet.names import ENGINE_PORT, GATEWAY_PORT, label_selector  # noqa: E402
from llmfleet.kube.client import KubeClient, load_config  # noqa: E402
from llmfleet.kube.port import KubeError  # noqa: E402

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.36.3")
BIN = Path(os.environ.get("LLMFLEET_CACHE", Path.home() / ".cache" / "llmfleet")) / "bin" / K8S_VERSION
NS, NAME, KEY = "chaos", "chaos", "sk-chaos-0123456789abcdef"
OPERATOR_NS = "llmfleet-system"
NOTICE_TAINT = "aws-node-termination-handler/spot-itn"
LEASE = {"leaseDuration": 6, "renewDeadline": 4, "retryPeriod": 1}
SCENARIOS = (
    "spot-notice",
    "spot-stockout",
    "engine-kill",
    "node-loss",
    "operator-failover",
    "gateway-restart",
)
CLOUD_NOTICE_S = 120.0  # AWS gives two minutes


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def trace_lengths(max_tokens: int) -> list[tuple[int, int]]:
    with open(ROOT / "bench" / "data" / "azure-llm-conv-2023.csv") as f:
        rows = [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in csv.DictReader(f)]
    return [(min(c, 4000), max(1, min(g, max_tokens))) for c, g in rows]


def cr(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "servedName": NAME, "maxModelLen": 8192},
            "accelerator": {"type": "H100-80GB"},
            "replicas": replicas,
            "autoscaling": {"enabled": False},
            "pools": {
                "onDemand": {"minReplicas": 1, "maxReplicas": replicas},
                "spot": {"enabled": True, "maxReplicas": replicas, "pendingTimeout": "15s"},
            },
            # The drain budget fits the compressed notice: preStop, then vLLM drains for up to 20 s.
            "engine": {"drain": {"preStopSleep": "2s", "shutdownTimeout": "20s"}},
            "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
            "gateway": {
                "replicas": 2,
                "auth": {"apiKeysSecretRef": "chaos-keys"},
                "limits": {"requestsPerMinute": 0, "tokensPerMinute": 0},
            },
        },
    }


# ---------------------------------------------------------------------------------------------- the stack
class Stack:
    """The cluster, the pod runner (a thread), the chart's operators and the CR."""

    def __init__(self, cluster_dir: Path | None, spot_nodes: int, ondemand_nodes: int) -> None:
        self.own = cluster_dir is None
        self.dir = cluster_dir or Path(tempfile.mkdtemp(prefix="llmfleet-chaos-"))
        self.env = {
            **os.environ,
            "LLMFLEET_CLUSTER_DIR": str(self.dir),
            "KUBECONFIG": str(self.dir / "kubeconfig"),
            "LLMFLEET_SPOT_NODES": str(spot_nodes),
            "LLMFLEET_ONDEMAND_NODES": str(ondemand_nodes),
        }
        self.stop = threading.Event()
        self.runner: PodRunner | None = None

    def up(self, replicas: int) -> None:
        if self.own:
            log("starting the local control plane")
            subprocess.run(
                ["bash", str(ROOT / "hack" / "cluster.sh"), "up"],
                env=self.env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        self.kube = KubeClient(load_config(str(self.dir / "kubeconfig")))
        self.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        self.kubectl("wait", "--for=condition=Established", "crd/llmdeployments.llmfleet.io", "--timeout=60s")
        self.runner = PodRunner(
            KubeClient(load_config(str(self.dir / "kubeconfig"))), self.dir / "chaos-pods"
        )
        threading.Thread(target=self._run_pods, daemon=True).start()
        log("installing the chart: two operators, one leader")
        values = ",".join(f"leaderElection.{k}={v}" for k, v in LEASE.items())
        extra = json.dumps([{"name": "LLMFLEET_ENGINE_DISCOVERY", "value": "pods"}])
        subprocess.run(
            [
                str(BIN / "helm"),
                "upgrade",
                "--install",
                "llmfleet",
                str(ROOT / "charts" / "llmfleet"),
                "-n",
                OPERATOR_NS,
                "--create-namespace",
                "--wait",
                "--timeout",
                "180s",
                "--set",
                values,
                "--set-json",
                f"extraEnv={extra}",
            ],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "chaos-keys", "namespace": NS},
                "data": {"chaos": base64.b64encode(KEY.encode()).decode()},
            }
        )
        self.kube.apply(cr(replicas))

    def _run_pods(self) -> None:
        assert self.runner is not None
        while not self.stop.is_set():
            try:
                self.runner.sync()
            except KubeError as exc:
                log(f"pod runner: API not reachable ({exc})")
            except Exception as exc:
                log(f"pod runner: {type(exc).__name__}: {exc}")
            time.sleep(0.25)

    def kubectl(self, *args: str, check: bool = True) -> str:
        r = subprocess.run(
            [str(BIN / "kubectl"), *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr}")
        return r.stdout

    def down(self) -> None:
        if hasattr(self, "kube"):
            self.restore_nodes()  # a shared cluster gets its nodes back
        subprocess.run(
            [str(BIN / "helm"), "uninstall", "llmfleet", "-n", OPERATOR_NS, "--wait", "--timeout", "60s"],
            env=self.env,
            capture_output=True,
            timeout=120,
        )
        self.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        self.stop.set()
        if self.runner is not None:
            with self.runner.lock:
                self.runner.stop_all(timeout=10)
        if self.own:
            subprocess.run(
                ["bash", str(ROOT / "hack" / "cluster.sh"), "down"], env=self.env, capture_output=True
            )

    # -------------------------------------------------------------------------------------- the world
    def nodes(self, pool: str) -> list[str]:
        return sorted(
            n["metadata"]["name"]
            for n in self.kube.list("v1", "Node", "", f"llmfleet.io/capacity-type={pool}")
        )

    def restore_nodes(self) -> None:
        """Every node of nodes.yaml present, none with a notice, none lost."""
        self.kubectl("apply", "-f", str(self.dir / "nodes.yaml"))
        for node in self.nodes("spot") + self.nodes("on-demand"):
            self.kubectl("taint", "node", node, f"{NOTICE_TAINT}-", check=False)
        if self.runner is not None:
            self.runner.lost_nodes.clear()

    def pods(self, component: str) -> list[dict[str, Any]]:
        return self.kube.list("v1", "Pod", NS, label_selector(NAME, component))

    def leader(self) -> str | None:
        """The lease holder's identity: its pod's name, an underscore and a per-process suffix."""
        lease = self.kube.get("coordination.k8s.io/v1", "Lease", OPERATOR_NS, "llmfleet") or {}
        return (lease.get("spec") or {}).get("holderIdentity")

    def status(self) -> dict[str, Any]:
        return (self.kube.get("llmfleet.io/v1alpha1", "LLMDeployment", NS, NAME) or {}).get("status") or {}

    def events(self, reason: str) -> list[str]:
        return [
            e.get("message", "") for e in self.kube.list("v1", "Event", NS, "") if e.get("reason") == reason
        ]


def _get(url: str, timeout: float = 0.5) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bytes(r.read()) if r.status == 200 else None
    except OSError:
        return None


class Prober:
    """What a Service and a kubelet's readiness probe give a client: the gateway pods that exist, are not
    terminating and answer /health; the engine pods that answer /health; and the gateways' retry counters."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.gateways: list[str] = []  # pod IPs
        self.engines: dict[str, str] = {}  # pod name → IP, healthy ones
        self.retried: dict[str, float] = {}  # gateway pod → its upstream errors that were retried
        self.gateway_pods: set[str] = set()
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(KubeError):
                self._probe()
            self.stop.wait(0.3)

    def _healthy(self, component: str, port: int) -> dict[str, str]:
        """Pod name → IP of the component's pods that exist, are not terminating and answer /health."""
        out = {}
        for pod in self.stack.pods(component):
            ip = (pod.get("status") or {}).get("podIP")
            if (
                ip
                and not pod["metadata"].get("deletionTimestamp")
                and _get(f"http://{ip}:{port}/health") is not None
            ):
                out[pod["metadata"]["name"]] = ip
        return out

    def _probe(self) -> None:
        gateways = self._healthy("gateway", GATEWAY_PORT)
        for name, ip in gateways.items():
            self.retried[name] = _retried((_get(f"http://{ip}:{GATEWAY_PORT}/metrics", 1.0) or b"").decode())
        self.engines = self._healthy("engine", ENGINE_PORT)
        self.gateways, self.gateway_pods = sorted(gateways.values()), set(gateways)


def _retried(metrics: str) -> float:
    """Self-hosted upstream failures a gateway moved to another replica (every kind but a cut stream)."""
    total = 0.0
    for line in metrics.splitlines():
        if (
            line.startswith("llmfleet_gateway_upstream_errors_total{")
            and 'route="self-hosted"' in line
            and 'kind="cut"' not in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------------------------- the load
@dataclass
class Outcome:
    started: float
    ttft: float | None = None
    status: int = 0
    complete: bool = False
    got_bytes: bool = False
    error_event: bool = False
    reconnects: int = 0
    error: str = ""  # the exception that ended it, if one did


class _Reconnect(Exception):
    """The request failed before any answer (status or byte) came back: a client may send it again."""


@dataclass
class Load:
    prober: Prober
    lengths: list[tuple[int, int]]
    streams: int
    outcomes: list[Outcome] = field(default_factory=list)
    running: bool = True

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=300, sock_connect=2)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.streams)))

    async def _client(self, session: aiohttp.ClientSession, i: int) -> None:
        rng = random.Random(i)
        await asyncio.sleep(rng.random() * 2)  # spread the first requests
        while self.running:
            prompt, out = self.lengths[rng.randrange(len(self.lengths))]
            body = {
                "model": NAME,
                "stream": True,
                "max_tokens": out,
                "ignore_eos": True,  # the trace's output length, exactly (as vLLM's own serving benchmark does)
                "temperature": 1.0,
                "messages": [{"role": "user", "content": f"user {i} asks: " + "word " * max(1, prompt - 8)}],
            }
            o = Outcome(time.monotonic())
            waited = 0.0
            while not self.prober.gateways and waited < 10:  # a Service with no ready endpoint yet
                await asyncio.sleep(0.1)
                waited += 0.1
            for attempt in range(3):  # OpenAI's SDK: two retries of a connection error, 0.5 s then 1 s apart
                gateways = self.prober.gateways
                if not gateways:
                    o.error = "no ready gateway"
                    break
                ip = gateways[rng.randrange(len(gateways))]
                try:
                    await self._one(session, ip, body, o)
                    break
                except _Reconnect:  # the connection failed before any answer: sent again, as the SDK does
                    o.reconnects += 1
                    if attempt == 2:
                        o.error = "connection failed 3 times"
                    else:
                        await asyncio.sleep(0.5 * 2**attempt)
            self.outcomes.append(o)

    @staticmethod
    async def _one(session: aiohttp.ClientSession, ip: str, body: dict[str, Any], o: Outcome) -> None:
        try:
            async with session.post(
                f"http://{ip}:{GATEWAY_PORT}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {KEY}"},
            ) as r:
                o.status = r.status
                tail = b""
                async for chunk in r.content.iter_any():
                    if not o.got_bytes:
                        o.got_bytes, o.ttft = True, time.monotonic() - o.started
                    tail = (tail + chunk)[-600:]
                o.error_event = b'"upstream_cut"' in tail or b'data: {"error"' in tail
                o.complete = (
                    r.status == 200
                    and tail.rstrip().endswith(b"data: [DONE]")
                    and not o.error_event
                    and b'"finish_reason":"abort"' not in tail
                )
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            if o.status == 0:  # refused, or a kept-alive connection the gateway had closed: nothing came back
                raise _Reconnect() from exc
            o.complete, o.error = False, type(exc).__name__
        except (TimeoutError, aiohttp.ClientError) as exc:
            o.complete, o.error = False, type(exc).__name__


# ---------------------------------------------------------------------------------------------- scenarios
async def wait_whole(stack: Stack, prober: Prober, replicas: int, timeout: float = 180) -> None:
    """Until every engine replica and both gateways answer and the operator reports Ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await asyncio.to_thread(stack.status)
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions", []))
        if ready and len(prober.engines) >= replicas and len(prober.gateways) >= 2 and stack.leader():
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(
        f"the fleet is not whole: engines {sorted(prober.engines)}, gateways {prober.gateways}"
    )


def busiest_spot_node(stack: Stack) -> tuple[str, list[str]]:
    """The spot node with the most engine pods, and those pods."""
    nodes = set(stack.nodes("spot"))
    out: dict[str, list[str]] = {}
    for pod in stack.pods("engine"):
        node = pod["spec"].get("nodeName")
        if node in nodes and not pod["metadata"].get("deletionTimestamp"):
            out.setdefault(node, []).append(pod["metadata"]["name"])
    if not out:
        raise RuntimeError(f"no engine pod runs on a spot node ({sorted(nodes)})")
    return max(out.items(), key=lambda kv: len(kv[1]))


async def spot_notice(stack: Stack, args: argparse.Namespace, note: dict[str, Any]) -> None:
    node, pods = busiest_spot_node(stack)
    note.update(node=node, pods_on_node=pods)
    await asyncio.to_thread(stack.kubectl, "taint", "node", node, f"{NOTICE_TAINT}=true:NoSchedule")
    await asyncio.sleep(args.notice)
    await asyncio.to_thread(stack.kubectl, "delete", "node", node, "--wait=false")


async def spot_stockout(stack: Stack, args: argparse.Namespace, note: dict[str, Any]) -> None:
    nodes = stack.nodes("spot")
    note["nodes"] = nodes
    for node in nodes:
        await asyncio.to_thread(stack.kubectl, "taint", "node", node, f"{NOTICE_TAINT}=true:NoSchedule")
    await asyncio.sleep(args.notice)
    for node in nodes:
        await asyncio.to_thread(stack.kubectl, "delete", "node", node, "--wait=false")
    await asyncio.sleep(args.stockout)
    await asyncio.to_thread(stack.restore_nodes)  # spot capacity is back
    note["spot_back_after_s"] = args.notice + args.stockout


async def engine_kill(stack: Stack, args: argparse.Namespace, note: dict[str, Any]) -> None:
    runner = stack.runner
    assert runner is not None
    pod = next(
        p
        for p in sorted(stack.pods("engine"), key=lambda p: p["metadata"]["name"])
        if not p["metadata"].get("deletionTimestamp")
    )
    key, ip = f"{NS}/{pod['metadata']['name']}", pod["status"]["podIP"]
    note["pod"] = pod["metadata"]["name"]
    killed = await asyncio.to_thread(runner.kill, key)

    def restarted() -> bool:  # the container came back (a new process) and answers its probe
        r = runner.running.get(key)
        return (
            r is not None and r.proc.pid != killed and _get(f"http://{ip}:{ENGINE_PORT}/health") is not None
        )

    note["_replaced"] = restarted


async def node_loss(stack: Stack, args: argparse.Namespace, note: dict[str, Any]) -> None:
    assert stack.runner is not None
    node, pods = busiest_spot_node(stack)
    note.update(node=node, pods_on_node=pods)
    await asyncio.to_thread(stack.runner.lose_node, node)
    await asyncio.to_thread(stack.kubectl, "delete", "node", node, "--wait=false")


async def operator_failover(stack: Stack, args: argparse.Namespace, note: dict[str, Any]) -> None:
    assert stack.runner is not None
    leader = stack.leader()
    if not leader:
        raise RuntimeError("no operator holds the lease")
    note["killed_leader"] = leader
    await asyncio.to_thread(stack.runner.kill, f"{OPERATOR_NS}/{leader.split('_')[0]}")
    await asyncio.sleep(1.0)  # the notice lands while the dead leader's lease still blocks the standby
    await spot_notice(stack, args, note)
    note["new_leader"] = stack.leader()


async def gateway_restart(stack: Stack, args: argparse.Namespace, note: dict[str, Any]) -> None:
    await asyncio.to_thread(
        stack.kubectl, "rollout", "restart", f"deployment/{names.gateway(NAME)}", "-n", NS
    )


FAULTS = {
    "spot-notice": spot_notice,
    "spot-stockout": spot_stockout,
    "engine-kill": engine_kill,
    "node-loss": node_loss,
    "operator-failover": operator_failover,
    "gateway-restart": gateway_restart,
}


async def scenario(
    name: str, stack: Stack, prober: Prober, args: argparse.Namespace, lengths: list[tuple[int, int]]
) -> dict[str, Any]:
    await asyncio.to_thread(stack.restore_nodes)
    await wait_whole(stack, prober, args.replicas)
    baseline_engines, baseline_gateways = dict(prober.engines), set(prober.gateway_pods)
    retried_before = dict(prober.retried)
    reclaims_before = _reclaims(await asyncio.to_thread(stack.status))
    events_before = len(await asyncio.to_thread(stack.events, "ReclaimNotice"))
    load = Load(prober, lengths, args.streams)
    started_wall = time.time()
    load_task = asyncio.create_task(load.run())
    await asyncio.sleep(args.before)
    log(f"{name}: fault")
    fault_at = time.monotonic()
    note: dict[str, Any] = {}
    fault = asyncio.create_task(FAULTS[name](stack, args, note))

    replaced_at: float | None = None
    dipped = False
    deadline = fault_at + args.notice + args.stockout + 180
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if fault.done() and fault.exception():
            break  # raised below
        if name == "gateway-restart":
            now_pods = prober.gateway_pods
            if len(now_pods) >= 2 and not now_pods & baseline_gateways and fault.done():
                replaced_at = time.monotonic()
                break
            continue
        if "_replaced" in note:  # the fault says itself when its replacement serves (a restarted container)
            if await asyncio.to_thread(note["_replaced"]):
                replaced_at = time.monotonic()
                break
            continue
        healthy = prober.engines
        dipped = dipped or len(healthy) < len(baseline_engines)
        if (dipped or set(healthy) != set(baseline_engines)) and len(healthy) >= args.replicas:
            replaced_at = time.monotonic()
            break
    await fault
    await asyncio.sleep(args.after)
    load.running = False
    await load_task
    ended_wall = time.time()

    outcomes = load.outcomes
    before = [o.ttft for o in outcomes if o.ttft is not None and o.started < fault_at]
    during = [o.ttft for o in outcomes if o.ttft is not None and o.started >= fault_at]
    truncated = [o for o in outcomes if o.status == 200 and not o.complete]
    failed = [o for o in outcomes if o.status != 200]
    retried = sum(max(0.0, v - retried_before.get(k, 0.0)) for k, v in prober.retried.items())
    st = await asyncio.to_thread(stack.status)
    reclaim = next((c for c in st.get("conditions", []) if c.get("type") == "Reclaim"), {})
    writes = await asyncio.to_thread(operator_writes, stack.dir / "audit.log", started_wall, ended_wall)
    return {
        "scenario": name,
        "streams": args.streams,
        "sent": len(outcomes),
        "completed": sum(1 for o in outcomes if o.complete),
        "retried": int(retried),
        "failed": len(failed),
        "failed_statuses": sorted({o.status for o in failed}),
        "failed_errors": sorted({o.error for o in failed if o.error}),
        "truncated": len(truncated),
        "truncated_with_error_event": sum(1 for o in truncated if o.error_event),
        "client_reconnects": sum(o.reconnects for o in outcomes),
        "replacement_ready_s": round(replaced_at - fault_at, 2) if replaced_at else None,
        "ttft_p95_before_s": round(pct(before, 95), 3) if before else None,
        "ttft_p95_during_s": round(pct(during, 95), 3) if during else None,
        "max_concurrent_writers": max_writers(writes),
        "operator_writes": len(writes),
        "writers": sorted({w for _, w, _ in writes}),
        "reclaims_in_status": _reclaims(st) - reclaims_before,
        "reclaim_condition": f"{reclaim.get('status')}/{reclaim.get('reason')}" if reclaim else None,
        "reclaim_events": len(await asyncio.to_thread(stack.events, "ReclaimNotice")) - events_before,
        "notice_s": args.notice if name in ("spot-notice", "spot-stockout", "operator-failover") else None,
        "notice_compression": round(CLOUD_NOTICE_S / args.notice, 1)
        if name in ("spot-notice", "spot-stockout", "operator-failover")
        else None,
        **{k: v for k, v in note.items() if not k.startswith("_")},
    }


def _reclaims(status: dict[str, Any]) -> int:
    replicas = status.get("replicas") or {}
    return sum(int((replicas.get(p) or {}).get("reclaims") or 0) for p in ("spot", "onDemand"))


async def main_async(args: argparse.Namespace, stack: Stack) -> int:
    prober = Prober(stack)
    lengths = trace_lengths(args.max_tokens)
    lines = []
    try:
        for name in args.scenarios:
            line = await scenario(name, stack, prober, args, lengths)
            print(json.dumps(line), flush=True)
            lines.append(line)
    finally:
        prober.stop.set()
    with_notice = [x for x in lines if x["scenario"] in ("spot-notice", "spot-stockout", "operator-failover")]
    summary = {
        "summary": True,
        "scenarios": len(lines),
        "sent": sum(x["sent"] for x in lines),
        "failed": sum(x["failed"] for x in lines),
        "truncated_with_notice": sum(x["truncated"] for x in with_notice),
        "truncated_without_error_event": sum(x["truncated"] - x["truncated_with_error_event"] for x in lines),
        "max_concurrent_writers": max((x["max_concurrent_writers"] for x in lines), default=0),
        "all_replaced": all(x["replacement_ready_s"] is not None for x in lines),
    }
    print(json.dumps(summary), flush=True)
    ok = (
        summary["failed"] == 0
        and summary["truncated_with_notice"] == 0
        and summary["all_replaced"]
        and summary["truncated_without_error_event"] == 0
        and summary["max_concurrent_writers"] <= 1
    )
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--streams", type=int, default=120, help="concurrent streaming clients")
    ap.add_argument("--max-tokens", type=int, default=300, help="cap on the trace's output lengths")
    ap.add_argument("--replicas", type=int, default=4, help="engine replicas (1 on-demand, the rest spot)")
    ap.add_argument(
        "--notice", type=float, default=20.0, help="seconds from the notice to the node's deletion"
    )
    ap.add_argument(
        "--stockout", type=float, default=30.0, help="seconds without spot capacity (spot-stockout)"
    )
    ap.add_argument("--before", type=float, default=20.0, help="seconds of load before the fault")
    ap.add_argument(
        "--after", type=float, default=10.0, help="seconds of load after the fleet is whole again"
    )
    ap.add_argument("--short", action="store_true", help="spot-notice and operator-failover, short phases")
    ap.add_argument("--cluster-dir", type=Path, help="a running hack/cluster.sh cluster to use")
    args = ap.parse_args()
    if args.short:
        args.scenarios = (
            "spot-notice,operator-failover" if args.scenarios == ",".join(SCENARIOS) else args.scenarios
        )
        args.streams, args.before, args.after, args.notice = min(args.streams, 40), 6.0, 3.0, 10.0
        args.max_tokens = min(args.max_tokens, 150)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"--scenarios: unknown {unknown}; choose from {', '.join(SCENARIOS)}")
    stack = Stack(args.cluster_dir, spot_nodes=3, ondemand_nodes=2)
    # SIGTERM stops like Ctrl-C: the pods' processes (their own sessions) and the cluster go with the bench.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        stack.up(args.replicas)
        return asyncio.run(main_async(args, stack))
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
