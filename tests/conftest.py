"""Shared test helpers: paths of the repository, its datasets (bench/data) and the examples."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import settings

# No wall-clock limit per generated example: a loaded CI machine (a compile beside the tests) once took 372 ms
# over hypothesis' default 200 ms deadline on a one-character input. Tests that bound time say so themselves.
settings.register_profile("llmfleet", deadline=None)
settings.load_profile("llmfleet")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
DATA = ROOT / "bench" / "data"  # the datasets tests and benchmarks use (bench/data/README.md)


def hack_script(name: str) -> ModuleType:
    """A script of hack/ (not a package) loaded as a module, for tests of its functions."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "hack" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def minimal_obj() -> dict:
    return {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "demo", "namespace": "ml", "uid": "1234"},
        "spec": {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"}},
    }
