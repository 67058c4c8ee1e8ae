"""Project rules checked in the test run: import layering, lint, types on the pure packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    return subprocess.run(
        [str(BIN / name), *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )


def test_import_contracts_hold() -> None:
    result = tool("lint-imports", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = tool("ruff", "check", "operator", "tests", "bench")
    assert result.returncode == 0, result.stdout


def test_mypy_strict_on_the_api_renderers_and_gateway() -> None:
    result = tool("mypy")
    assert result.returncode == 0, result.stdout


def test_operator_dir_is_not_a_package() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_every_module_has_a_docstring() -> None:
    import ast

    missing = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "operator" / "llmfleet").rglob("*.py")
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert not missing, missing
