"""The layout's boundaries hold for tests too (pyproject's import-linter contracts cover the packages):
a service's tests use no other service, a library's tests no service and not the CLI. A test module that
needs another stage says so, and why, in a line ``# uses postwire.<stage>: <why>``; nothing else passes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = {p.name: "postwire." + p.name.replace("-", "_") for p in (REPO / "services").iterdir()
            if (p / "pyproject.toml").exists()}
STAGES = set(SERVICES.values()) | {"postwire.cli"}
_DECLARED = re.compile(r"^# uses (postwire\.[a-z_]+): \S", re.MULTILINE)


def _stages_imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            found |= {s for s in STAGES if name == s or name.startswith(s + ".")}
    return found


def _test_modules() -> list[tuple[Path, set[str]]]:
    """Each test module of a service or library with the stages it may use without saying why."""
    out = [(f, {own}) for name, own in SERVICES.items()
           for f in (REPO / "services" / name / "tests").rglob("*.py")]
    out += [(f, set()) for f in (REPO / "libs").glob("*/tests/**/*.py")]
    return out


def test_a_test_uses_another_stage_only_where_it_says_why() -> None:
    undeclared = []
    for path, allowed in _test_modules():
        declared = set(_DECLARED.findall(path.read_text()))
        for stage in sorted(_stages_imported(path) - allowed - declared):
            undeclared.append(f"{path.relative_to(REPO)} imports {stage}")
    assert undeclared == []


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("def test() -> None:\n    from postwire.transformer.inline import inline_html\n")
    assert _stages_imported(module) == {"postwire.transformer"}
    module.write_text("# uses postwire.transformer: reason\nimport postwire.transformer.inline\n")
    assert set(_DECLARED.findall(module.read_text())) == {"postwire.transformer"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_folder_is_a_stage_the_contracts_name(service: str) -> None:
    """A new service folder must join the import-linter contracts in pyproject.toml."""
    assert f'"{SERVICES[service]}"' in (REPO / "pyproject.toml").read_text()
