"""Data flows one way: planners -> trainers -> inference. What trainers and inference both need (whole cases,
sliding-window reconstruction, checkpoint reading) lives in ``blogrr_nnu/`` itself, so neither role imports the
other (docs/architecture.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (absolute names)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("role, forbidden", [("trainers", "blogrr_nnu.inference"),
                                              ("inference", "blogrr_nnu.trainers")])
def test_trainers_and_inference_do_not_import_each_other(role, forbidden):
    offenders = {f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / role).glob("*.py"))
                 for m in imported_modules(p) if m == forbidden or m.startswith(forbidden + ".")}
    assert not offenders, sorted(offenders)


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from blogrr_nnu.trainers import cases\n")
    assert "blogrr_nnu.trainers.cases" in imported_modules(f)


def test_the_core_imports_no_later_stage():
    later = ("blogrr_nnu.trainers", "blogrr_nnu.inference", "blogrr_nnu.benchmarks", "blogrr_nnu.commands")
    offenders = {f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / "blogrr_nnu").glob("*.py"))
                 for m in imported_modules(p) if any(m == s or m.startswith(s + ".") for s in later)}
    assert not offenders, sorted(offenders)


def _modules() -> list[Path]:
    return sorted(p for d in ("blogrr_nnu", "planners", "trainers", "inference") for p in (ROOT / d).rglob("*.py")
                  if p.name != "__init__.py")


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_architecture_page_lists_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(ROOT)) for p in _modules()
               if "commands" not in p.parts and f"`{p.relative_to(ROOT)}`" not in page]
    assert not missing, missing
