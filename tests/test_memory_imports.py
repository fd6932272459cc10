"""memory/ has no import cycle (module-level, function-local and TYPE_CHECKING imports all count), its
helpers do not import the block manager, and nothing outside the allocator reads its free list or
refcounts directly."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMORY = ROOT / "memory"


def _imports(path: Path, package: str, modules: set[str]) -> set[str]:
    """Modules of `package` that `path` imports anywhere in its body (ast.walk sees every nesting)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in modules:
                found.add(node.module)
            elif node.module == package:  # `from memory import X`: X's module, or the package itself
                found |= {f"{package}.{a.name}" for a in node.names if f"{package}.{a.name}" in modules}
                found.add(package)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules or a.name == package}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"memory.{p.stem}" for p in MEMORY.glob("*.py") if p.stem != "__init__"}
    graph = {m: _imports(MEMORY / f"{m.split('.')[1]}.py", "memory", modules) for m in modules}
    # The package imports its public modules; a module importing `memory` itself depends on them all.
    graph["memory"] = _imports(MEMORY / "__init__.py", "memory", modules)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_memory_has_no_import_cycle() -> None:
    graph = _graph()
    assert graph["memory.block_manager"] >= {"memory.types", "memory.swap", "memory.invariants"}
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph) or [])}"


def test_cycle_finder_sees_a_planted_cycle() -> None:
    graph = _graph()
    graph["memory.types"] = graph["memory.types"] | {"memory.block_manager"}
    cycle = _find_cycle(graph)
    assert cycle is not None and "memory.types" in cycle and "memory.block_manager" in cycle


def test_helpers_do_not_import_the_block_manager() -> None:
    graph = _graph()
    for helper in ("memory.swap", "memory.invariants", "memory.prefix_invariants", "memory.evictor",
                   "memory.types", "memory.block_allocator"):
        assert "memory.block_manager" not in graph[helper], helper
        assert "memory" not in graph[helper], helper


def test_only_the_pools_touch_their_free_blocks_and_refcounts() -> None:
    """Product code reads a pool through its public surface (`num_free_blocks`, `refcounts`, ...)."""
    owners = {MEMORY / "block_allocator.py", MEMORY / "evictor.py"}
    offenders = []
    for folder in ("memory", "sim", "analysis", "kernels", "traces"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in owners:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("_free", "_refcounts", "_next", "_prev"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert not offenders, offenders
