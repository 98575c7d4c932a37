"""The import structure of `src/autoif`, read from the source (AST), not by importing it.

Data flows one way (docs/architecture.md): the CLI runs the pipeline, the pipeline chains the
stages, and `report/` and `evals/` read a run's directory and the stage registry, never the
pipeline. These tests keep it so: no import cycle between modules, counting imports made inside
functions as well as at module level, and those under `if TYPE_CHECKING:` (a cycle of types is one
of the design too), and no import that reaches back up to the pipeline.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "autoif"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


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
    return [(name, fn) for name, fn, _ in _scan(module)]


def _scan(module: str) -> list[tuple[str, bool, bool]]:
    """(imported autoif module, inside a function, names taken from a package's __init__) for every
    import statement of `module`; `from . import name`, where `name` is no submodule, takes `name`
    from the package's __init__."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, bool, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, in_function, False) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            for name in _resolve(module, path.name == "__init__.py", node):
                from_init = (
                    name in MODULES
                    and MODULES[name].name == "__init__.py"
                    and not all(f"{name}.{alias.name}" in MODULES for alias in node.names)
                )
                found.append((name, in_function, from_init))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return [(name, fn, init) for name, fn, init in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def _owner(name: str) -> str | None:
    """The module an import binds: `autoif.llm.base` itself, or the package holding a name."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for name, _, from_init in _scan(module):
            target = _owner(name)
            # A package's __init__ importing its own submodules is how packages are built, and a
            # submodule importing a sibling runs its parent package's __init__ first: neither is a
            # cycle between two pieces of the design. But a submodule that takes a name from its
            # package's __init__ (`from . import benchmark`, at module level or in a function)
            # depends on that __init__, which imports the submodules: that edge counts.
            if target and target != module and (from_init or not module.startswith(target + ".")):
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


def test_a_name_taken_from_the_own_package_init_inside_a_function_counts(tmp_path, monkeypatch):
    """`from . import name` in a function of a package's submodule depends on the package's __init__
    (evals/stats.py once took `benchmark` from evals/__init__.py, which imports stats)."""
    package = tmp_path / PACKAGE / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .part import work\n\ndef helper():\n    return 1\n")
    (package / "part.py").write_text("def work():\n    from . import helper\n\n    return helper()\n")
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "SRC", tmp_path)
    monkeypatch.setattr(here, "MODULES", {module_name(p): p for p in sorted((tmp_path / PACKAGE).rglob("*.py"))})
    assert ("autoif.pkg", True, True) in _scan("autoif.pkg.part")
    assert find_cycle(graph()) == ["autoif.pkg", "autoif.pkg.part", "autoif.pkg"]


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


def test_report_imports_no_stage_code():
    """The report reads the run directory through rundir.py's table, not the stage registry."""
    offenders = [
        (module, name)
        for module in MODULES
        if module.split(".")[1:2] == ["report"]
        for name, _ in imports(module)
        if (_owner(name) or "").startswith("autoif.stages")
    ]
    assert offenders == []
