"""Full consistency check of a PrefixCachingBlockManager: O(pool + block tables), tests and debugging only.

On top of the base checks (tables, refcounts, filled slots, the CPU pool): the GPU pool's free queue
holds every free block once, plain blocks before cached ones, its segments are indexed by their last
blocks, and its counts are exact; each hash
names exactly one block and back, and the registered count is exact; a cached block is full wherever it
is held and sits right after its chain parent; no cached block outlives its parent (a live block's parent
is live, an evictable block's parent is live or evicted after it). An unreachable cached block (hash
`(ROOT, None)`, no node) is checked as cached in the queue only.
"""
from __future__ import annotations

from itertools import compress
from typing import Any

from memory.evictor import ROOT, UNREACHABLE, CachingBlockAllocator
from memory.invariants import _fail, check_allocator, check_tables
from memory.types import SeqBlocks, SeqId

# The walks over the whole pool run as C loops (`compress`, `map`, `count`) over the pool's own hash and
# node arrays, read in place: `ROOT` and a missing hash (None) are falsy, every real hash and node truthy.
# Per-block Python work is left to the cached blocks, and the exact first violation is looked up only
# once a bulk comparison has failed. Engine tests run this every few steps over pools of ~28k blocks.
assert ROOT == 0


def check_caching_allocator(pool: CachingBlockAllocator, name: str = "gpu") -> None:
    """The base allocator checks, the queue's order and cached count, and the registry."""
    _check_segments(pool, name)  # first: the base checks read the queue through them
    check_allocator(pool, name)
    queue = pool.free_block_ids()
    hashes = list(map(pool._hash_of.__getitem__, queue))
    num_plain = hashes.count(None)
    if None in hashes[num_plain:]:
        first = next(b for b, h in zip(queue, hashes) if h is not None)
        _fail(f"{name}: free queue has a plain block after the cached block {first} (plain and cached mixed)")
    reachable = len(hashes) - num_plain - hashes.count(UNREACHABLE)
    if reachable != pool.num_cached_blocks:
        _fail(f"{name}: cached counter {pool.num_cached_blocks} != {reachable} cached blocks in the free queue")
    _check_registry(pool, name)


def _check_segments(pool: CachingBlockAllocator, name: str) -> None:
    """The queue's cached part: no empty segment, its count exact, each segment found by its last block
    and nothing else in that index."""
    queue = pool._queue
    segments = queue.segments
    if any(not blocks for blocks in segments.values()):
        _fail(f"{name}: the free queue holds an empty segment")
    if sum(map(len, segments.values())) != queue.num_cached:
        _fail(f"{name}: cached-part counter {queue.num_cached} != {sum(map(len, segments.values()))} blocks in segments")
    tails = {blocks[-1]: segment for segment, blocks in segments.items()}
    if tails != queue.tail_of:
        block = min(set(tails.items()).symmetric_difference(queue.tail_of.items()))[0]
        _fail(f"{name}: the free queue's segment index is wrong at block {block}")


def _check_registry(pool: CachingBlockAllocator, name: str) -> None:
    raw, nodes, n = pool._hash_of, pool._node_of, pool.num_blocks
    hashed = list(compress(range(n), raw))  # every block with a hash, unreachable ones included
    cached = [b for b in hashed if raw[b] is not UNREACHABLE]  # the blocks a lookup could find
    hash_of = dict(zip(cached, map(pool.hash_of, cached)))  # as `hash_of` names them (private: listed key)
    registry = dict(pool._block_by_hash)
    private = [b for b in cached if len(raw[b]) == 3]  # type: ignore[arg-type]
    registry.update(zip(map(hash_of.__getitem__, private), private))
    if len(cached) != len(registry):
        _fail(f"{name}: {len(registry)} hashes for {len(cached)} blocks with a hash")
    for h, block in registry.items():
        if hash_of.get(block) != h:
            _fail(f"{name}: hash {h!r} maps to block {block}, whose hash is {hash_of.get(block)!r}")
    if len(hashed) != pool.num_registered_blocks:
        _fail(f"{name}: registered counter {pool.num_registered_blocks} != {len(hashed)} blocks with a hash")
    noded = list(compress(range(n), nodes))  # a block has a node exactly when a lookup could find it
    if noded != cached:
        block = min(set(noded).symmetric_difference(cached))
        _fail(f"{name}: block {block} has node {nodes[block]} and hash {pool.hash_of(block)!r}")
    node_ids = list(map(nodes.__getitem__, noded))
    block_of_node = dict(zip(node_ids, noded))
    if len(block_of_node) != len(noded) or (node_ids and not ROOT < min(node_ids) <= max(node_ids) < pool.next_node):
        seen: set[int] = set()
        for block, node in zip(noded, node_ids):
            if node in seen or not ROOT < node < pool.next_node:
                _fail(f"{name}: node id {node} of block {block} is reused or out of range")
            seen.add(node)
    lru_rank = {block: i for i, block in enumerate(pool.evictable_blocks())}
    rc = pool.refcounts
    for block in cached:
        parent_node = raw[block][0]  # type: ignore[index]
        if parent_node == ROOT:
            continue
        parent = block_of_node.get(parent_node)
        if parent is None:
            _fail(f"{name}: cached block {block} outlived its chain parent (node {parent_node})")
        elif rc[block] > 0 and rc[parent] == 0:
            _fail(f"{name}: live cached block {block} has an evictable parent {parent}")
        elif rc[block] == 0 and rc[parent] == 0 and lru_rank[parent] < lru_rank[block]:
            _fail(f"{name}: evictable block {block} would be evicted after its parent {parent}")


def _check_chains(seqs: dict[SeqId, SeqBlocks], pool: CachingBlockAllocator, block_size: int) -> None:
    """In every GPU table the cached blocks are full and each follows its chain parent."""
    raw, nodes = pool._hash_of, pool._node_of
    for seq_id, seq in seqs.items():
        blocks = seq.blocks
        for i, h in enumerate(map(raw.__getitem__, blocks)):
            if h is None or h is UNREACHABLE:
                continue
            if (i + 1) * block_size > seq.num_tokens:
                _fail(f"gpu: cached block {blocks[i]} is the partial last block of {seq_id!r}")
            if h[0] != (ROOT if i == 0 else nodes[blocks[i - 1]]):
                _fail(f"gpu: cached block {blocks[i]} at position {i} of {seq_id!r} does not follow its parent")


def check_prefix_invariants(manager: Any) -> None:
    """The checks of a `PrefixCachingBlockManager` (typed `Any`: this module must not import the
    manager, which imports it)."""
    gpu = manager._gpu
    check_caching_allocator(gpu)
    check_allocator(manager._cpu, "cpu")
    both = manager._gpu_seqs.keys() & manager._cpu_seqs.keys()
    if both:
        _fail(f"sequence {next(iter(both))!r} is both on the GPU and swapped")
    fills = check_tables(manager._gpu_seqs, gpu, manager.block_size, "gpu")
    check_tables(manager._cpu_seqs, manager._cpu, manager.block_size, "cpu")
    _check_chains(manager._gpu_seqs, gpu, manager.block_size)
    if manager._gpu_refcounts is not gpu.refcounts:
        _fail("hot-path refcount alias no longer points at the GPU allocator's list")
    filled = sum(fills.values())
    if filled != manager._gpu_filled_slots:
        _fail(f"filled-slot counter {manager._gpu_filled_slots} != {filled} tokens held in GPU blocks")
    for where in (manager._gpu_seqs, manager._cpu_seqs):
        for seq_id, seq in where.items():
            cached = seq.num_cached_tokens
            if not 0 <= cached <= seq.num_tokens or cached % manager.block_size:
                _fail(f"cached-token record {cached} of {seq_id!r} does not fit the sequence")
    counters = ("num_cow_copies", "num_swapped_out_blocks", "num_swapped_in_blocks", "num_prefix_hits",
                "num_prefix_hit_tokens")
    for counter in counters:
        if getattr(manager, counter) < 0:
            _fail(f"{counter} is negative")
    if not (manager.num_prefix_hits <= manager.num_prefix_queries
            and manager.num_prefix_hit_tokens <= manager.num_prefix_query_tokens):
        _fail("more prefix hits than queries")
