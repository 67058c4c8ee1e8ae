"""Shared test helpers: paths of the repository, its datasets (bench/data) and the examples."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# No wall-clock limit per generated example: a loaded CI machine (a compile beside the tests) once took 372 ms
# over hypothesis' default 200 ms deadline on a one-character input. Tests that bound time say so themselves.
settings.register_profile("llmfleet", deadline=None)
settings.load_profile("llmfleet")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
DATA = ROOT / "bench" / "data"  # the datasets tests and benchmarks use (bench/data/README.md)


@pytest.fixture
def minimal_obj() -> dict:
    return {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "demo", "namespace": "ml", "uid": "1234"},
        "spec": {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"}},
    }
