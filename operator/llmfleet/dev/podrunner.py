"""A local stand-in for a kubelet: runs the process each pod on a kwok node asks for, on the pod's IP.

kwok gives pods IPs from 127.0.0.0/8, so a process bound to the pod IP serves real traffic that the
Service's EndpointSlices point at. Images are mapped to local commands (the llmfleet image runs
``python -m llmfleet <args>``; a vLLM image runs ``llmfleet engine-sim`` with the same flags).
ConfigMap and Secret volumes are written to a per-pod directory and paths in args are rewritten;
env values are resolved (literal, secretKeyRef, configMapKeyRef, fieldRef); a pod whose service account
matters gets a kubeconfig with a real service-account token, so RBAC is exercised for real.

Every process dies with the runner (``PR_SET_PDEATHSIG``), as containers die with their node: a runner killed
without its clean-up must not leave servers holding pod IPs that a later cluster hands out again. Each cluster
takes its own /16 of loopback (hack/cluster.sh) for the same reason; a pod whose IP:port is taken all the same
gets a line in its log saying by whom.

A pod that goes away is stopped the way a kubelet stops it, without holding up the others: its preStop
sleep, then SIGTERM, then SIGKILL once ``terminationGracePeriodSeconds`` (counted from the start) is over. kwok
removes a deleted pod from the API at once, so the process may outlive its pod object, as a container
outlives the endpoint it was removed from; except for a pod given a service-account token: the runner holds
it with a finalizer until its process has exited, as a kubelet keeps a pod object until its containers are
gone. Its token is bound to the pod and stops working once the pod object does: a process that talks to the
API while it shuts down (the operator releasing its leader Lease) must find the pod there, as it would in a
cluster.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmfleet.fleet import names
from llmfleet.fleet import pods as fleet_pods
from llmfleet.fleet.names import COMPONENT_LABEL, DEPLOYMENT_LABEL, ENGINE_PORT, GATEWAY_PORT, POOL_LABEL
from llmfleet.kube.client import KubeClient
from llmfleet.kube.port import KubeError, Obj

log = logging.getLogger("llmfleet.podrunner")
RUNNER_FINALIZER = "llmfleet.io/pod-runner"  # held on a pod with a token until its process has exited
RUNNER_FIELD_MANAGER = "llmfleet-pod-runner"

_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None) if sys.platform == "linux" else None


def _die_with_runner() -> None:
    """In the child, before exec: SIGKILL when the runner's thread that started it ends (Linux)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def taken(ip: str, port: int) -> bool:
    """Whether a process already listens on ip:port (the pod's server could not bind)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


def command_for(image: str, container: Obj, pod_ip: str) -> list[str] | None:
    """The local command for a container, or None when this image is not run locally."""
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    args = [a.replace("0.0.0.0", pod_ip) for a in container.get("args", [])]
    cmd = container.get("command") or []
    if cmd[:2] == ["llmfleet", "engine-sim"] or repo.endswith("vllm-openai"):
        return [sys.executable, "-m", "llmfleet", "engine-sim", *args]
    if repo.endswith("/llmfleet") or repo == "llmfleet" or cmd[:1] == ["llmfleet"]:
        return [sys.executable, "-m", "llmfleet", *cmd[1:], *args]
    if repo in ("redis", "docker.io/library/redis") and os.environ.get("LLMFLEET_REDIS_SERVER"):
        rargs = [a for a in args if a != "redis-server"]
        return [
            os.environ["LLMFLEET_REDIS_SERVER"],
            *rargs,
            "--bind",
            pod_ip,
            *(
                ["--loadmodule", os.environ["LLMFLEET_REDIS_MODULE"]]
                if os.environ.get("LLMFLEET_REDIS_MODULE")
                else []
            ),
        ]
    return None


@dataclass
class Running:
    uid: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    grace: float
    log_file: Any = field(default=None)
    pre_stop: float = 0.0  # the container's preStop sleep, in seconds
    node: str = ""
    ip: str = ""
    key: str = ""
    term_at: float | None = None  # once stopping: when SIGTERM is due (after preStop)
    kill_at: float | None = None  # once stopping: when the grace period is over
    held: tuple[str, str] | None = None  # (namespace, name) of a pod our finalizer holds until the exit


def pre_stop_seconds(container: Obj) -> float:
    sleep = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
    return float(sleep or 0)


class PodRunner:
    def __init__(
        self,
        kube: KubeClient,
        logs_dir: Path,
        node_label: str = "type=kwok",
        prometheus_targets: Path | None = None,
    ) -> None:
        self.kube = kube
        self.prometheus_targets = prometheus_targets  # file_sd targets: the engine and gateway pods it runs
        self._targets_written: str | None = None
        self.logs_dir = logs_dir
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.node_label = node_label
        self.running: dict[str, Running] = {}
        self.stopping: list[Running] = []
        self.lost_nodes: set[str] = set()  # machines gone without notice (`lose_node`): nothing runs there
        self.lock = threading.RLock()  # sync and the fault injections below may run on different threads
        self._nodes: set[str] = set()
        self._nodes_at = 0.0

    def _fake_nodes(self) -> set[str]:
        if time.monotonic() - self._nodes_at > 5:
            self._nodes = {n["metadata"]["name"] for n in self.kube.list("v1", "Node", "", self.node_label)}
            self._nodes_at = time.monotonic()
        return self._nodes - self.lost_nodes

    # ------------------------------------------------------------------ faults (bench/chaos.py)
    def kill(self, key: str) -> int:
        """SIGKILL the process of one pod (``namespace/name``), as a crash or the OOM killer would: no preStop,
        no SIGTERM. Like a kubelet, the next sync restarts the container. Returns its pid."""
        with self.lock:
            r = self.running[key]
            os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
            return r.proc.pid

    def lose_node(self, node: str) -> list[str]:
        """The machine behind a node is gone: every process of a pod on it dies at once (SIGKILL) and nothing
        runs there again, whatever the API says. Returns the pods that were running there."""
        with self.lock:
            self.lost_nodes.add(node)
            keys = [k for k, r in self.running.items() if r.node == node]
            for key in keys:
                r = self.running.pop(key)
                r.term_at, r.kill_at = None, 0.0  # no preStop, no SIGTERM: killed at the next reap, now
                self.stopping.append(r)
            self._reap()
            return keys

    def _data(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        obj = self.kube.get("v1", kind, namespace, name) or {}
        data = dict(obj.get("data") or {})
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return data

    def _env(self, pod: Obj, container: Obj) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        out: dict[str, str] = {}
        for e in container.get("env", []):
            if "value" in e:
                out[e["name"]] = e["value"]
                continue
            src = e.get("valueFrom") or {}
            if "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                value = self._data("Secret", ns, ref["name"]).get(ref["key"])
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                value = self._data("ConfigMap", ns, ref["name"]).get(ref["key"])
            elif "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                value = {
                    "status.podIP": pod["status"].get("podIP"),
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": ns,
                }.get(path)
            else:
                value = None
            if value is not None:
                out[e["name"]] = value
        return out

    def _volumes(self, pod: Obj, container: Obj, workdir: Path) -> dict[str, str]:
        """Write ConfigMap/Secret volumes under workdir; return mountPath → local path."""
        ns = pod["metadata"]["namespace"]
        vols = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounts: dict[str, str] = {}
        for m in container.get("volumeMounts", []):
            vol = vols.get(m["name"], {})
            local = workdir / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "configMap" in vol:
                data = self._data("ConfigMap", ns, vol["configMap"]["name"])
            elif "secret" in vol:
                data = self._data("Secret", ns, vol["secret"]["secretName"])
            else:
                data = {}
            for key, value in data.items():
                (local / key).write_text(value)
            mounts[m["mountPath"]] = str(local)
        return mounts

    def _service_hosts(self, namespace: str) -> str:
        """There is no cluster DNS here (and EndpointSlices refuse loopback pod IPs): map each Service name
        to the IP of a running pod its selector matches (name=ip,...)."""
        pods = [p for p in self.kube.list("v1", "Pod", namespace, "") if fleet_pods.running(p)]
        pairs = []
        for svc in self.kube.list("v1", "Service", namespace, ""):
            sel = (svc.get("spec") or {}).get("selector") or {}
            name = svc["metadata"]["name"]
            for p in pods:
                labels = p["metadata"].get("labels") or {}
                if sel and all(labels.get(k) == v for k, v in sel.items()):
                    pairs += [
                        f"{name}={p['status']['podIP']}",
                        f"{name}.{namespace}.svc={p['status']['podIP']}",
                    ]
                    break
        return ",".join(pairs)

    def _start(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        key = f"{meta['namespace']}/{meta['name']}"
        container = spec["containers"][0]
        pod_ip = pod["status"]["podIP"]
        cmd = command_for(container.get("image", ""), container, pod_ip)
        if cmd is None:
            return
        workdir = Path(tempfile.mkdtemp(prefix=f"pod-{meta['name']}-"))
        mounts = self._volumes(pod, container, workdir)
        for mount_path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            cmd = [a.replace(mount_path, local) for a in cmd]
            # Config files that name other mounts (the gateway config names its keys directory) follow too.
            for f in workdir.rglob("*"):
                if f.is_file():
                    text = f.read_text(errors="replace")
                    if mount_path in text:
                        f.write_text(text.replace(mount_path, local))
        env = {
            **os.environ,
            **self._env(pod, container),
            "LLMFLEET_BIND_HOST": pod_ip,
            "LLMFLEET_POD_IP": pod_ip,
            "PYTHONUNBUFFERED": "1",
            "LLMFLEET_HOST_OVERRIDES": self._service_hosts(meta["namespace"]),
        }
        sa = spec.get("serviceAccountName")
        held = None
        if sa:
            kcfg = workdir / "kubeconfig"
            self.kube.service_account_kubeconfig(
                meta["namespace"], sa, str(kcfg), pod=(meta["name"], meta["uid"])
            )
            env["KUBECONFIG"] = str(kcfg)
            self._hold(meta, True)
            held = (meta["namespace"], meta["name"])
        log_file = open(self.logs_dir / f"{meta['namespace']}_{meta['name']}.log", "ab")  # noqa: SIM115
        for port in (p.get("containerPort") for p in container.get("ports") or []):
            if isinstance(port, int) and taken(pod_ip, port):
                holder = next((r.key for r in self.stopping if r.ip == pod_ip), None)
                why = (
                    f"{holder}, which is still stopping (kwok frees a deleted pod's IP at once)"
                    if holder
                    else "a process this runner did not start (another cluster on this pod CIDR, or one a "
                    "killed runner left behind)"
                )
                msg = f"pod-runner: {pod_ip}:{port} is already in use by {why}"
                log.warning("%s: %s", key, msg)
                log_file.write(f"{msg}\n".encode())
                log_file.flush()
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=_die_with_runner,  # one prctl call: no lock is taken in the child
        )
        self.running[key] = Running(
            meta["uid"],
            proc,
            workdir,
            float(spec.get("terminationGracePeriodSeconds", 30)),
            log_file,
            pre_stop_seconds(container),
            node=str(spec.get("nodeName") or ""),
            ip=pod_ip,
            key=key,
            held=held,
        )
        log.info("started %s on %s: %s", key, pod_ip, " ".join(cmd))

    def _stop(self, key: str, pre_stop: bool = True) -> None:
        """Begin stopping a pod's process (preStop, SIGTERM, SIGKILL after the grace period); `_reap` goes on."""
        r = self.running.pop(key)
        now = time.monotonic()
        r.term_at = now + (r.pre_stop if pre_stop else 0.0)
        r.kill_at = now + r.grace
        self.stopping.append(r)
        log.info("stopping %s (preStop %ss, grace %ss)", key, r.pre_stop if pre_stop else 0, r.grace)
        self._reap()

    def _hold(self, meta: Obj, hold: bool) -> None:
        """Add (or drop) the runner's finalizer on a pod: server-side apply of that one list entry under the
        runner's own field manager, with the pod's uid as a precondition (a new pod of the same name is left
        alone). A pod already gone is fine."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "finalizers": [RUNNER_FINALIZER] if hold else [],
            },
        }
        try:
            self.kube.apply(body, field_manager=RUNNER_FIELD_MANAGER)
        except KubeError as exc:
            if hold:
                log.warning("could not hold %s/%s with a finalizer: %s", meta["namespace"], meta["name"], exc)

    def _reap(self) -> None:
        now = time.monotonic()
        for r in list(self.stopping):
            if r.proc.poll() is not None:
                self.stopping.remove(r)
                if r.log_file:
                    r.log_file.close()
                if r.held is not None:  # the process is gone: so may the pod object be
                    self._hold({"namespace": r.held[0], "name": r.held[1], "uid": r.uid}, False)
                continue
            with contextlib.suppress(ProcessLookupError):
                if r.kill_at is not None and now >= r.kill_at:
                    os.killpg(r.proc.pid, signal.SIGKILL)
                elif r.term_at is not None and now >= r.term_at:
                    os.killpg(r.proc.pid, signal.SIGTERM)
                    r.term_at = None

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop everything at once (SIGTERM now, no preStop) and wait for it, up to ``timeout``."""
        for key in list(self.running):
            self._stop(key, pre_stop=False)
        deadline = time.monotonic() + timeout
        while self.stopping and time.monotonic() < deadline:
            time.sleep(0.1)
            self._reap()
        for r in self.stopping:
            r.kill_at = 0.0
        self._reap()
        for r in self.stopping:
            r.proc.wait()
        self._reap()

    def sync(self) -> None:
        with self.lock:
            self._sync()

    def _sync(self) -> None:
        nodes = self._fake_nodes()
        pods = self.kube.list("v1", "Pod", "", "")
        live: dict[str, Obj] = {}
        for pod in pods:
            meta = pod["metadata"]
            if (
                fleet_pods.node(pod) not in nodes
                or fleet_pods.terminating(pod)
                or not fleet_pods.running(pod)
            ):
                continue
            live[f"{meta['namespace']}/{meta['name']}"] = pod
        for key in [
            k for k, r in self.running.items() if k not in live or live[k]["metadata"]["uid"] != r.uid
        ]:
            self._stop(key)
        for key in [k for k, r in self.running.items() if r.proc.poll() is not None]:
            # The container exited (a crash, an operator that lost its lease): a kubelet restarts it.
            log.info("%s exited with %s; restarting it", key, self.running[key].proc.returncode)
            self._stop(key, pre_stop=False)
        self._reap()
        for key, pod in live.items():
            if key not in self.running:
                try:
                    self._start(pod)
                except Exception:  # one bad pod must not stop the runner
                    log.exception("could not start %s", key)
        if self.prometheus_targets is not None:
            self._write_targets([live[k] for k in self.running if k in live])

    def _write_targets(self, pods: list[Obj]) -> None:
        """Prometheus file_sd targets for the engine and gateway pods running here (what kubernetes_sd and a
        ServiceMonitor find in a cluster)."""
        targets = []
        for pod in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
            meta, labels = pod["metadata"], pod["metadata"].get("labels") or {}
            where = {"namespace": meta["namespace"], "pod": meta["name"]}
            if labels.get(COMPONENT_LABEL) == "engine":
                targets.append(
                    {
                        "targets": [f"{pod['status']['podIP']}:{ENGINE_PORT}"],
                        "labels": {**where, "component": "engine", "pool": labels.get(POOL_LABEL, "")},
                    }
                )
            elif labels.get(COMPONENT_LABEL) == "gateway" and labels.get(DEPLOYMENT_LABEL):
                # The `service` label a ServiceMonitor on the gateway Service would give.
                targets.append(
                    {
                        "targets": [f"{pod['status']['podIP']}:{GATEWAY_PORT}"],
                        "labels": {
                            **where,
                            "component": "gateway",
                            "service": names.gateway(labels[DEPLOYMENT_LABEL]),
                        },
                    }
                )
        text = json.dumps(targets, indent=1)
        if text != self._targets_written and self.prometheus_targets is not None:
            tmp = self.prometheus_targets.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.prometheus_targets)  # atomic: Prometheus never reads half a file
            self._targets_written = text

    def run(self, interval: float = 0.5) -> None:
        stop = False

        def _term(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _term)
        signal.signal(signal.SIGINT, _term)
        try:
            while not stop:
                try:
                    self.sync()
                except KubeError as exc:
                    log.warning("API not reachable (%s); retrying", exc)
                time.sleep(interval)
        finally:
            self.stop_all()
