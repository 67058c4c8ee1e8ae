"""FakeKube against the KubePort contract (tests/kube_contract.py); the integration twin runs the same cases on
the real API server."""

from __future__ import annotations

import pytest

from llmfleet.kube.fake import FakeKube
from tests.kube_contract import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_fake_kube_keeps_the_contract(name: str) -> None:
    CASES[name](FakeKube(), "contract")
