"""The package's layers, read from its imports with ``ast``: every import of the package's own
modules (at module level or inside a function) goes to the same layer or a lower one, and no
modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ucdir_core"
#: the layers, lowest first
LAYERS = ("base", "models", "method", "align", "config", "data", "evaluation", "training", "inference", "companion", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of a module of the package (the package's own ``__init__`` sits at the base)."""
    parts = module.split(".")
    return 0 if len(parts) == 1 else LAYERS.index(parts[1])


def own_imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports (``from ucdir_core.x import y`` counts
    ``ucdir_core.x.y`` when that is a module, else ``ucdir_core.x``)."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ucdir_core")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ucdir_core"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): own_imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_subpackage_is_a_known_layer():
    found = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(LAYERS) - {"cli"}
    assert (PACKAGE / "cli.py").exists()


def test_imports_go_down_the_layers_only():
    upward = [f"{m} -> {t}" for m, targets in graph().items() for t in targets
              if layer(t) > layer(m) and t != "ucdir_core"]
    assert upward == []


def test_the_root_package_imports_the_base_only():
    assert all(layer(t) == 0 for t in graph()["ucdir_core"])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph (a list of modules), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    # a package's __init__ that gathers its submodules is not a cycle with them
    edges = {m: {t for t in ts if not m.startswith(t + ".") and t != "ucdir_core"} for m, ts in graph().items()}
    assert find_cycle(edges) is None


@pytest.mark.parametrize("edges, cyclic", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"b"}, "b": {"a"}}, True),
])
def test_the_cycle_finder_finds_cycles(edges, cyclic):
    assert (find_cycle(edges) is not None) == cyclic


def test_the_layer_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ucdir_core.training.trainer import Trainer\n")
    targets = own_imports(bad)
    assert "ucdir_core.training.trainer" in targets and layer("ucdir_core.training.trainer") > layer("ucdir_core.base")
