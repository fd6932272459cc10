"""Full consistency check of a BlockManager: O(pool + block tables), for tests and debugging only."""
from __future__ import annotations

from typing import Any

from memory.block_allocator import BlockPool
from memory.types import SeqBlocks, SeqId


class InvariantError(AssertionError):
    """A BlockManager's internal state is inconsistent; the message names the first violation."""


def _fail(message: str) -> None:
    raise InvariantError(message)


def check_allocator(pool: BlockPool, name: str) -> None:
    """Free list and refcounts agree: free <=> refcount 0, no duplicates, shared counter exact."""
    free, rc, n = pool.free_block_ids(), pool.refcounts, pool.num_blocks
    if len(set(free)) != len(free):
        _fail(f"{name}: free list holds a block twice")
    # Bulk tests in C loops first (engine tests check pools of ~28k blocks every few steps); the
    # per-block walk only names the first violation.
    if free and not (0 <= min(free) and max(free) < n and not any(map(rc.__getitem__, free))):
        for block in free:
            if not 0 <= block < n:
                _fail(f"{name}: free list holds out-of-range block {block}")
            if rc[block] != 0:
                _fail(f"{name}: block {block} is on the free list with refcount {rc[block]}")
    if rc and min(rc) < 0:
        _fail(f"{name}: negative refcount")
    num_live = n - rc.count(0)
    if len(free) != pool.num_free_blocks:
        _fail(f"{name}: {len(free)} blocks on the free list, but num_free_blocks says {pool.num_free_blocks}")
    if len(free) + num_live != n:
        _fail(f"{name}: {len(free)} free + {num_live} live != {n} blocks (a block leaked)")
    shared = num_live - rc.count(1)
    if shared != pool.num_shared_blocks:
        _fail(f"{name}: shared counter {pool.num_shared_blocks} != {shared} blocks with refcount > 1")


def check_tables(
    seqs: dict[SeqId, SeqBlocks], pool: BlockPool, block_size: int, name: str
) -> dict[int, int]:
    """Each table has exactly the blocks its tokens need; refcount == references from tables; a shared
    block holds the same number of tokens in every table. Returns block -> tokens held."""
    refs = [0] * pool.num_blocks
    fills: dict[int, int] = {}
    for seq_id, seq in seqs.items():
        blocks, n = seq.blocks, seq.num_tokens
        if n < 0 or len(blocks) != -(-n // block_size):
            _fail(f"{name}: sequence {seq_id!r} has {len(blocks)} blocks for {n} tokens")
        if len(set(blocks)) != len(blocks):
            _fail(f"{name}: sequence {seq_id!r} names a block twice")
        for i, block in enumerate(blocks):
            if type(block) is not int or not 0 <= block < pool.num_blocks:
                _fail(f"{name}: sequence {seq_id!r} names out-of-range block {block!r}")
            refs[block] += 1
            fill = block_size if i < len(blocks) - 1 else n - i * block_size
            if fills.setdefault(block, fill) != fill:
                _fail(
                    f"{name}: shared block {block} holds {fills[block]} tokens in one table, "
                    f"{fill} in another"
                )
    rc = pool.refcounts
    if refs != list(rc):  # one C comparison; the walk only names the first difference
        for block in range(pool.num_blocks):
            if rc[block] != refs[block]:
                _fail(f"{name}: block {block} has refcount {rc[block]} but {refs[block]} block-table references")
    return fills


def check_invariants(manager: Any) -> None:
    """The checks of a `BlockManager` (typed `Any`: this module must not import the manager, which
    imports it)."""
    check_allocator(manager._gpu, "gpu")
    check_allocator(manager._cpu, "cpu")
    both = manager._gpu_seqs.keys() & manager._cpu_seqs.keys()
    if both:
        _fail(f"sequence {next(iter(both))!r} is both on the GPU and swapped")
    fills = check_tables(manager._gpu_seqs, manager._gpu, manager.block_size, "gpu")
    check_tables(manager._cpu_seqs, manager._cpu, manager.block_size, "cpu")
    if manager._gpu_refcounts is not manager._gpu.refcounts:
        _fail("hot-path refcount alias no longer points at the GPU allocator's list")
    filled = sum(fills.values())
    if filled != manager._gpu_filled_slots:
        _fail(f"filled-slot counter {manager._gpu_filled_slots} != {filled} tokens held in GPU blocks")
    for counter in ("num_cow_copies", "num_swapped_out_blocks", "num_swapped_in_blocks"):
        if getattr(manager, counter) < 0:
            _fail(f"{counter} is negative")
