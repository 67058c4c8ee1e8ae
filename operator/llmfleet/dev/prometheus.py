"""A local Prometheus for dev clusters: a scrape config that discovers engine pods through the API server
(``kubernetes_sd_configs`` with the cluster's kubeconfig) and scrapes their real ``/metrics`` on the pod IPs,
and a process started on a loopback port (Debian's ``prometheus``, installed by ``hack/prometheus.sh``).

Labels match what the autoscaler queries: ``namespace`` (as kube-prometheus adds it) and vLLM's own
``model_name``; ``pod`` and ``pool`` are added for people reading the data.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from llmfleet.render.common import COMPONENT_LABEL, ENGINE_PORT, POOL_LABEL


def _meta_label(label: str) -> str:
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def scrape_config(kubeconfig: Path, interval: str = "5s") -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [{
            "job_name": "llmfleet-engines",
            "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
            "relabel_configs": [
                {"source_labels": [_meta_label(COMPONENT_LABEL)], "regex": "engine", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_ip"], "regex": "(.+)", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_ip"], "target_label": "__address__",
                 "replacement": f"$1:{ENGINE_PORT}"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": [_meta_label(POOL_LABEL)], "target_label": "pool"},
            ],
        }],
    }


def start(kubeconfig: Path, run_dir: Path, port: int, interval: str = "5s",
          binary: str | None = None) -> subprocess.Popen[bytes]:
    """Start Prometheus on 127.0.0.1:port and wait until it is ready; the caller stops the process."""
    exe = binary or shutil.which("prometheus")
    if exe is None:
        raise FileNotFoundError("prometheus is not installed: run hack/prometheus.sh")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(kubeconfig, interval), sort_keys=False))
    proc = subprocess.Popen(
        [exe, f"--config.file={config}", f"--storage.tsdb.path={run_dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=open(run_dir / "prometheus.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(run_dir / 'prometheus.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("prometheus did not become ready within 60 s")
