"""Project rules the linters do not check. ruff, mypy and the import contracts run as steps of hack/test.sh
(both tiers) and of pre-commit, not inside pytest; test_import_contracts.py checks the contracts themselves."""

from __future__ import annotations

from tests.conftest import ROOT


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
