"""The import structure of `src/autoif`, read from the source (AST), not by importing it.

Data flows one way (docs/architecture.md): the CLI runs the pipeline, the pipeline chains the
stages, and `report/` and `evals/` read a run's directory and the stage registry, never the
pipeline. These tests keep it so: no import cycle between modules, counting imports made inside
functions as well as at module level (only `if TYPE_CHECKING:` blocks are left out, as they never
run), and no import that reaches back up to the pipeline.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "autoif"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The autoif modules an import-from names (`from . import x` may name a submodule `x`)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
    return names or [target]


def imports(module: str) -> list[tuple[str, bool]]:
    """(imported autoif module, made inside a function) for every import statement of `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.extend((name, in_function) for name in _resolve(module, path.name == "__init__.py", node))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return [(name, fn) for name, fn in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def _owner(name: str) -> str | None:
    """The module an import binds: `autoif.llm.base` itself, or the package holding a name."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for name, _ in imports(module):
            target = _owner(name)
            # A package's __init__ importing its own submodules is how packages are built, and a
            # submodule importing its parent package's name runs that __init__ first: neither is a
            # cycle between two pieces of the design, so only edges between distinct modules count,
            # and never from a module to a package that contains it.
            if target and target != module and not module.startswith(target + "."):
                edges[module].add(target)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_the_scan_sees_the_package():
    assert {"autoif.cli", "autoif.pipeline", "autoif.stages.base", "autoif.report", "autoif.evals"} <= set(MODULES)
    # `autoif run` reaches the pipeline through runner.py, both imports made inside functions.
    assert ("autoif.runner", True) in imports("autoif.cli") and ("autoif.pipeline", True) in imports("autoif.runner")


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_report_and_evals_never_import_the_pipeline():
    offenders = [
        (module, name)
        for module in MODULES
        if module.split(".")[1:2] in (["report"], ["evals"])
        for name, _ in imports(module)
        if _owner(name) == "autoif.pipeline"
    ]
    assert offenders == []


def test_pipeline_imports_no_sibling_module_inside_a_function():
    inside = [name for name, in_function in imports("autoif.pipeline") if in_function]
    assert inside == []
