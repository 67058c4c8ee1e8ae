"""The import contracts in pyproject.toml would catch the package cycles and leaks they exist for.

Each case copies the package, adds one import that once existed (or that the design forbids), and runs
import-linter on the copy: the named contract must break. ``hack/test.sh`` runs lint-imports on the real tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent

CASES = {
    # the cycle reconcile -> autoscale.loop -> reconcile.status (ScaleInput used to live in reconcile)
    "autoscaler-imports-reconcile": ("autoscale/loop.py", "from llmfleet.reconcile import status", "Layers"),
    # the cycle autoscale.policy -> sim.perfmodel -> ... sim.fleet -> autoscale.policy
    "policy-imports-the-simulator": ("autoscale/policy.py", "from llmfleet.sim import perfmodel", "Layers"),
    # settings -> reconcile.reclaim, while reconcile reads settings
    "settings-import-reconcile": ("settings.py", "from llmfleet.reconcile import plan", "Layers"),
    "fleet-rules-import-the-renderer": ("fleet/pools.py", "from llmfleet.render import common", "Layers"),
    "gateway-imports-the-operator": ("gateway/app.py", "from llmfleet.reconcile import plan", "independent"),
    "simulator-imports-the-gateway": ("sim/fleet.py", "from llmfleet.gateway import routing", "independent"),
    "fleet-rules-open-a-socket": ("fleet/pods.py", "import socket", "Pure cores do no I/O"),
    "plan-calls-the-api": ("reconcile/plan.py", "from llmfleet.kube import client", "Pure cores do no I/O"),
    "renderer-imports-kubernetes": ("render/engine.py", "import kubernetes", "kubernetes client"),
    "gateway-uses-kopf": ("gateway/routing.py", "import kopf", "kopf"),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contracts")
    shutil.copytree(
        ROOT / "operator" / "llmfleet",
        root / "operator" / "llmfleet",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "operator")}
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_forbidden_import_breaks_its_contract(tree: Path, case: str) -> None:
    module, line, contract = CASES[case]
    path = tree / "operator" / "llmfleet" / module
    original = path.read_text()
    try:
        path.write_text(f"{original}\n{line}  # noqa\n")
        result = lint_imports(tree)
    finally:
        path.write_text(original)
    broken = [ln for ln in result.stdout.splitlines() if " BROKEN" in ln]
    assert result.returncode != 0, result.stdout
    assert any(contract in ln for ln in broken), result.stdout


def test_the_copied_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout
