"""The package's layers run one way (DEVELOPERS.md, "Layers").

Every module of ``medmodal`` is parsed (never imported) and each ``medmodal`` import, at module
level or inside a function, becomes an edge. The tests assert that no edge goes up a layer, that
the module-level import graph has no cycle, and that imports inside functions are kept for the
command line (start-up time) and the reasons listed in :data:`FUNCTION_LEVEL_IMPORTS`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medmodal"

# Low to high. A module may import its own layer and the layers below it. A layer is a top-level
# module or package of medmodal, or a sub-package named with its parent ("evaluation.metrics").
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "version"),
    ("safeio", "runs"),
    ("config",),
    ("data", "labeling"),
    ("evaluation.metrics",),  # pure scoring functions (numpy): baselines and training thresholds use them
    ("models",),
    ("training",),
    ("tasks",),
    ("evaluation", "retrieval", "explain"),
    ("experiments",),
    ("serving", "cli", "api", "medmodal"),  # "medmodal": the package's own __init__ (the Python API)
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}

# Imports inside functions outside cli/, each with its reason: (importing module, imported module) -> why.
_REGISTERS = "importing the family runs its @register decorators; each family module imports the registry"
FUNCTION_LEVEL_IMPORTS: dict[tuple[str, str], str] = {
    ("medmodal.models.registry", "medmodal.models.decoders"): _REGISTERS,
    ("medmodal.models.registry", "medmodal.models.fusion"): _REGISTERS,
    ("medmodal.models.registry", "medmodal.models.image_encoders"): _REGISTERS,
    ("medmodal.models.registry", "medmodal.models.peers"): _REGISTERS,
    ("medmodal.models.registry", "medmodal.models.text_encoders"): _REGISTERS,
    ("medmodal.models.registry", "medmodal.models.baselines"): _REGISTERS
    + "; scikit-learn loads only when asked for",
}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "medmodal.data.pipeline"
    target: str  # imported module
    line: int
    in_function: bool
    type_checking: bool  # under ``if TYPE_CHECKING:`` (no run-time import)

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """``medmodal.data.pipeline`` -> ``data``; ``medmodal.evaluation.metrics.generation`` ->
    ``evaluation.metrics``; the package itself -> ``medmodal``."""
    parts = module.split(".")
    if len(parts) == 1:
        return parts[0]
    sub_package = ".".join(parts[1:3])
    return sub_package if sub_package in LAYER_OF else parts[1]


def known_module(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement reaches (``from x import y`` -> ``x.y``, relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_edges(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    edges: list[Edge] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = {
                    known_module(name, modules)
                    for name in imported_names(child, module, path.name == "__init__.py")
                    if name == "medmodal" or name.startswith("medmodal.")
                }
                for target in sorted(t for t in targets if t and t != module):
                    edges.append(Edge(module, target, child.lineno, in_function, type_checking))
            inner_function = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            inner_checking = type_checking or (isinstance(child, ast.If) and _is_type_checking(child))
            visit(child, inner_function, inner_checking)

    visit(ast.parse(path.read_text(), filename=str(path)), False, False)
    return _most_specific(edges)


def _most_specific(edges: list[Edge]) -> list[Edge]:
    """``from medmodal.data import pipeline`` reaches ``medmodal.data`` and ``medmodal.data.pipeline``:
    keep the deeper one of a statement's targets."""
    by_statement: dict[int, list[Edge]] = {}
    for edge in edges:
        by_statement.setdefault(edge.line, []).append(edge)
    kept = []
    for group in by_statement.values():
        targets = [e.target for e in group]
        kept += [e for e in group if not any(t.startswith(e.target + ".") for t in targets)]
    return kept


def all_edges() -> list[Edge]:
    modules = package_modules()
    return [edge for module, path in modules.items() for edge in module_edges(module, path, modules)]


def upward_edges(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if LAYER_OF[layer(e.target)] > LAYER_OF[layer(e.source)]]


def find_cycle(edges: list[Edge]) -> list[str] | None:
    """One cycle of the module-level, run-time import graph as [a, b, ..., a], or None."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if not e.in_function and not e.type_checking:
            graph.setdefault(e.source, set()).add(e.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def unexplained_function_imports(edges: list[Edge]) -> list[Edge]:
    return [
        e for e in edges
        if e.in_function and layer(e.source) != "cli" and (e.source, e.target) not in FUNCTION_LEVEL_IMPORTS
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------- the tests


def test_every_package_is_in_a_layer():
    unplaced = sorted({layer(m) for m in package_modules()} - set(LAYER_OF))
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_no_import_goes_up_a_layer():
    assert not [str(e) for e in upward_edges(all_edges())]


def test_the_module_level_import_graph_has_no_cycle():
    cycle = find_cycle(all_edges())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_inside_functions_are_only_for_the_command_line_or_listed_with_a_reason():
    assert not [str(e) for e in unexplained_function_imports(all_edges())]


def test_the_listed_function_level_imports_still_exist():
    edges = {(e.source, e.target) for e in all_edges() if e.in_function}
    assert not [pair for pair in FUNCTION_LEVEL_IMPORTS if pair not in edges]


# ------------------------------------------------------------------------------- the checker itself


def _edges_of(tmp_path: Path, files: dict[str, str]) -> list[Edge]:
    """The edges of a made-up package: ``{"medmodal.data.a": source text}``."""
    modules = {}
    for name, text in files.items():
        path = tmp_path / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        modules[name.removesuffix(".__init__")] = path
    return [edge for name, path in modules.items() for edge in module_edges(name, path, modules)]


def test_the_checker_finds_an_upward_edge_a_cycle_and_a_function_level_import(tmp_path):
    edges = _edges_of(tmp_path, {
        "medmodal.data.a": "from medmodal.training.b import f\n",
        "medmodal.training.b": "from medmodal.training import c\n",
        "medmodal.training.c": "import medmodal.training.b\n\ndef g():\n    from medmodal.data import a\n",
    })  # fmt: skip
    assert [str(e) for e in upward_edges(edges)] == ["medmodal.data.a -> medmodal.training.b (line 1)"]
    assert find_cycle(edges) == ["medmodal.training.b", "medmodal.training.c", "medmodal.training.b"]
    assert [str(e) for e in unexplained_function_imports(edges)] == [
        "medmodal.training.c -> medmodal.data.a (line 4)"
    ]


def test_the_checker_reads_relative_imports_and_type_checking_blocks(tmp_path):
    edges = _edges_of(tmp_path, {
        "medmodal.models.__init__": "",
        "medmodal.models.x": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .y import Y\n",
        "medmodal.models.y": "from . import x\n",
    })  # fmt: skip
    assert {(e.source, e.target, e.type_checking) for e in edges} == {
        ("medmodal.models.x", "medmodal.models.y", True),
        ("medmodal.models.y", "medmodal.models.x", False),
    }
    assert find_cycle(edges) is None  # a TYPE_CHECKING import is no run-time edge
