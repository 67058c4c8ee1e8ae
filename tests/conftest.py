"""Shared test helpers: paths of the repository, its datasets (bench/data) and the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

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
