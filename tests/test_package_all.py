"""Every package of medmodal declares ``__all__``, and every name in it exists.

Checked from the source (nothing imported): a name in ``__all__`` is a submodule or sub-package
of that package, or a name the ``__init__`` binds (import, def, class, assignment).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medmodal"
INITS = sorted(PACKAGE.rglob("__init__.py"))


def declared_all(tree: ast.Module) -> list[str] | None:
    """The literal ``__all__`` list of a module, or None when it has none."""
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(node.value))
    return None


def bound_names(tree: ast.Module) -> set[str]:
    """Names the module binds at its top level, ``if TYPE_CHECKING:`` blocks included."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def lazy_names(tree: ast.Module) -> set[str]:
    """Keys of a module-level ``_LAZY = {name: module}`` table (PEP 562 ``__getattr__``)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def submodules(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in package.glob("*/__init__.py")
    }


@pytest.mark.parametrize("init", INITS, ids=lambda p: str(p.parent.relative_to(PACKAGE.parent)))
def test_package_declares_all_and_every_name_exists(init):
    tree = ast.parse(init.read_text())
    names = declared_all(tree)
    assert names is not None, f"{init}: no __all__"
    known = submodules(init.parent) | bound_names(tree) | lazy_names(tree)
    assert not [n for n in names if n not in known], (
        f"{init}: __all__ names nothing called {set(names) - known}"
    )
    assert len(names) == len(set(names)), f"{init}: __all__ repeats a name"


def test_the_checker_finds_a_missing_name(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import x\n__all__ = ['a', 'x', 'gone']\n")
    (package / "a.py").write_text("x = 1\n")
    tree = ast.parse((package / "__init__.py").read_text())
    known = submodules(package) | bound_names(tree)
    assert [n for n in declared_all(tree) if n not in known] == ["gone"]
