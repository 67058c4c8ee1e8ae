"""KubeClient on the real kube-apiserver against the KubePort contract (tests/kube_contract.py): the same cases
FakeKube passes in the unit tests, so the fake cannot drift from the server unnoticed."""

from __future__ import annotations

import pytest

from llmfleet.kube.client import KubeClient, load_config
from tests.integration.conftest import Cluster
from tests.kube_contract import CASES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real(cluster: Cluster) -> KubeClient:
    return KubeClient(load_config(str(cluster.kubeconfig)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_api_server_keeps_the_contract(real: KubeClient, namespace: str, name: str) -> None:
    CASES[name](real, namespace)
