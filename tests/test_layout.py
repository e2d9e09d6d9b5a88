"""The layout the code promises: small files, a thin Focuser, no reaching into another
module's private names (library, integrations, scripts, examples, research)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["ragfocus", "integrations", "scripts", "examples", "research"]
LIBRARY_LINES = 450
FOCUSER_LINES = 300


def _python_files(*folders: str) -> list[Path]:
    files = []
    for folder in folders:
        files += [path for path in (ROOT / folder).rglob("*.py") if "tests" not in path.relative_to(ROOT).parts[1:]]
    return sorted(files)


def _private_uses(path: Path) -> list[str]:
    """``from module import _name`` and ``module._name`` where ``module`` was imported."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{name}:{node.lineno} imports {node.module}.{alias.name}")
                elif node.module.startswith(("ragfocus", "langchain_ragfocus")):
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(("ragfocus", "langchain_ragfocus")):
                    modules.add((alias.asname or alias.name).split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name) and node.value.id in modules
        ):
            found.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    found = [use for path in _python_files(*CHECKED) for use in _private_uses(path)]
    assert not found, "\n".join(found)


def test_the_private_name_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from ragfocus.focuser import _hidden\nimport ragfocus.focuser as F\nF._lock\nF.public\n")
    found = _private_uses(sample)
    assert len(found) == 2 and "_hidden" in found[0] and "F._lock" in found[1]


def test_library_files_are_small_and_the_focuser_thin() -> None:
    long = {str(path.relative_to(ROOT)): lines for path in _python_files("ragfocus")
            if (lines := len(path.read_text().splitlines())) > LIBRARY_LINES}
    assert not long, f"library files over {LIBRARY_LINES} lines: {long}"
    assert len((ROOT / "ragfocus" / "focuser.py").read_text().splitlines()) <= FOCUSER_LINES
