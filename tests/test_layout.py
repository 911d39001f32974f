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
    """The project packages (`tng.X` -> X) and other top-level names every absolute import in one file names."""
    def package(dotted: str) -> str:
        parts = dotted.split(".")
        return parts[1] if parts[0] == "tng" and len(parts) > 1 else parts[0]

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {package(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(package(node.module) if node.module != "tng" else node.names[0].name)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downward(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files}
    assert {f: w for f, w in wrong.items() if w} == {}



def test_installed_as_one_tng_namespace() -> None:
    """pyproject.toml maps the folders under `tng`: that name is importable, the folder names are not."""
    import importlib.util

    import tng.codec

    assert Path(tng.codec.__file__).parent == ROOT / "codec"
    assert {name: importlib.util.find_spec(name) for name in ("codec", "evaluation", "jobs", "pipeline")} == dict.fromkeys(
        ("codec", "evaluation", "jobs", "pipeline"))
