"""A local Prometheus for dev clusters: Debian's ``prometheus`` (installed by ``hack/prometheus.sh``) on a
loopback port, scraping the engine pods' real ``/metrics`` on their pod IPs.

Debian builds Prometheus without Kubernetes service discovery (its config rejects ``kubernetes_sd_configs``),
so targets come from a ``file_sd_configs`` file that the pod runner writes with the engine pods it runs
(``llmfleet dev pod-runner --prometheus-targets``): the same targets and labels kubernetes_sd with the usual
relabelling gives in a cluster. Labels match what the autoscaler queries: ``namespace`` (as kube-prometheus
adds it) and vLLM's own ``model_name``; ``pod`` and ``pool`` are there for people reading the data.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def scrape_config(
    targets_file: Path, interval: str = "5s", operator: str | None = None, rule_files: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """``operator``: host:port of the operator's /metrics, scraped with honor_labels as the chart's PodMonitor
    does (its series carry each LLMDeployment's namespace); ``rule_files``: the chart's rules, evaluated here."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [
            {
                "job_name": "llmfleet-engines",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}],
            }
        ],
    }
    if operator:
        config["scrape_configs"].append(
            {
                "job_name": "llmfleet-operator",
                "honor_labels": True,
                "static_configs": [{"targets": [operator]}],
            }
        )
    if rule_files:
        config["rule_files"] = [str(f) for f in rule_files]
    return config


def start(
    targets_file: Path,
    run_dir: Path,
    port: int,
    interval: str = "5s",
    binary: str | None = None,
    operator: str | None = None,
    rule_files: tuple[Path, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start Prometheus on 127.0.0.1:port and wait until it is ready; the caller stops the process (its own
    session: a terminal's Ctrl-C reaches the caller, which stops it)."""
    exe = binary or shutil.which("prometheus")
    if exe is None:
        raise FileNotFoundError("prometheus is not installed: run hack/prometheus.sh")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "prometheus.yml"
    if not targets_file.exists():
        targets_file.write_text("[]")
    config.write_text(
        yaml.safe_dump(scrape_config(targets_file, interval, operator, rule_files), sort_keys=False)
    )
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={run_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=open(run_dir / "prometheus.log", "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        start_new_session=True,
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
