"""Leader election (llmfleet.kube.leader) against the real API server: one holder, release hands over in
retries, a stolen lease stops the leader within its renew deadline, a stopped candidate never takes it, and
the operator refuses lease timings that could allow two writers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration

TIMING = {"lease_s": 4, "renew_s": 3, "retry_s": 1}


def election(cluster, namespace: str, identity: str, lost: threading.Event):
    from llmfleet.kube.client import load_config
    from llmfleet.kube.leader import Election

    return Election(
        load_config(str(cluster.kubeconfig)),
        name="leader",
        namespace=namespace,
        identity=identity,
        on_lost=lost.set,
        **TIMING,
    )


def holder(cluster, namespace: str) -> str | None:
    return ((cluster.get("lease", "leader", namespace) or {}).get("spec") or {}).get("holderIdentity")


def campaign_in_thread(e, stop: threading.Event) -> list[bool]:
    result: list[bool] = []
    threading.Thread(target=lambda: result.append(e.campaign(stop)), daemon=True).start()
    return result


def test_one_holder_and_a_release_hands_over_in_retries(cluster, namespace) -> None:
    lost_a, lost_b = threading.Event(), threading.Event()
    a, b = election(cluster, namespace, "a", lost_a), election(cluster, namespace, "b", lost_b)
    assert a.campaign(threading.Event())
    stop_b = threading.Event()
    got_b = campaign_in_thread(b, stop_b)
    # b keeps trying for longer than a lease duration: a renews, so b never gets it.
    time.sleep(TIMING["lease_s"] * 2)
    assert got_b == [] and holder(cluster, namespace) == "a" and not lost_a.is_set()
    released = time.monotonic()
    a.release()
    eventually(lambda: got_b == [True], 30, 0.05, what="b to lead after a released")
    handover = time.monotonic() - released
    assert holder(cluster, namespace) == "b"
    assert handover < TIMING["lease_s"], f"release handed over in {handover:.1f}s: as if it had expired"
    assert not lost_a.is_set()  # a released on purpose: that is not a loss
    b.release()


def test_a_leader_whose_lease_is_taken_calls_on_lost_and_a_stopped_candidate_never_leads(
    cluster, namespace
) -> None:
    lost_a, lost_c = threading.Event(), threading.Event()
    a = election(cluster, namespace, "a", lost_a)
    assert a.campaign(threading.Event())
    # Someone else writes the lease as theirs (a partition healing, a clock jump): a can no longer renew.
    cluster.kubectl(
        "patch",
        "lease",
        "leader",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}}',
    )
    assert lost_a.wait(TIMING["renew_s"] * 4), "the leader did not notice it lost the lease"
    assert holder(cluster, namespace) == "intruder"

    # A candidate told to stop while waiting returns False and never takes the lease, even once it is free.
    c = election(cluster, namespace, "c", lost_c)
    stop = threading.Event()
    got = campaign_in_thread(c, stop)
    time.sleep(TIMING["retry_s"] * 2)
    stop.set()
    eventually(lambda: got == [False], 10, 0.05, what="the stopped campaign to return")
    cluster.kubectl(
        "patch",
        "lease",
        "leader",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"holderIdentity": null, "leaseDurationSeconds": 1}}',
    )
    time.sleep(TIMING["lease_s"] + 2 * TIMING["retry_s"])
    assert holder(cluster, namespace) is None


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"LLMFLEET_LEASE_DURATION": "10", "LLMFLEET_RENEW_DEADLINE": "10"}, "lease_duration"),
        ({"LLMFLEET_RENEW_DEADLINE": "3", "LLMFLEET_RETRY_PERIOD": "3"}, "renew_deadline"),
        ({"LLMFLEET_RETRY_PERIOD": "0"}, "retry_period"),
    ],
)
def test_lease_timings_that_could_allow_two_writers_are_refused(cluster, env, field) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmfleet",
            "operator",
            "--leader-elect",
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**cluster.env, **env},
    )
    assert r.returncode == 2 and field in r.stderr, r.stderr
