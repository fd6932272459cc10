"""Prefix-caching throughput: `python -m memory.bench_prefix [--quick] [--repeats N] [--cpu K]`.

Operations per second of `PrefixCachingBlockManager` for allocations that miss (and register their
blocks), hit live blocks, revive evictable ones or evict the least recently used ones; frees to the
free queue (plain blocks to its head, cached ones to its tail); and, for comparison in the same run, the base `BlockManager` doing the same work without keys.
Same method as `memory.bench`: one pinned core, GC off while timing, best of `--repeats` fresh setups.
Keys are per-block tuples built before timing (what the simulator would pass).
"""
from __future__ import annotations

import sys
from typing import Callable, Hashable

from memory.bench import BLOCK_SIZE, Body, decode_steps, run_cli
from memory.block_manager import BlockManager
from memory.prefix_cache import PrefixCachingBlockManager

Keys = list[Hashable]


def _keys(prompt: int, blocks: int, shared: int = 0) -> Keys:
    """Keys of prompt `prompt`: its first `shared` blocks are common to all prompts, the rest its own."""
    return [("shared", j) if j < shared else (prompt, j) for j in range(blocks)]


def _make(cached: bool, num_blocks: int) -> BlockManager:
    return (PrefixCachingBlockManager if cached else BlockManager)(num_blocks, BLOCK_SIZE)


def bench_allocate(n: int, blocks: int, kind: str) -> Callable[[], Body]:
    """kind: base (BlockManager, no keys), nokeys, miss (registers), hit (live), revive, half (half the
    blocks live hits, half new), evict (no plain-free block: each allocation evicts LRU blocks)."""
    def make() -> Body:
        tokens = blocks * BLOCK_SIZE
        pool = n * blocks + (blocks if kind in ("hit", "half") else 0)
        bm = _make(kind != "base", pool)
        shared = {"hit": blocks, "half": blocks // 2}.get(kind, 0)
        keys = [_keys(i, blocks, shared) if kind not in ("base", "nokeys") else None for i in range(n)]
        if kind in ("hit", "half"):
            bm.allocate("holder", tokens, _keys(-1, blocks, blocks))  # keeps the shared blocks live
        if kind in ("revive", "evict"):
            for i in range(n):  # fill the whole pool with cached, unreferenced blocks
                old_keys = _keys(i, blocks) if kind == "revive" else _keys(-i - 1, blocks)
                bm.allocate(("old", i), tokens, old_keys)
            for i in range(n):
                bm.free(("old", i))
        allocate = bm.allocate

        def body() -> int:
            if kind == "base":
                for i in range(n):
                    allocate(i, tokens)
            else:
                for i in range(n):
                    allocate(i, tokens, keys[i])
            return n
        return body
    return make


def bench_free(n: int, blocks: int, kind: str) -> Callable[[], Body]:
    """kind: base (BlockManager), nokeys (to the free queue's head), cached (to its tail, evictable)."""
    def make() -> Body:
        bm = _make(kind != "base", n * blocks)
        for i in range(n):
            if kind == "cached":
                bm.allocate(i, blocks * BLOCK_SIZE, _keys(i, blocks))
            else:
                bm.allocate(i, blocks * BLOCK_SIZE)
        free = bm.free

        def body() -> int:
            for i in range(n):
                free(i)
            return n
        return body
    return make


def bench_decode(cached: bool, num_seqs: int, steps: int) -> Callable[[], Body]:
    """Single-token appends over a batch whose prompts share a cached prefix (base: no keys)."""
    def make() -> Body:
        bm = _make(cached, num_seqs * 200)
        for i in range(num_seqs):
            if cached:
                bm.allocate(i, 100, _keys(i, 100 // BLOCK_SIZE, shared=4))
            else:
                bm.allocate(i, 100)
        return decode_steps(bm, num_seqs, steps)
    return make


ALLOCATE_CASES = [
    ("base", "BlockManager, no keys"),
    ("nokeys", "no keys"),
    ("miss", "all blocks miss, registered"),
    ("hit", "all blocks hit live blocks"),
    ("half", "half hit live, half registered"),
    ("revive", "all blocks revived from the free queue"),
    ("evict", "no plain-free block: evicts LRU, registers"),
]
FREE_CASES = [
    ("base", "BlockManager"), ("nokeys", "no keys: to the queue's head"), ("cached", "cached: to the queue's tail"),
]


def _cases(quick: bool) -> list[tuple[str, str, float, Callable[[], Body]]]:
    """(operation, case, block-table entries touched per op, setup) rows."""
    k = 10 if quick else 1
    rows: list[tuple[str, str, float, Callable[[], Body]]] = [
        ("append 1 token (decode mix)", "BlockManager, 256 seqs x 2000 steps", 0,
         bench_decode(False, 256, 2000 // k)),
        ("append 1 token (decode mix)", "cached 4-block prefix, 256 seqs x 2000 steps", 0,
         bench_decode(True, 256, 2000 // k)),
    ]
    for blocks in (1, 16, 256):
        n = max(50, 50_000 // k // blocks)
        rows += [(f"allocate {blocks} blocks", case, blocks, bench_allocate(n, blocks, kind))
                 for kind, case in ALLOCATE_CASES if kind != "half" or blocks > 1]
        rows += [(f"free {blocks} blocks", case, blocks, bench_free(n, blocks, kind))
                 for kind, case in FREE_CASES]
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_cli("memory.bench_prefix", __doc__, _cases, argv)


if __name__ == "__main__":
    sys.exit(main())
