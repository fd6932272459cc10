"""memory/'s helpers do not import the block manager, and nothing outside the allocator reads its free list
or refcounts directly. (No import cycle at all: tests/test_import_graph.py.)"""
from __future__ import annotations

import ast
from pathlib import Path

from test_import_graph import import_graph

ROOT = Path(__file__).resolve().parent.parent
MEMORY = ROOT / "memory"


def test_helpers_do_not_import_the_block_manager() -> None:
    graph = import_graph(ROOT, ("memory",))
    assert graph["memory.block_manager"] >= {"memory.types", "memory.swap", "memory.invariants", "memory.block_tables"}
    for helper in ("memory.block_tables", "memory.swap", "memory.invariants", "memory.prefix_invariants", "memory.evictor",
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
