"""`llmfleet dev up | down | status`: the whole stack on one machine, serving real traffic, without Docker or GPUs.

``up`` starts the local control plane (hack/cluster.sh), installs the CRD, runs Prometheus (Debian's, scraping
the pods the pod runner runs and the operator, evaluating the chart's rules), the operator (its autoscaler
reading that Prometheus) and the pod runner (which runs engine pods as `llmfleet engine-sim`, gateway pods as
`llmfleet gateway` and the cache pod as Redis 8 with the query engine, each on its pod IP), applies an
LLMDeployment, waits for Ready, streams a chat completion through the gateway and shows the figures the
autoscaler read. Without ``--keep`` it then stops everything; with it, it prints the gateway URL, an API key,
the kubeconfig and snippets that stream a reply, and records what runs in ``<run-dir>/dev-state.json``.

Every process it starts carries ``LLMFLEET_DEV_RUN=<run-dir>`` in its environment, and so does every process
those start (engines, gateways, Redis, the control plane): ``down`` stops the recorded ones gracefully (the pod
runner first, so pods get their SIGTERM), stops the control plane, then sweeps any process still carrying the
tag, so nothing it started outlives it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from llmfleet.dev import prometheus

ROOT = Path(__file__).resolve().parents[3]
DEMO_KEY = "sk-llmfleet-demo-key"
TAG = "LLMFLEET_DEV_RUN"
STATE_FILE = "dev-state.json"
RULES = ROOT / "charts" / "llmfleet" / "files" / "prometheus-rules.yaml"
STEPS = 7


class Progress:
    """Numbered steps with the time since start; on stderr when stdout is for the JSON line."""

    def __init__(self, out: IO[str], total: int = STEPS) -> None:
        self.out, self.total, self.n, self.t0 = out, total, 0, time.monotonic()

    def step(self, msg: str) -> None:
        self.n += 1
        self.say(msg, f"{self.n}/{self.total}")

    def say(self, msg: str, where: str = "") -> None:
        elapsed = int(time.monotonic() - self.t0)
        head = f"[dev up {where + ' ' if where else ''}{elapsed // 60:02d}:{elapsed % 60:02d}]"
        print(f"{head} {msg}", file=self.out, flush=True)


@dataclass
class Kept:
    """What a kept fleet is and how to reach it (``dev-state.json``; the ``--json`` line adds the snippets)."""

    gateway_url: str  # the OpenAI base URL (…/v1)
    api_key: str
    kubeconfig: str
    model: str
    namespace: str
    name: str
    prometheus_url: str | None
    run_dir: str
    pids: dict[str, int] = field(default_factory=dict)  # operator, pod-runner, prometheus

    def curl(self) -> str:
        body = json.dumps(
            {"model": self.model, "stream": True, "messages": [{"role": "user", "content": "Hello!"}]}
        )
        return (
            f"curl -sN {self.gateway_url}/chat/completions -H 'Authorization: Bearer {self.api_key}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
        )

    def openai(self) -> str:
        return (
            "from openai import OpenAI\n"
            f'client = OpenAI(base_url="{self.gateway_url}", api_key="{self.api_key}")\n'
            "stream = client.chat.completions.create(\n"
            f'    model="{self.model}", messages=[{{"role": "user", "content": "Hello!"}}], stream=True\n'
            ")\n"
            "for chunk in stream:\n"
            '    print(chunk.choices[0].delta.content or "", end="", flush=True)\n'
            "print()\n"
        )


def _redis_env() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "redis.sh"), "install"], capture_output=True, text=True, check=True
    )
    env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    return {"LLMFLEET_REDIS_SERVER": env["REDIS_SERVER"], "LLMFLEET_REDIS_MODULE": env["REDIS_MODULE"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(run_dir: Path) -> Kept | None:
    try:
        return Kept(**json.loads((run_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def tagged(run_dir: Path) -> list[int]:
    """Processes (other than this one) whose environment carries this run's tag: what `up` started."""
    mark = f"{TAG}={run_dir}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                out.append(int(entry.name))
        except OSError:
            continue  # gone, or not ours to read
    return out


def _kubectl() -> str:
    cache = Path(os.environ.get("LLMFLEET_CACHE", Path.home() / ".cache" / "llmfleet"))
    return str(cache / "bin" / os.environ.get("K8S_VERSION", "v1.36.3") / "kubectl")


def _autoscaler_view(kube: Any, ns: str, name: str, key: str, timeout: float = 60) -> dict[str, Any] | None:
    """status.metrics once the autoscaler read them from Prometheus and they hold ``key``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = (kube.get("llmfleet.io/v1alpha1", "LLMDeployment", ns, name) or {}).get("status") or {}
        ok = any(c["type"] == "MetricsAvailable" and c["status"] == "True" for c in st.get("conditions", []))
        if ok and st.get("metrics", {}).get(key) is not None:
            return dict(st["metrics"])
        time.sleep(1)
    return None


def _stream(url: str, key: str, model: str, prompt: str) -> tuple[str, str]:
    """Stream one chat completion; (text, route). Retries while the gateway process starts."""
    body = json.dumps(
        {
            "model": model,
            "stream": True,
            "max_tokens": 24,
            "temperature": 0,
            "messages": [{"role": "user", "content": prompt}],
        }
    ).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    for _attempt in range(60):
        text, route = "", ""
        try:
            req = urllib.request.Request(f"{url}/chat/completions", data=body, headers=headers)
            with urllib.request.urlopen(req, timeout=30) as resp:
                route = resp.headers.get("x-llmfleet-route", "")
                for line in resp:
                    if line.startswith(b"data: {"):
                        for choice in json.loads(line[6:]).get("choices", []):
                            text += (choice.get("delta") or {}).get("content") or ""
            return text, route
        except OSError:
            time.sleep(1)
    return "", ""


def _user_secrets(kube: Any, obj: dict[str, Any], ns: str) -> None:
    """The Secrets the example names: the demo API key, and a stand-in for each engine env secret."""
    secret = (obj["spec"].get("gateway") or {}).get("auth", {}).get("apiKeysSecretRef")
    if secret:
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret, "namespace": ns},
                "data": {"demo": base64.b64encode(DEMO_KEY.encode()).decode()},
            }
        )
    for env_var in obj["spec"].get("engine", {}).get("env", []):
        ref = (env_var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": ref["name"], "namespace": ns},
                    "data": {ref["key"]: base64.b64encode(b"demo").decode()},
                }
            )


def run(example: Path, keep: bool, run_dir: Path, as_json: bool = False) -> int:  # noqa: C901 - a script
    from llmfleet.fleet.names import label_selector
    from llmfleet.kube.client import KubeClient, load_config

    progress = Progress(sys.stderr if as_json else sys.stdout)
    say = progress.say
    kept = read_state(run_dir)
    if kept is not None and any(_alive(p) for p in kept.pids.values()):
        say(f"a kept fleet already runs from {run_dir}: `llmfleet dev down --run-dir {run_dir}` first")
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    os.environ[TAG] = str(run_dir)  # inherited by every process started from here on (see the docstring)
    env = {**os.environ, "LLMFLEET_CLUSTER_DIR": str(run_dir)}
    progress.step("starting the local control plane (the first run compiles it: several minutes)")
    subprocess.run(  # its progress lines (building, starting each component) go where ours go
        ["bash", str(ROOT / "hack" / "cluster.sh"), "up"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=progress.out,
    )
    kubeconfig = run_dir / "kubeconfig"
    env["KUBECONFIG"] = str(kubeconfig)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ok = False
    try:
        kube = KubeClient(load_config(str(kubeconfig)))
        kube.apply(yaml.safe_load((ROOT / "crds" / "llmfleet.io_llmdeployments.yaml").read_text()))
        time.sleep(1.5)
        logs = run_dir / "logs"
        logs.mkdir(exist_ok=True)
        targets = run_dir / "prometheus" / "targets.json"
        metrics_port = _free_port()
        operator_env = {
            **env,
            "LLMFLEET_ENGINE_DISCOVERY": "pods",
            "LLMFLEET_AUTOSCALE_INTERVAL": "5",
            "LLMFLEET_BIND_HOST": "127.0.0.1",
        }
        prometheus_url = None
        progress.step("starting Prometheus (scraping the engines, the gateways and the operator)")
        try:
            port = _free_port()
            procs["prometheus"] = prometheus.start(
                targets,
                targets.parent,
                port,
                "5s",
                operator=f"127.0.0.1:{metrics_port}",
                rule_files=(RULES,) if RULES.is_file() else (),
            )
            prometheus_url = f"http://127.0.0.1:{port}"
            operator_env["LLMFLEET_PROMETHEUS_URL"] = prometheus_url
            say(f"Prometheus on {prometheus_url}, with the chart's recording rules and alerts")
        except (FileNotFoundError, RuntimeError) as exc:
            say(f"no Prometheus ({exc}); the autoscaler will hold the replica count")
        progress.step(f"starting the operator and the pod runner (logs in {logs})")
        procs["operator"] = subprocess.Popen(
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
                str(metrics_port),
            ],
            env=operator_env,
            stdout=open(logs / "operator.log", "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs["pod-runner"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmfleet",
                "dev",
                "pod-runner",
                "--kubeconfig",
                str(kubeconfig),
                "--logs",
                str(logs / "pods"),
                "--prometheus-targets",
                str(targets),
            ],
            env={**env, **_redis_env()},
            stdout=open(logs / "pod-runner.log", "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        obj: dict[str, Any] = yaml.safe_load(example.read_text())
        ns, name = obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        _user_secrets(kube, obj, ns)
        kube.apply(obj)
        progress.step(f"applied LLMDeployment {ns}/{name}; waiting for Ready")
        deadline = time.monotonic() + 180
        status: dict[str, Any] = {}
        shown = None
        while time.monotonic() < deadline:
            live = kube.get("llmfleet.io/v1alpha1", "LLMDeployment", ns, name) or {}
            status = live.get("status") or {}
            now_showing = (status.get("ready"), _reasons(status))
            if status and now_showing != shown:
                say(f"  ready {now_showing[0] or '-'}: {now_showing[1]}")  # each change as it happens
                shown = now_showing
            if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])):
                break
            for pname, proc in procs.items():
                if proc.poll() is not None:
                    say(f"the {pname} exited ({proc.returncode}): see {logs}")
                    return 1
            time.sleep(1)
        else:
            say(f"not Ready in time: {json.dumps(status.get('conditions'))}")
            return 1
        say(
            f"Ready: {status.get('ready')} engine replicas, TP {status.get('tensorParallelSize')}, "
            f"${status.get('costPerHour')}/h"
        )
        if prometheus_url and _autoscaler_view(kube, ns, name, "readyReplicas") is None:
            say(
                "the autoscaler does not see the engines in Prometheus yet"
            )  # the request's TTFT may go unseen
        pods = kube.list("v1", "Pod", ns, label_selector(name, "gateway"))
        ip = next(p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP"))
        served = obj["spec"]["model"].get("servedName") or name
        kept = Kept(
            gateway_url=f"http://{ip}:8080/v1",
            api_key=DEMO_KEY,
            kubeconfig=str(kubeconfig),
            model=served,
            namespace=ns,
            name=name,
            prometheus_url=prometheus_url,
            run_dir=str(run_dir),
            pids={k: p.pid for k, p in procs.items()},
        )
        progress.step("streaming a chat completion through the gateway")
        text, route = _stream(kept.gateway_url, DEMO_KEY, served, "Say hello to the platform team.")
        if not text:
            say("the gateway did not answer")
            return 1
        say(f"streamed through the gateway ({route}) at {kept.gateway_url}: {text!r}")
        progress.step("reading what the autoscaler saw")
        if prometheus_url:
            metrics = _autoscaler_view(kube, ns, name, "ttftP95")  # the demo request, in two scrapes
            say(
                f"the autoscaler read from Prometheus: {metrics}"
                if metrics
                else "the autoscaler has not read the engines' metrics yet"
            )
        table = subprocess.run([_kubectl(), "get", "llmd", "-n", ns], env=env, capture_output=True, text=True)
        print(table.stdout, end="", file=progress.out, flush=True)
        progress.step("done" + (": the fleet keeps running" if keep else ""))
        if keep:
            (run_dir / STATE_FILE).write_text(json.dumps(asdict(kept), indent=1))
            if as_json:
                line = {**asdict(kept), "curl": kept.curl(), "openai_python": kept.openai()}
                print(json.dumps(line), flush=True)
            else:
                _print_kept(kept)
        ok = True
        return 0
    finally:
        if not (keep and ok):
            for p in _ordered(procs):
                p.terminate()
            for p in _ordered(procs):
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
            subprocess.run(
                ["bash", str(ROOT / "hack" / "cluster.sh"), "down"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _sweep(run_dir)
            say("stopped everything it started")


def _reasons(status: dict[str, Any]) -> str:
    return ", ".join(
        f"{c['type']} {c.get('reason', '')}"
        for c in status.get("conditions", [])
        if c["type"] in ("Ready", "Progressing")
    )


def _ordered(procs: dict[str, subprocess.Popen[bytes]]) -> list[subprocess.Popen[bytes]]:
    """The pod runner first (it stops its pods), then the operator, then Prometheus."""
    order = ("pod-runner", "operator", "prometheus")
    return [procs[k] for k in order if k in procs]


def _print_kept(k: Kept) -> None:
    print(
        f"""
The fleet keeps running. Stop it with:  llmfleet dev down --run-dir {k.run_dir}

  gateway (OpenAI base URL)  {k.gateway_url}
  API key                    {k.api_key}
  model                      {k.model}
  kubeconfig                 export KUBECONFIG={k.kubeconfig}
  Prometheus                 {k.prometheus_url or "-"}

Stream a reply with curl:

  {k.curl()}

or with the OpenAI SDK (pip install openai):

{chr(10).join("  " + line for line in k.openai().splitlines())}

Give the dashboard and the autoscaler something to show (the Azure conversation trace):

  llmfleet dev load --run-dir {k.run_dir}
""",
        flush=True,
    )


def _sweep(run_dir: Path, grace: float = 10.0) -> int:
    """SIGTERM every process still tagged with this run, SIGKILL what remains after ``grace``; how many."""
    left = tagged(run_dir)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if _alive(p) and not _zombie(p)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(left)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def down(run_dir: Path) -> int:
    """Stop a kept fleet: the recorded processes (gracefully, pod runner first), the control plane, then any
    process still carrying the run's tag."""
    kept = read_state(run_dir)
    stopped = 0
    if kept is not None:
        for pname in ("pod-runner", "operator", "prometheus"):
            pid = kept.pids.get(pname)
            if pid and _alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)  # each was started in its own session
                except ProcessLookupError:
                    continue
                deadline = time.monotonic() + 45
                while _alive(pid) and not _zombie(pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if _alive(pid) and not _zombie(pid):
                    os.killpg(pid, signal.SIGKILL)
                stopped += 1
    if (run_dir / "kubeconfig").exists():
        subprocess.run(
            ["bash", str(ROOT / "hack" / "cluster.sh"), "down"],
            env={**os.environ, "LLMFLEET_CLUSTER_DIR": str(run_dir)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    leftover = _sweep(run_dir)
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    if kept is None and not leftover:
        print(f"no kept fleet in {run_dir}; nothing runs from it")
    else:
        print(f"stopped the fleet in {run_dir} ({stopped} processes stopped gracefully, {leftover} swept)")
    return 0


def status(run_dir: Path, as_json: bool = False) -> int:
    """What runs from ``run_dir``: the processes, the LLMDeployment's state and how to reach it. Exit 0 when
    it runs, 1 when not (as `systemctl status` does)."""
    kept = read_state(run_dir)
    if kept is None:
        msg = {"running": False, "run_dir": str(run_dir)}
        print(
            json.dumps(msg) if as_json else f"no kept fleet in {run_dir} (llmfleet dev up --keep starts one)"
        )
        return 1
    procs = {k: _alive(p) and not _zombie(p) for k, p in kept.pids.items()}
    table = subprocess.run(
        [_kubectl(), "get", "llmd", kept.name, "-n", kept.namespace, "-o", "json"],
        env={**os.environ, "KUBECONFIG": kept.kubeconfig},
        capture_output=True,
        text=True,
    )
    live = json.loads(table.stdout) if table.returncode == 0 else {}
    conditions = {c["type"]: c["status"] for c in (live.get("status") or {}).get("conditions", [])}
    running = all(procs.values()) and table.returncode == 0
    if as_json:
        print(
            json.dumps(
                {
                    **asdict(kept),
                    "running": running,
                    "processes": procs,
                    "ready": (live.get("status") or {}).get("ready"),
                    "conditions": conditions,
                }
            )
        )
    else:
        print(f"fleet in {run_dir}: {'running' if running else 'NOT running'}")
        for pname, alive in procs.items():
            print(f"  {pname:<11} {'up' if alive else 'down'} (pid {kept.pids[pname]})")
        print(
            f"  {kept.namespace}/{kept.name}: ready {(live.get('status') or {}).get('ready')}, {conditions}"
        )
        print(f"  gateway {kept.gateway_url}  key {kept.api_key}  model {kept.model}")
        print(f"  export KUBECONFIG={kept.kubeconfig}")
    return 0 if running else 1
