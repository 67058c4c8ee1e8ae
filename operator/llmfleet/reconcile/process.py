"""The operator process: settings → kube client → (leader election) → kopf's handlers.

With ``leader_elect`` the replica campaigns for the Lease first and starts kopf only once it leads; a
standby answers ``/healthz`` itself meanwhile (kopf's own endpoint exists only once kopf runs). Losing the
lease ends the process at once (exit code 1, the kubelet restarts it as a standby): kopf cannot be stopped
fast enough to guarantee that no write follows the loss. A graceful stop (SIGTERM, SIGINT) lets kopf
finish, then releases the lease so a standby takes over in one retry period.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import TYPE_CHECKING

from llmfleet.settings import OperatorSettings

if TYPE_CHECKING:
    from llmfleet.kube.leader import Election

log = logging.getLogger(__name__)

EXIT_LOST_LEASE = 1


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path.split("?", 1)[0] == "/healthz"
        body = b'{"standby": true}' if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("content-type", "application/json" if ok else "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not worth a line
        pass


def identity(settings: OperatorSettings) -> str:
    """The pod (or host) and a suffix unique to this process: a container restarted in the same pod is a new
    candidate, not the old leader resuming a lease it may no longer deserve (client-go does the same)."""
    return settings.identity or f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def run(settings: OperatorSettings) -> int:
    import kopf

    from llmfleet.autoscale.metrics import PrometheusSource
    from llmfleet.kube.client import KubeClient, load_config
    from llmfleet.reconcile import handlers
    from llmfleet.reconcile.metrics import FleetMetrics
    from llmfleet.reconcile.observe import CHILD_KINDS
    from llmfleet.render import RenderOptions

    api = load_config(settings.kubeconfig)
    gauges = FleetMetrics()
    if settings.metrics_port:
        gauges.serve(settings.bind_host, settings.metrics_port)  # a standby serves leader 0
    election = None
    if settings.leader_elect:
        from llmfleet.kube.leader import Election

        if log.getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("leaderelection").setLevel(logging.WARNING)  # a line per retry otherwise
        election = Election(
            api,
            name=settings.lease_name,
            namespace=settings.lease_namespace or os.environ.get("POD_NAMESPACE") or "llmfleet-system",
            identity=identity(settings),
            lease_s=settings.lease_duration,
            renew_s=settings.renew_deadline,
            retry_s=settings.retry_period,
            on_lost=_exit_now,
        )
        if not _campaign(election, settings):
            return 0
    gauges.leader = 1.0

    port = KubeClient(api)
    port.warm([*CHILD_KINDS, ("v1", "Pod"), ("v1", "Event"), ("llmfleet.io/v1alpha1", "LLMDeployment")])
    options = RenderOptions(
        llmfleet_image=settings.llmfleet_image,
        engine_image=settings.engine_image,
        engine_command=tuple(settings.engine_command) if settings.engine_command else None,
        engine_discovery=settings.engine_discovery,
    )
    handlers.configure(
        handlers.Reconciler(
            port,
            options,
            handlers.utcnow,
            workers=settings.workers,
            # One fetch of the fleet-wide queries serves every CR ticking within half an interval.
            metrics=PrometheusSource(max_age_s=min(5.0, settings.autoscale_interval / 2)),
            prometheus_url=settings.prometheus_url,
            reclaim_taints=tuple(settings.reclaim_taints),
            reclaim_conditions=tuple(settings.reclaim_conditions),
            gauges=gauges,
        ),
        settings,
    )
    try:
        kopf.run(
            standalone=True,  # one writer is the Lease's job, not kopf peering's
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=(
                f"http://{settings.bind_host}:{settings.liveness_port}/healthz"
                if settings.liveness_port
                else None
            ),
        )
    finally:
        handlers.close()  # no write after this: the next leader may take over
        if election is not None:
            election.release()
    return 0


def _campaign(election: Election, settings: OperatorSettings) -> bool:
    """Wait for the lease, answering /healthz and honouring SIGTERM/SIGINT meanwhile."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d while on standby: stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server = None
    if settings.liveness_port:
        server = ThreadingHTTPServer((settings.bind_host, settings.liveness_port), _Healthz)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="standby-healthz", daemon=True).start()
    try:
        log.info("%s on standby for the lease %s", election.identity, settings.lease_name)
        return election.campaign(stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()  # kopf binds the same port next
        for s, h in previous.items():
            signal.signal(s, h)


def _exit_now() -> None:
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_LOST_LEASE)
