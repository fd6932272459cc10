"""Full consistency check of a PrefixCachingBlockManager: O(pool + block tables), tests and debugging only.

On top of the base checks (tables, refcounts, filled slots, the CPU pool): the GPU pool's plain free
list, evictor and live blocks partition it; each hash names exactly one block and back; evictable blocks
are cached with refcount 0; a cached block is full wherever it is held and sits right after its chain
parent; no cached block outlives its parent (a live block's parent is live, an evictable block's parent is
live or evicted after it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from memory.evictor import ROOT, CachingBlockAllocator
from memory.invariants import _fail, check_allocator, check_tables

if TYPE_CHECKING:
    from memory.block_manager import SeqId, _Seq
    from memory.prefix_cache import PrefixCachingBlockManager


def check_caching_allocator(pool: CachingBlockAllocator, name: str = "gpu") -> None:
    free, evictor, rc = pool._free, pool._evictor, pool._refcounts
    if len(set(free)) != len(free):
        _fail(f"{name}: free list holds a block twice")
    for block in free:
        if not 0 <= block < pool.num_blocks:
            _fail(f"{name}: free list holds out-of-range block {block}")
        if rc[block] != 0:
            _fail(f"{name}: block {block} is on the free list with refcount {rc[block]}")
        if pool._hash_of[block] is not None or block in evictor:
            _fail(f"{name}: block {block} is both plain free and cached")
    for block in evictor:
        if not 0 <= block < pool.num_blocks:
            _fail(f"{name}: evictor holds out-of-range block {block}")
        if rc[block] != 0:
            _fail(f"{name}: evictable block {block} has refcount {rc[block]}")
        if pool._hash_of[block] is None:
            _fail(f"{name}: evictable block {block} has no hash")
    if any(c < 0 for c in rc):
        _fail(f"{name}: negative refcount")
    num_live = sum(1 for c in rc if c > 0)
    if len(free) + len(evictor) + num_live != pool.num_blocks:
        _fail(
            f"{name}: {len(free)} free + {len(evictor)} evictable + {num_live} live != "
            f"{pool.num_blocks} blocks (a block leaked)"
        )
    if sum(1 for c in rc if c > 1) != pool._num_shared:
        _fail(f"{name}: shared counter {pool._num_shared} is wrong")
    _check_registry(pool, name)


def _check_registry(pool: CachingBlockAllocator, name: str) -> None:
    hashed = [b for b, h in enumerate(pool._hash_of) if h is not None]
    if len(hashed) != len(pool._block_by_hash):
        _fail(f"{name}: {len(pool._block_by_hash)} hashes for {len(hashed)} blocks with a hash")
    for h, block in pool._block_by_hash.items():
        if pool._hash_of[block] != h:
            _fail(f"{name}: hash {h!r} maps to block {block}, whose hash is {pool._hash_of[block]!r}")
    block_of_node: dict[int, int] = {}
    for block, node in enumerate(pool._node_of):
        if (node == ROOT) != (pool._hash_of[block] is None):
            _fail(f"{name}: block {block} has node {node} and hash {pool._hash_of[block]!r}")
        if node != ROOT:
            if node in block_of_node or not ROOT < node < pool._next_node:
                _fail(f"{name}: node id {node} of block {block} is reused or out of range")
            block_of_node[node] = block
    lru_rank = {block: i for i, block in enumerate(pool._evictor)}
    rc = pool._refcounts
    for block in hashed:
        parent_node = pool._hash_of[block][0]  # type: ignore[index]
        if parent_node == ROOT:
            continue
        parent = block_of_node.get(parent_node)
        if parent is None:
            _fail(f"{name}: cached block {block} outlived its chain parent (node {parent_node})")
        elif rc[block] > 0 and rc[parent] == 0:
            _fail(f"{name}: live cached block {block} has an evictable parent {parent}")
        elif rc[block] == 0 and rc[parent] == 0 and lru_rank[parent] < lru_rank[block]:
            _fail(f"{name}: evictable block {block} would be evicted after its parent {parent}")


def _check_chains(seqs: dict[SeqId, _Seq], pool: CachingBlockAllocator, block_size: int) -> None:
    """In every GPU table the cached blocks are full and each follows its chain parent."""
    for seq_id, seq in seqs.items():
        for i, block in enumerate(seq.blocks):
            h = pool._hash_of[block]
            if h is None:
                continue
            if (i + 1) * block_size > seq.num_tokens:
                _fail(f"gpu: cached block {block} is the partial last block of {seq_id!r}")
            parent = ROOT if i == 0 else pool._node_of[seq.blocks[i - 1]]
            if h[0] != parent:
                _fail(f"gpu: cached block {block} at position {i} of {seq_id!r} does not follow its parent")


def check_prefix_invariants(manager: PrefixCachingBlockManager) -> None:
    gpu = manager._gpu
    check_caching_allocator(gpu)
    check_allocator(manager._cpu, "cpu")
    both = manager._gpu_seqs.keys() & manager._cpu_seqs.keys()
    if both:
        _fail(f"sequence {next(iter(both))!r} is both on the GPU and swapped")
    fills = check_tables(manager._gpu_seqs, gpu, manager.block_size, "gpu")
    check_tables(manager._cpu_seqs, manager._cpu, manager.block_size, "cpu")
    _check_chains(manager._gpu_seqs, gpu, manager.block_size)
    if manager._gpu_refcounts is not gpu._refcounts:
        _fail("hot-path refcount alias no longer points at the GPU allocator's list")
    filled = sum(fills.values())
    if filled != manager._gpu_filled_slots:
        _fail(f"filled-slot counter {manager._gpu_filled_slots} != {filled} tokens held in GPU blocks")
    for seq_id, cached in manager._cached_tokens.items():
        if not manager.has_seq(seq_id) or not 0 < cached <= manager.num_tokens(seq_id):
            _fail(f"cached-token record {cached} of {seq_id!r} does not fit the sequence")
    counters = ("num_cow_copies", "num_swapped_out_blocks", "num_swapped_in_blocks", "num_prefix_hits",
                "num_prefix_hit_tokens")
    for counter in counters:
        if getattr(manager, counter) < 0:
            _fail(f"{counter} is negative")
    if not (manager.num_prefix_hits <= manager.num_prefix_queries
            and manager.num_prefix_hit_tokens <= manager.num_prefix_query_tokens):
        _fail("more prefix hits than queries")
