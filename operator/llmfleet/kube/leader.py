"""Leader election: one active operator per Lease (``coordination.k8s.io/v1``).

The protocol is the ``kubernetes`` client's ``leaderelection`` module (acquire when the lease is free or has
not been renewed for a lease duration as observed locally; renew every retry period; give up when renewal
has failed for the renew deadline; writes are optimistic, by resourceVersion, so two candidates cannot both
take a free lease). Two things it lacks are added here, without touching the protocol:

- **Release on a graceful shutdown.** Renewal is refused from then on and the lease is written back with no
  holder (as client-go's ``ReleaseOnCancel`` does), so a standby takes over at its next retry, in seconds,
  not after a lease duration.
- **A deadline the library cannot miss.** Its API calls have no timeout, so a hung request would keep it in
  its renew loop past the deadline while this replica still acts as leader. A watchdog calls ``on_lost``
  when no renewal has succeeded for the renew deadline, whatever the library's thread is doing.

``on_lost`` is expected to stop every writer at once (the operator exits the process): with the usual
durations (15 s lease, 10 s deadline, 2 s retry) the old leader has stopped ``retry + deadline`` = 12 s after
its last renewal at most, before any standby may take the lease (15 s after it last saw it change).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock
from urllib3.exceptions import HTTPError

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """Raised inside the library's thread once the candidate stopped or released: ends its loops (which
    have no stop of their own), so no daemon thread is left mid-request when the interpreter exits."""


class _Lock(LeaseLock):
    """The library's Lease lock on our ApiClient, which records when the lease was last written, can be told
    to stop renewing, and treats a connection error as a failed attempt."""

    def __init__(self, api: client.ApiClient, name: str, namespace: str, identity: str) -> None:
        super().__init__(name, namespace, identity)
        self.api_instance = client.CoordinationV1Api(api)
        self.written = 0.0  # time.monotonic() of the last successful create or update
        self.released = threading.Event()

    # The library catches ApiException only: a refused connection (an API server restarting) would end its
    # thread, and a standby would never campaign again. Such errors are a failed attempt, retried.
    def get(self, name: str, namespace: str) -> tuple[bool, object]:
        if self.released.is_set():
            raise _Stopped
        try:
            return super().get(name, namespace)  # type: ignore[no-any-return]
        except HTTPError as exc:
            return False, ApiException(status=0, reason=f"API server not reachable: {exc}")

    def create(self, name: str, namespace: str, election_record: object) -> bool:
        return self._write("created", lambda: super(_Lock, self).create(name, namespace, election_record))

    def update(self, name: str, namespace: str, updated_record: object) -> bool:
        return self._write("renewed", lambda: super(_Lock, self).update(name, namespace, updated_record))

    def _write(self, what: str, call: Callable[[], object]) -> bool:
        """One create or update: refused once released, a connection error is a failed attempt."""
        if self.released.is_set():
            return False
        try:
            ok = bool(call())
        except HTTPError as exc:
            log.warning("lease %s/%s not %s: %s", self.namespace, self.name, what, exc)
            return False
        if ok:
            self.written = time.monotonic()
        return ok


class Election:
    """Campaign for one Lease. ``campaign()`` blocks until this replica leads (True) or ``stop`` is set
    (False); after that, ``on_lost`` runs (from another thread) if leadership is lost, and ``release()``
    gives the lease up."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_s: int,
        renew_s: int,
        retry_s: int,
        on_lost: Callable[[], None],
    ) -> None:
        self.identity = identity
        self.renew_s = renew_s
        self.retry_s = retry_s
        self.on_lost = on_lost
        self._lock = _Lock(api, name, namespace, identity)
        self._leading = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._config = electionconfig.Config(
            self._lock,
            lease_s,
            renew_s,
            retry_s,
            onstarted_leading=self._leading.set,
            onstopped_leading=self._stopped,
        )

    def campaign(self, stop: threading.Event) -> bool:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()
        while not self._leading.wait(0.2):
            if stop.is_set():
                self._lock.released.set()  # a candidate that is told to stop never takes the lease afterwards
                self._join()
                return False
        log.info("%s leads (lease %s/%s)", self.identity, self._lock.namespace, self._lock.name)
        threading.Thread(target=self._watchdog, name="leader-watchdog", daemon=True).start()
        return True

    def _run(self) -> None:
        with contextlib.suppress(_Stopped):
            leaderelection.LeaderElection(self._config).run()

    def _join(self) -> None:
        """Wait for the library's thread to see the stop: it sleeps a retry period between attempts and an
        attempt in flight ends with its request."""
        if self._thread is not None:
            self._thread.join(self.retry_s + 5)

    def _stopped(self) -> None:
        if not self._lock.released.is_set() and not self._lost.is_set():
            self._lost.set()
            log.critical("%s lost the lease %s/%s", self.identity, self._lock.namespace, self._lock.name)
            self.on_lost()

    def _watchdog(self) -> None:
        while not self._lock.released.is_set() and not self._lost.is_set():
            if time.monotonic() - self._lock.written > self.renew_s:
                self._stopped()
                return
            time.sleep(min(0.5, self.retry_s / 2))

    def release(self) -> None:
        """Stop renewing and write the lease back with no holder, if it is still ours (conflict-safe: the
        write carries the resourceVersion just read)."""
        self._lock.released.set()
        if not self._leading.is_set() or self._lost.is_set():
            self._join()
            return
        api = self._lock.api_instance
        try:
            lease = api.read_namespaced_lease(
                self._lock.name, self._lock.namespace, _request_timeout=self.retry_s
            )
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            now = datetime.now(UTC)
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.acquire_time = now
            lease.spec.renew_time = now
            api.replace_namespaced_lease(
                self._lock.name, self._lock.namespace, lease, _request_timeout=self.retry_s
            )
            log.info("%s released the lease %s/%s", self.identity, self._lock.namespace, self._lock.name)
        except (ApiException, HTTPError) as exc:  # the lease then expires after its duration instead
            log.warning("%s could not release the lease: %s", self.identity, exc)
        finally:
            self._join()
