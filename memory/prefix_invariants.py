"""Full consistency check of a PrefixCachingBlockManager: O(pool + block tables), tests and debugging only.

On top of the base checks (tables, refcounts, filled slots, the CPU pool): the GPU pool's free queue
holds every free block once, plain blocks before cached ones, its segments are indexed by their last
blocks, and its counts are exact; every cached block is marked with the piece that holds it and each
piece's registered blocks are exactly its first `n` (`memory.pieces`); each keyed piece is registered
under its first block's hash and no hash is taken twice; node ids are unique; a cached block is full
wherever it is held and sits right after its chain parent; no cached block outlives its parent (a live
block's parent is live, an evictable block's parent is live or evicted after it). Unreachable blocks
(no node) are checked as cached in the queue only.
"""
from __future__ import annotations

from bisect import bisect_right
from operator import attrgetter
from typing import Any

from memory.evictor import ROOT, CachingBlockAllocator
from memory.invariants import _fail, check_allocator, check_tables
from memory.pieces import Piece
from memory.types import SeqBlocks, SeqId

# The walks over the whole pool run as C loops (`map`, `count`, `set`) over the pool's own arrays, read
# in place; per-block Python work is left to the cached blocks, and the exact first violation is looked
# up only once a bulk comparison has failed. Engine tests run this every few steps over pools of ~28k blocks.


def check_caching_allocator(pool: CachingBlockAllocator, name: str = "gpu") -> None:
    """The base allocator checks, the queue's order and cached count, the pieces and the registry."""
    _check_segments(pool, name)  # first: the base checks read the queue through them
    check_allocator(pool, name)
    queue = pool.free_block_ids()
    pieces = list(map(pool._piece_of.__getitem__, queue))
    num_plain = pieces.count(None)
    if None in pieces[num_plain:]:
        first = next(b for b, p in zip(queue, pieces) if p is not None)
        _fail(f"{name}: free queue has a plain block after the cached block {first} (plain and cached mixed)")
    # reachable as the pool reads it (`Piece.reachable`, as `evictable_blocks`): an unreachable piece's
    # `first` is read by nothing
    reachable = sum(piece.reachable for piece in pieces[num_plain:])
    if reachable != pool.num_cached_blocks:
        _fail(f"{name}: cached counter {pool.num_cached_blocks} != {reachable} cached blocks in the free queue")
    _check_pieces(pool, name)
    _check_registry(pool, name)


def _check_segments(pool: CachingBlockAllocator, name: str) -> None:
    """The queue's cached part: no empty segment, its count exact, each segment found by its last block
    and nothing else in that index."""
    queue = pool._queue
    segments = queue.segments
    if any(not blocks for blocks in segments.values()):
        _fail(f"{name}: the free queue holds an empty segment")
    held = sum(map(len, segments.values()))
    if held != queue.num_cached:
        _fail(f"{name}: cached-part counter {queue.num_cached} != {held} blocks in segments")
    tails = {blocks[0]: segment for segment, blocks in segments.items()}  # a segment's list is last first
    if tails != queue.tail_of:
        block = min(set(tails.items()).symmetric_difference(queue.tail_of.items()))[0]
        _fail(f"{name}: the free queue's segment index is wrong at block {block}")


def _check_pieces(pool: CachingBlockAllocator, name: str) -> None:
    """Each block marked with a piece is one of that piece's first `n` blocks, and each live piece's
    first `n` blocks are marked with it; the counters agree."""
    piece_of, pieces = pool._piece_of, pool._pieces
    marked = set(piece_of)
    marked.discard(None)
    if not marked <= pieces:
        _fail(f"{name}: block {next(b for b, p in enumerate(piece_of) if p is not None and p not in pieces)} "
              f"is marked with a piece that holds no block")
    total = unreachable = 0
    for piece in pieces:
        if not 0 < piece.n <= len(piece.blocks):
            _fail(f"{name}: a piece holds {piece.n} of its {len(piece.blocks)} blocks")
        if list(map(piece_of.__getitem__, piece.blocks)).count(piece) != piece.n or any(
                piece_of[b] is not piece for b in piece.blocks[:piece.n]):
            _fail(f"{name}: the piece of blocks {piece.blocks[:piece.n]} holds other blocks than its first {piece.n}")
        total += piece.n
        unreachable += 0 if piece.reachable else piece.n
    if total != len(piece_of) - piece_of.count(None):
        _fail(f"{name}: {len(piece_of) - piece_of.count(None)} blocks are marked with a piece, pieces hold {total}")
    if total != pool.num_registered_blocks:
        _fail(f"{name}: registered counter {pool.num_registered_blocks} != {total} blocks held by pieces")
    if unreachable != pool._num_unreachable:
        _fail(f"{name}: unreachable counter {pool._num_unreachable} != {unreachable} unreachable blocks")


def _node_index(pieces: list[Piece], next_node: int, name: str) -> tuple[list[int], list[Piece]]:
    """The reachable pieces by first node, their node ranges checked disjoint and below `next_node`."""
    ordered = sorted((p for p in pieces if p.reachable), key=attrgetter("first"))
    end = ROOT + 1
    for piece in ordered:
        if piece.first < end or piece.first + len(piece.blocks) > next_node:
            _fail(f"{name}: node id {piece.first} of block {piece.blocks[0]} is reused or out of range")
        end = piece.first + len(piece.blocks)
    return [p.first for p in ordered], ordered


def _check_registry(pool: CachingBlockAllocator, name: str) -> None:
    heads, pieces = pool._heads, pool._pieces
    firsts, ordered = _node_index(list(pieces), pool.next_node, name)

    def holder(node: int) -> tuple[Piece, int] | None:
        """The live piece and offset of the block at `node`, if any."""
        k = bisect_right(firsts, node) - 1
        if k < 0 or node - firsts[k] >= ordered[k].n:
            return None
        return ordered[k], node - firsts[k]

    keyed = sum(1 for p in pieces if p.keys is not None)
    if keyed != len(heads):
        _fail(f"{name}: {len(heads)} hashes for {keyed} keyed pieces")
    for h, piece in heads.items():
        if piece not in pieces or piece.keys is None or h != (piece.parent, piece.keys[0]):
            _fail(f"{name}: hash {h!r} maps to block {piece.blocks[0]}, whose hash is {piece.hash_at(0)!r}")
        if piece.parent != ROOT:
            at = holder(piece.parent)
            if at is None:
                _fail(f"{name}: cached block {piece.blocks[0]} outlived its chain parent (node {piece.parent})")
            parent, i = at  # type: ignore[misc]
            if parent.keys is not None and i + 1 < parent.n and parent.keys[i + 1] == h[1]:
                _fail(f"{name}: hash {h!r} is taken twice (blocks {piece.blocks[0]} and {parent.blocks[i + 1]})")
    lru_rank = {block: i for i, block in enumerate(pool.evictable_blocks())}
    rc = pool.refcounts
    for piece in ordered:
        at = holder(piece.parent) if piece.parent != ROOT else None
        if piece.parent != ROOT and at is None:
            _fail(f"{name}: cached block {piece.blocks[0]} outlived its chain parent (node {piece.parent})")
        parent = at[0].blocks[at[1]] if at is not None else None
        for block in piece.blocks[:piece.n]:
            if parent is not None:
                if rc[block] > 0 and rc[parent] == 0:
                    _fail(f"{name}: live cached block {block} has an evictable parent {parent}")
                elif rc[block] == 0 and rc[parent] == 0 and lru_rank[parent] < lru_rank[block]:
                    _fail(f"{name}: evictable block {block} would be evicted after its parent {parent}")
            parent = block


def _check_chains(seqs: dict[SeqId, SeqBlocks], pool: CachingBlockAllocator, block_size: int) -> None:
    """In every GPU table refcounts never increase (`memory.block_allocator.num_live_leading`), the
    cached blocks are full and each follows its chain parent."""
    piece_of, rc = pool._piece_of, pool.refcounts
    for seq_id, seq in seqs.items():
        blocks = seq.blocks
        for i, piece in enumerate(map(piece_of.__getitem__, blocks)):
            if piece is None or not piece.reachable:
                continue
            if (i + 1) * block_size > seq.num_tokens:
                _fail(f"gpu: cached block {blocks[i]} is the partial last block of {seq_id!r}")
            if piece.hash_at(piece.offset(blocks[i]))[0] != (ROOT if i == 0 else pool.node_of(blocks[i - 1])):
                _fail(f"gpu: cached block {blocks[i]} at position {i} of {seq_id!r} does not follow its parent")
        rcs = list(map(rc.__getitem__, blocks))
        if rcs != sorted(rcs, reverse=True):
            _fail(f"gpu: refcounts increase along the table of {seq_id!r}: {rcs}")


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
