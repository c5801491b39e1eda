"""The user-error hierarchy: errors.py is the lowest layer, and every user error of the package is a
MedmodalError (the CLI reports those as one line; everything else is a bug with a traceback)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import medmodal
from medmodal import errors

PACKAGE = Path(medmodal.__file__).parent

# Classes named *Error in the package that are not user errors (none today); each needs a reason.
NOT_USER_ERRORS: dict[str, str] = {}

# Callers catch these as ValueError / FileNotFoundError / RuntimeError: the re-basing keeps that.
KEEPS_BUILTIN_BASE = {
    "medmodal.config.ConfigError": ValueError,
    "medmodal.safeio.UnsafeFileError": ValueError,
    "medmodal.safeio.UnreadableFileError": ValueError,
    "medmodal.errors.InputNotFoundError": FileNotFoundError,
    "medmodal.errors.RunNotFoundError": FileNotFoundError,
    "medmodal.errors.OutputExistsError": FileExistsError,
}


def test_errors_module_imports_nothing_from_medmodal():
    tree = ast.parse((PACKAGE / "errors.py").read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.split(".")[0] == "medmodal"]


def package_error_classes() -> list[str]:
    """``module.Class`` of every class named ``*Error`` defined at the top of a medmodal module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                found.append(f"{module}.{node.name}")
    return found


def _resolve(dotted: str) -> type:
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_every_error_class_of_the_package_is_a_user_error():
    classes = package_error_classes()
    assert "medmodal.data.images.ImageReadError" in classes  # the scan sees the package
    not_user = [
        name
        for name in classes
        if name not in NOT_USER_ERRORS and not issubclass(_resolve(name), errors.MedmodalError)
    ]
    assert not_user == []


@pytest.mark.parametrize("dotted, builtin", sorted(KEEPS_BUILTIN_BASE.items()))
def test_rebased_errors_keep_their_builtin_base(dotted, builtin):
    cls = _resolve(dotted)
    assert issubclass(cls, errors.MedmodalError) and issubclass(cls, builtin)


def test_the_bases_are_distinct_kinds_of_mistake():
    bases = (errors.ConfigError, errors.UsageError, errors.DataError, errors.RunError, errors.UnsafeFileError)
    for base in bases:
        assert issubclass(base, errors.MedmodalError)
        assert not any(issubclass(base, other) for other in bases if other is not base)
    assert not issubclass(errors.MedmodalError, ValueError)  # a bare ValueError is a bug, not a user error
