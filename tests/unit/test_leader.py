"""llmfleet.kube.leader without an API server: a refused connection is a failed attempt, retried, never the
end of the election thread (else a standby would silently stop campaigning); a stop ends that thread."""

from __future__ import annotations

import socket
import threading
import time

from kubernetes import client

from llmfleet.kube.leader import Election


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_keeps_the_candidate_campaigning() -> None:
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{closed_port()}"
    cfg.retries = False
    lost = threading.Event()
    e = Election(
        client.ApiClient(cfg),
        name="l",
        namespace="n",
        identity="a",
        lease_s=4,
        renew_s=3,
        retry_s=1,
        on_lost=lost.set,
    )
    ok, _ = e._lock.get("l", "n")
    assert ok is False
    stop = threading.Event()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(e.campaign(stop)))
    t.start()
    time.sleep(2.5)  # two retries against the refused port
    alive = [th for th in threading.enumerate() if th.name == "leader-election"]
    campaigning = bool(alive) and all(th.is_alive() for th in alive)
    stop.set()
    t.join(10)
    assert result == [False] and campaigning and not lost.is_set()
    # and stopping ends the library's thread too: none is left mid-request when the interpreter exits
    assert not any(th.is_alive() for th in alive)
