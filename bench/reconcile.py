"""Benchmark: the operator on the real local control plane.

Creates N LLMDeployments (default 100) at once and measures: apply → children-created latency per CR
(p50/p95, from a watch on the last child each CR gets), the time until every CR reports Ready, writes
the operator makes in an idle period (from the API server's audit log), and the operator's RSS.
Baseline in the same run: the same children applied directly with server-side apply by this process
(what the API server alone costs), reported as ``direct_apply_children_p50_s`` and a ratio.

    python bench/reconcile.py [--crs 100] [--idle 60] [--quick] [--kubeconfig PATH]

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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402

from harness import pct, proc_cpu_seconds, proc_rss_kib  # noqa: E402
from llmfleet.api.load import parse_object  # noqa: E402
from llmfleet.api.sizing import size  # noqa: E402
from llmfleet.kube.client import KubeClient, load_config  # noqa: E402
from llmfleet.render import render_all  # noqa: E402

NS = "bench-reconcile"


def cr(name: str) -> dict:
    obj = yaml.safe_load((ROOT / "manifests" / "examples" / "llama3-8b.yaml").read_text())
    obj["metadata"] = {"name": name, "namespace": NS}
    obj["spec"]["engine"].pop("env", None)
    return obj


def audit_writes(audit: Path, since: float) -> int:
    n = 0
    with audit.open() as f:
        for line in f:
            ev = json.loads(line)
            if ev.get("stage") != "ResponseComplete" or ev.get("verb") in ("get", "list", "watch"):
                continue
            if not (ev.get("userAgent") or "").startswith(("llmfleet-operator", "kopf")):
                continue
            if (ev.get("objectRef") or {}).get("resource") in ("clusterkopfpeerings", "kopfpeerings", "leases"):
                continue
            ts = datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if ts >= since:
                n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crs", type=int, default=100)
    ap.add_argument("--idle", type=float, default=60.0, help="idle window in seconds for the write count")
    ap.add_argument("--quick", action="store_true", help="10 CRs, 10 s idle window")
    ap.add_argument("--kubeconfig", help="use a running cluster (its run dir must hold audit.log)")
    args = ap.parse_args()
    if args.quick:
        args.crs, args.idle = min(args.crs, 10), min(args.idle, 10.0)

    own_cluster = args.kubeconfig is None
    run_dir = Path(tempfile.mkdtemp(prefix="llmfleet-bench-")) if own_cluster else Path(args.kubeconfig).parent
    # 100 CRs need ~100 GPUs and ~400 pods: enough fake on-demand nodes for all of them.
    env = {**os.environ, "LLMFLEET_CLUSTER_DIR": str(run_dir),
           "LLMFLEET_ONDEMAND_NODES": str(max(2, args.crs // 6 + 1))}
    if own_cluster:
        subprocess.run(["bash", str(ROOT / "hack" / "cluster.sh"), "up"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    kubeconfig = run_dir / "kubeconfig"
    env["KUBECONFIG"] = str(kubeconfig)
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
            obj = parse_object({**cr(f"direct-{i}"), "apiVersion": "llmfleet.io/v1alpha1", "kind": "LLMDeployment"})
            manifests = render_all(obj, size(obj.spec))
            t0 = time.perf_counter()
            for m in manifests:
                kube.apply(m)
            direct.append(time.perf_counter() - t0)

        log = tempfile.NamedTemporaryFile(prefix="bench-operator-", suffix=".log", delete=False)  # noqa: SIM115
        operator = subprocess.Popen([sys.executable, "-m", "llmfleet", "operator", "--kubeconfig", str(kubeconfig),
                                     "--liveness-port", "0", "--namespace", NS],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
        time.sleep(3)

        created: dict[str, float] = {}
        done = threading.Event()

        def watch() -> None:
            deployments = kube.dyn.resources.get(api_version="apps/v1", kind="Deployment")
            try:
                for event in kube.dyn.watch(deployments, namespace=NS, timeout=600):
                    name = event["object"].metadata.name
                    if event["type"] == "ADDED" and name.endswith("-gateway"):
                        created.setdefault(name[: -len("-gateway")], time.perf_counter())
                    if done.is_set():
                        return
            except Exception:  # the watch ends when the cluster stops
                return

        threading.Thread(target=watch, daemon=True).start()
        time.sleep(1)
        names = [f"cr-{i:03d}" for i in range(args.crs)]
        applied: dict[str, float] = {}
        start = time.perf_counter()
        for name in names:
            kube.apply(cr(name) | {"apiVersion": "llmfleet.io/v1alpha1", "kind": "LLMDeployment"})
            applied[name] = time.perf_counter()

        def ready_count() -> int:
            items = kube.list("llmfleet.io/v1alpha1", "LLMDeployment", NS, "")
            return sum(
                1 for o in items if o["metadata"]["name"] in applied and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in (o.get("status") or {}).get("conditions", []))
            )

        deadline = time.perf_counter() + 600
        while ready_count() < len(names) and time.perf_counter() < deadline:
            time.sleep(0.25)
        all_ready = time.perf_counter() - start
        done.set()
        latencies = [created[n] - applied[n] for n in names if n in created]

        time.sleep(3)
        idle_start = time.time()
        time.sleep(args.idle)
        writes = audit_writes(run_dir / "audit.log", idle_start)
        figures = {
            "bench": "reconcile",
            "crs": len(names),
            "ready_crs": ready_count(),
            "all_ready_s": round(all_ready, 2),
            "apply_to_children_p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "apply_to_children_p95_s": round(pct(latencies, 0.95), 3) if latencies else None,
            "direct_apply_children_p50_s": round(statistics.median(direct), 3),
            "apply_to_children_vs_direct_ratio": round(statistics.median(latencies) / statistics.median(direct), 2)
            if latencies else None,
            "idle_window_s": args.idle,
            "idle_writes_per_min": round(writes * 60 / args.idle, 2),
            "operator_rss_mib": round(proc_rss_kib(operator.pid) / 1024, 1),
            "operator_cpu_s": round(proc_cpu_seconds(operator.pid), 2),
        }
        print(json.dumps(figures), flush=True)
        return 0 if figures["ready_crs"] == len(names) else 1
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        if own_cluster:
            subprocess.run(["bash", str(ROOT / "hack" / "cluster.sh"), "down"], env=env, stdout=subprocess.DEVNULL)
        else:
            from llmfleet.kube.port import Ref

            KubeClient(load_config(str(kubeconfig))).delete(Ref("v1", "Namespace", "", NS))


if __name__ == "__main__":
    sys.exit(main())
