"""Arrows one way: ``services/`` import the package, nothing under ``shared/`` imports ``services``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMPORTERS = {"import_module", "__import__"}


def _is_services(module: str | None) -> bool:
    return module is not None and (module == "services" or module.startswith("services."))


def services_imports(path: Path) -> list[str]:
    """``LINE: statement`` for every import of ``services`` in one source file (dynamic ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if _is_services(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module] if node.level == 0 and _is_services(node.module) else []
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0] if node.args else None
            names = ([first.value] if name in IMPORTERS and isinstance(first, ast.Constant)
                     and isinstance(first.value, str) and _is_services(first.value) else [])
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names]
    return found


def test_nothing_under_shared_imports_services():
    offenders = {str(path.relative_to(REPO)): hits for path in sorted((REPO / "shared").rglob("*.py"))
                 if (hits := services_imports(path))}
    assert offenders == {}, "shared/ must not import services/ (services import the package, not the reverse)"


def test_the_scan_sees_every_kind_of_import(tmp_path):
    source = tmp_path / "bad.py"
    source.write_text("import services.trainer.server\nfrom services.sweep import server\n"
                      "import importlib\nimportlib.import_module('services.evaluator.server')\n"
                      "from spelltransfer import services_like\nimport servicesx\n")
    assert services_imports(source) == ["1: services.trainer.server", "2: services.sweep",
                                        "4: services.evaluator.server"]


@pytest.mark.parametrize("command, option", [("controller", "--state-dir"), ("trainer", "--pack-size"),
                                             ("evaluator", "--work-dir")])
def test_platform_commands_hand_over_to_the_services(command, option):
    result = subprocess.run([sys.executable, "-m", "spelltransfer.cli", "platform", command, "--help"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"spelltransfer platform {command}" in result.stdout and option in result.stdout
