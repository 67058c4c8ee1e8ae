"""Benchmark: the operator on the real local control plane.

Two phases, one cluster, one operator:
1. Burst: N LLMDeployments (default 100) applied back to back. Reports the time until every CR reports
   Ready (``all_ready_s``) and, per CR, apply → all of its children created (``burst_apply_to_children_*``).
   On two cores this phase saturates the machine (the API server, etcd, the controller manager, the
   scheduler and kwok creating ~400 pods), so those per-CR figures are queueing in the burst.
2. Latency: with the N CRs and their pods in place, ``--latency`` more CRs (default 20) applied one at a
   time, each after the previous one's children exist: the apply → children-created latency a user of a
   busy cluster sees (``apply_to_children_p50_s``/``p95``).
"Children created" means every object the renderer plans for that CR exists (watches on every child kind).
Then, once every rollout is over and every CR's autoscaler has ticked once: writes the operator makes in an idle
period (from the API server's audit log, by resource) and its CPU, twice: with Prometheus unreachable, then with
Debian's Prometheus answering each tick from an idle engine-sim's real vLLM series (``*_prometheus``); and
operator RSS and CPU. Baseline in the same run: the same children applied directly with server-side apply by this process
(what the API server alone costs), reported as ``direct_apply_children_p50_s`` and a ratio.

    python bench/reconcile.py [--crs 100] [--latency 20] [--idle 60] [--quick] [--kubeconfig PATH]

Prints one JSON line at the end. Without --kubeconfig it starts (and stops) its own cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402

from harness import pct, proc_cpu_seconds, proc_rss_kib  # noqa: E402
from llmfleet.api.load import parse_object  # noqa: E402
from llmfleet.api.sizing import size  # noqa: E402
from llmfleet.dev.prometheus import start as start_prometheus  # noqa: E402
from llmfleet.fleet.names import DEPLOYMENT_LABEL  # noqa: E402
from llmfleet.kube.client import KubeClient, load_config  # noqa: E402
from llmfleet.reconcile.observe import CHILD_KINDS  # noqa: E402
from llmfleet.render import render_all  # noqa: E402

NS = "bench-reconcile"


def cr(name: str) -> dict:
    obj = yaml.safe_load((ROOT / "manifests" / "examples" / "llama3-8b.yaml").read_text())
    obj["metadata"] = {"name": name, "namespace": NS}
    obj["spec"]["engine"].pop("env", None)
    return obj


def expected_children(obj: dict) -> set[tuple[str, str]]:
    parsed = parse_object({**obj, "apiVersion": "llmfleet.io/v1alpha1", "kind": "LLMDeployment"})
    return {(m["kind"], m["metadata"]["name"]) for m in render_all(parsed, size(parsed.spec))}


class ChildWatch:
    """Watches every child kind in the namespace; notes when each CR's last expected child appeared."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.seen: dict[str, dict[tuple[str, str], float]] = {}
        self.expected: dict[str, set[tuple[str, str]]] = {}
        self.complete: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        for api_version, kind in CHILD_KINDS:
            threading.Thread(target=self._watch, args=(api_version, kind), daemon=True).start()

    def expect(self, name: str, children: set[tuple[str, str]]) -> None:
        with self.lock:
            self.expected[name] = children
            self._check(name)

    def _check(self, name: str) -> None:
        want, got = self.expected.get(name), self.seen.get(name, {})
        if want and name not in self.complete and want <= got.keys():
            self.complete[name] = max(got[k] for k in want)

    def _watch(self, api_version: str, kind: str) -> None:
        resource = self.kube.dyn.resources.get(api_version=api_version, kind=kind)
        try:
            for event in self.kube.dyn.watch(resource, namespace=NS, timeout=900):
                if self.stop.is_set():
                    return
                if event["type"] != "ADDED":
                    continue
                now = time.perf_counter()
                meta = event["object"].metadata
                owner = (meta.labels or {}).get(DEPLOYMENT_LABEL)
                if owner:
                    with self.lock:
                        self.seen.setdefault(owner, {}).setdefault((kind, meta.name), now)
                        self._check(owner)
        except Exception:  # the watch ends when the cluster stops
            return


def audit_writes(audit: Path, since: float) -> Counter[str]:
    """The operator's writes since a time, counted by what they wrote ("patch llmdeployments/status")."""
    n: Counter[str] = Counter()
    with audit.open() as f:
        for line in f:
            ev = json.loads(line)
            if ev.get("stage") != "ResponseComplete" or ev.get("verb") in ("get", "list", "watch"):
                continue
            if not (ev.get("userAgent") or "").startswith(("llmfleet-operator", "kopf")):
                continue
            if (ev.get("objectRef") or {}).get("resource") in (
                "clusterkopfpeerings",
                "kopfpeerings",
                "leases",
            ):
                continue
            ts = datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if ts >= since:
                ref = ev.get("objectRef") or {}
                what = "/".join(filter(None, (ref.get("resource"), ref.get("subresource"))))
                n[f"{ev.get('verb')} {what}"] += 1
    return n


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:  # noqa: C901 - one script: flags, then each phase in turn
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crs", type=int, default=100)
    ap.add_argument("--latency", type=int, default=20, help="CRs applied one at a time after the burst")
    ap.add_argument("--idle", type=float, default=60.0, help="idle window in seconds for the write count")
    ap.add_argument("--quick", action="store_true", help="10 CRs, 10 s idle window")
    ap.add_argument("--kubeconfig", help="use a running cluster (its run dir must hold audit.log)")
    args = ap.parse_args()
    if args.quick:
        args.crs, args.idle, args.latency = min(args.crs, 10), min(args.idle, 10.0), min(args.latency, 5)

    own_cluster = args.kubeconfig is None
    run_dir = (
        Path(tempfile.mkdtemp(prefix="llmfleet-bench-")) if own_cluster else Path(args.kubeconfig).parent
    )
    # 100 CRs need ~100 GPUs and ~400 pods: enough fake on-demand nodes for all of them. Pod IPs from a
    # routable-looking range, as in a real cluster: nothing serves on them here, and with loopback pod IPs
    # (what dev clusters use so local processes can serve) the EndpointSlice and Endpoints controllers
    # reject every address and retry: thousands of failing writes and Warning events that load the API
    # server as no real cluster would.
    env = {
        **os.environ,
        "LLMFLEET_CLUSTER_DIR": str(run_dir),
        "LLMFLEET_ONDEMAND_NODES": str(
            max(2, args.crs // 6 + 1)
        ),  # 8 GPUs each: room for the latency CRs too
        "LLMFLEET_POD_CIDR": "10.64.0.0/16",
    }
    if own_cluster:
        subprocess.run(
            ["bash", str(ROOT / "hack" / "cluster.sh"), "up"], env=env, check=True, stdout=subprocess.DEVNULL
        )
    kubeconfig = run_dir / "kubeconfig"
    env["KUBECONFIG"] = str(kubeconfig)
    # The operator's Prometheus: nothing listens there during the first idle window, Prometheus in the second.
    prom_port = free_port()
    env["LLMFLEET_PROMETHEUS_URL"] = f"http://127.0.0.1:{prom_port}"
    operator = None
    try:
        kube = KubeClient(load_config(str(kubeconfig)))
        crd = yaml.safe_load((ROOT / "crds" / "llmfleet.io_llmdeployments.yaml").read_text())
        kube.apply(crd)
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        time.sleep(2)

        # Baseline: the API server applying one CR's children for us directly (no operator involved).
        direct = []
        for i in range(5):
            obj = parse_object(
                {**cr(f"direct-{i}"), "apiVersion": "llmfleet.io/v1alpha1", "kind": "LLMDeployment"}
            )
            manifests = render_all(obj, size(obj.spec))
            t0 = time.perf_counter()
            for m in manifests:
                kube.apply(m)
            direct.append(time.perf_counter() - t0)

        log = tempfile.NamedTemporaryFile(prefix="bench-operator-", suffix=".log", delete=False)  # noqa: SIM115
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmfleet",
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--liveness-port",
                "0",
                "--metrics-port",
                "0",
                "--namespace",
                NS,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        time.sleep(3)

        def count_true(condition: str, which: list[str] | None = None) -> int:
            """CRs (of ``which``, default all) whose ``condition`` is True."""
            items = kube.list("llmfleet.io/v1alpha1", "LLMDeployment", NS, "")
            return sum(
                1
                for o in items
                if (which is None or o["metadata"]["name"] in which)
                and any(
                    c["type"] == condition and c["status"] == "True"
                    for c in (o.get("status") or {}).get("conditions", [])
                )
            )

        children = ChildWatch(kube)
        time.sleep(1)
        names = [f"cr-{i:03d}" for i in range(args.crs)]
        applied: dict[str, float] = {}
        start = time.perf_counter()
        for name in names:
            obj = cr(name)
            children.expect(name, expected_children(obj))
            kube.apply(obj | {"apiVersion": "llmfleet.io/v1alpha1", "kind": "LLMDeployment"})
            applied[name] = time.perf_counter()

        def ready_count(which: list[str]) -> int:
            return count_true("Ready", which)

        deadline = time.perf_counter() + 600
        while ready_count(names) < len(names) and time.perf_counter() < deadline:
            time.sleep(0.25)
        all_ready = time.perf_counter() - start
        burst = [children.complete[n] - applied[n] for n in names if n in children.complete]

        # One at a time on the now busy cluster: what `kubectl apply` of one more CR feels like.
        single: list[float] = []
        late = [f"late-{i:03d}" for i in range(args.latency)]
        for name in late:
            obj = cr(name)
            children.expect(name, expected_children(obj))
            t0 = time.perf_counter()
            kube.apply(obj | {"apiVersion": "llmfleet.io/v1alpha1", "kind": "LLMDeployment"})
            applied[name] = time.perf_counter()
            while name not in children.complete and time.perf_counter() - t0 < 60:
                time.sleep(0.01)
            if name in children.complete:
                single.append(children.complete[name] - applied[name])
        deadline = time.perf_counter() + 120
        while ready_count(late) < len(late) and time.perf_counter() < deadline:
            time.sleep(0.25)
        children.stop.set()

        def settled_count() -> int:
            """CRs whose rollouts are over (Progressing False) and whose autoscaler has ticked once (a
            MetricsAvailable condition): a gateway pod counts as available only after the Deployment's
            minReadySeconds, and the first tick comes one interval after creation and records its first read;
            both are changes, not idle writes."""
            items = kube.list("llmfleet.io/v1alpha1", "LLMDeployment", NS, "")
            conditions = [(o.get("status") or {}).get("conditions", []) for o in items]
            return sum(
                1
                for cs in conditions
                if any(c["type"] == "Progressing" and c["status"] == "False" for c in cs)
                and any(c["type"] == "MetricsAvailable" for c in cs)
            )

        deadline = time.perf_counter() + 120
        while settled_count() < len(names) + len(late) and time.perf_counter() < deadline:
            time.sleep(0.25)
        time.sleep(3)
        # Idle, Prometheus unreachable (nothing listens on its port yet): every tick fails its query.
        idle_start, cpu0 = time.time(), proc_cpu_seconds(operator.pid)
        time.sleep(args.idle)
        writes = audit_writes(run_dir / "audit.log", idle_start)
        cpu_unreachable = proc_cpu_seconds(operator.pid) - cpu0

        # Idle, Prometheus reachable: Debian's Prometheus on that port, scraping an idle engine-sim that
        # serves the CRs' model (the kwok pods serve nothing), so every tick reads real idle vLLM series.
        prom_dir = run_dir / "prometheus"
        prom_dir.mkdir(exist_ok=True)
        engine_port = free_port()
        engine = subprocess.Popen(
            [sys.executable, "-m", "llmfleet", "engine-sim", "--model", "meta-llama/Meta-Llama-3-8B-Instruct",
             "--served-model-name", "llama3-8b", "--port", str(engine_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        targets = prom_dir / "targets.json"
        targets.write_text(
            json.dumps([{"targets": [f"127.0.0.1:{engine_port}"], "labels": {"namespace": NS}}])
        )
        prometheus = start_prometheus(targets, prom_dir, prom_port, "5s")
        try:
            all_crs = len(names) + len(late)
            deadline = time.perf_counter() + 180
            while count_true("MetricsAvailable") < all_crs and time.perf_counter() < deadline:
                time.sleep(1)
            read_crs = count_true("MetricsAvailable")
            # Settled: the first reads are changes (MetricsAvailable flips, rates appear after two scrapes);
            # then no write for longer than an autoscaler tick (15 s).
            quiet_s = 20 if args.quick else 30
            deadline = time.perf_counter() + 240
            while time.perf_counter() < deadline:
                if not audit_writes(run_dir / "audit.log", time.time() - quiet_s):
                    break
                time.sleep(2)
            idle2_start, cpu1 = time.time(), proc_cpu_seconds(operator.pid)
            time.sleep(args.idle)
            writes2 = audit_writes(run_dir / "audit.log", idle2_start)
            cpu_reachable = proc_cpu_seconds(operator.pid) - cpu1
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
            engine.terminate()
            engine.wait(timeout=30)
        figures = {
            "bench": "reconcile",
            "crs": args.crs,
            "ready_crs": ready_count(names),
            "latency_ready_crs": ready_count(late),
            "all_ready_s": round(all_ready, 2),
            "apply_to_children_p50_s": round(statistics.median(single), 3) if single else None,
            "apply_to_children_p95_s": round(pct(single, 0.95), 3) if single else None,
            "latency_crs": len(single),
            "burst_apply_to_children_p50_s": round(statistics.median(burst), 3) if burst else None,
            "burst_apply_to_children_p95_s": round(pct(burst, 0.95), 3) if burst else None,
            "direct_apply_children_p50_s": round(statistics.median(direct), 3),
            "apply_to_children_vs_direct_ratio": round(
                statistics.median(single) / statistics.median(direct), 2
            )
            if single
            else None,
            "idle_window_s": args.idle,
            # Prometheus unreachable: each tick's query fails (MetricsAvailable False) and holds the target.
            "idle_writes_per_min": round(sum(writes.values()) * 60 / args.idle, 2),
            "idle_writes": dict(writes),
            "idle_operator_cpu_s_per_min": round(cpu_unreachable * 60 / args.idle, 2),
            # Prometheus reachable: each tick reads every CR's idle vLLM series and decides.
            "metrics_read_crs": read_crs,
            "idle_writes_per_min_prometheus": round(sum(writes2.values()) * 60 / args.idle, 2),
            "idle_writes_prometheus": dict(writes2),
            "idle_operator_cpu_s_per_min_prometheus": round(cpu_reachable * 60 / args.idle, 2),
            "operator_rss_mib": round(proc_rss_kib(operator.pid) / 1024, 1),
            "operator_cpu_s": round(proc_cpu_seconds(operator.pid), 2),
        }
        print(json.dumps(figures), flush=True)
        return 0 if figures["ready_crs"] == len(names) and figures["latency_ready_crs"] == len(late) else 1
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        if own_cluster:
            subprocess.run(
                ["bash", str(ROOT / "hack" / "cluster.sh"), "down"], env=env, stdout=subprocess.DEVNULL
            )
        else:
            from llmfleet.kube.port import Ref

            KubeClient(load_config(str(kubeconfig))).delete(Ref("v1", "Namespace", "", NS))


if __name__ == "__main__":
    sys.exit(main())
