"""Which package may import which: `codec` is the core and imports none of the others; `evaluation`
measures the codec and imports nothing from the jobs or the pipeline that use it. Read from the
source (every import statement, top level or inside a function), so nothing is imported here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"codec": {"evaluation", "jobs", "pipeline"}, "evaluation": {"jobs", "pipeline"}}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in one file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downward(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files}
    assert {f: w for f, w in wrong.items() if w} == {}

