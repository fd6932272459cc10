"""The invariant checkers name each violation: one corruption per message, on small prefix-caching
managers and on a plain `BlockManager` (the random corruptions against a per-block walk are in
`test_memory_invariant_checks.py`).
"""
from __future__ import annotations

import pytest

from memory import BlockManager, InvariantError, PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain
from memory.evictor import ROOT
from memory.types import SeqBlocks

BS = 2


# ---- each message, one corruption ----------------------------------------------------------------------
def _prefix_manager() -> PrefixCachingBlockManager:
    """x-y-z freed (y, z evictable), x-w live in "keep", and a private chain "p" with its output cached."""
    bm = PrefixCachingBlockManager(num_gpu_blocks=12, block_size=BS, num_cpu_blocks=4)
    bm.allocate("a", 6, ["x", "y", "z"])
    bm.allocate("keep", 4, ["x", "w"])
    bm.free("a")
    keys = ChainKeys(("x",), 3, PrivateChain("p"))
    bm.allocate("p", 7, keys)
    bm.cache_full_blocks("p", keys, reachable=True)
    bm.check_invariants()
    return bm


def _block(bm: PrefixCachingBlockManager, *names: str) -> int:
    return bm.find_cached_prefix(list(names))[-1]


def _revive_parent_only(bm: PrefixCachingBlockManager) -> None:
    """x goes back to the free queue although its live child w still needs it."""
    x = _block(bm, "x")
    gpu = bm._gpu
    for seq in bm._gpu_seqs.values():
        if x in seq.blocks:
            seq.blocks[seq.blocks.index(x)] = -1  # no table holds x (caught later, if at all)
    gpu._refcounts[x] = 0
    gpu._num_shared -= 1
    gpu._queue.push([x])


def _swap_registry(bm: PrefixCachingBlockManager) -> None:
    gpu = bm._gpu
    hx, hw = (ROOT, "x"), (gpu.node_of(_block(bm, "x")), "w")
    gpu._heads[hx], gpu._heads[hw] = gpu._heads[hw], gpu._heads[hx]


def _share_second_block(bm: PrefixCachingBlockManager) -> None:
    """A table [u, v] whose second block alone is also held by another table: [1, 2] references."""
    bm.allocate("q", 2 * BS)
    v = bm.block_table("q")[1]
    bm._gpu_seqs["q2"] = SeqBlocks([v], BS)
    bm._gpu._refcounts[v] = 2
    bm._gpu._num_shared += 1


def _cpu_copy(bm: PrefixCachingBlockManager) -> None:
    bm._cpu._refcounts[0] = 1  # a CPU block marked held by nobody's table


PREFIX_CORRUPTIONS = [
    (lambda bm: bm._gpu._queue.plain.append(bm._gpu._queue.plain[-1]), "free list holds a block twice"),
    (lambda bm: bm._gpu._queue.plain.append(99), "out-of-range block 99"),
    (lambda bm: bm._gpu._refcounts.__setitem__(bm.block_table("keep")[1], -1), "negative refcount"),
    (lambda bm: bm._gpu._queue.plain.pop(), "leaked"),
    (lambda bm: setattr(bm._gpu, "_num_shared", 3), "shared counter"),
    (lambda bm: bm._gpu._queue.segments.__setitem__(-1, []), "empty segment"),
    (lambda bm: setattr(bm._gpu._queue, "num_cached", 0), "cached-part counter"),
    (lambda bm: bm._gpu._queue.tail_of.clear(), "segment index is wrong"),
    (lambda bm: bm._gpu._queue.tail_of.__setitem__(bm._gpu._queue.plain[-1], 0), "segment index is wrong"),
    (_swap_registry, "maps to block"),
    (lambda bm: setattr(bm._gpu, "_num_registered", 0), "registered counter"),
    (lambda bm: setattr(bm._gpu, "_num_unreachable", 1), "unreachable counter"),
    (lambda bm: bm._gpu._piece_of.__setitem__(bm.block_table("p")[-1], bm._gpu._piece_of[_block(bm, "x")]),
     "are marked with a piece"),
    (lambda bm: setattr(bm._gpu._piece_of[_block(bm, "x", "w")], "n", 0), "holds 0 of its 1 blocks"),
    (lambda bm: setattr(bm._gpu._piece_of[_block(bm, "x", "w")], "first", bm._gpu.next_node), "reused or out of range"),
    (lambda bm: setattr(bm._gpu._piece_of[_block(bm, "x", "w")], "first", bm._gpu.node_of(_block(bm, "x"))),
     "reused or out of range"),
    (lambda bm: bm._gpu._pieces.discard(bm._gpu._piece_of[_block(bm, "x", "w")]), "marked with a piece that holds"),
    (_revive_parent_only, "live cached block .* has an evictable parent"),
    (lambda bm: setattr(bm._gpu_seqs["keep"], "num_tokens", 3), "partial last block"),
    (lambda bm: bm._gpu_seqs["keep"].blocks.reverse(), "does not follow its parent"),
    (_share_second_block, "refcounts increase along the table of 'q'"),
    (lambda bm: bm._gpu_seqs["keep"].blocks.append(bm._gpu_seqs["keep"].blocks[0]), "blocks for"),
    (lambda bm: bm._cpu_seqs.__setitem__("keep", bm._gpu_seqs["keep"]), "both on the GPU and swapped"),
    (lambda bm: setattr(bm, "_gpu_refcounts", list(bm._gpu.refcounts)), "hot-path refcount alias"),
    (lambda bm: setattr(bm, "_gpu_filled_slots", 1), "filled-slot counter"),
    (lambda bm: setattr(bm, "num_prefix_hit_tokens", -2), "num_prefix_hit_tokens is negative"),
    (lambda bm: setattr(bm, "num_prefix_hits", 5), "more prefix hits than queries"),
    (_cpu_copy, "cpu: "),
]


@pytest.mark.parametrize(("corruption", "message"), PREFIX_CORRUPTIONS)
def test_prefix_checks_name_each_violation(corruption, message: str) -> None:  # type: ignore[no-untyped-def]
    bm = _prefix_manager()
    corruption(bm)
    with pytest.raises(InvariantError, match=message):
        bm.check_invariants()


def _share_unevenly(bm: BlockManager) -> None:
    """Block 0 also ends a table of one token: it would hold 4 tokens in one table and 1 in another."""
    from memory.types import SeqBlocks

    bm._gpu_seqs["c"] = SeqBlocks([bm.block_table("a")[0]], 1)
    bm._gpu._refcounts[bm.block_table("a")[0]] += 1


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        (lambda bm: bm._gpu._free.append(bm._gpu._free[0]), "free list holds a block twice"),
        (lambda bm: bm._gpu._free.append(-1), "out-of-range block -1"),
        (lambda bm: bm._gpu._refcounts.__setitem__(bm.block_table("a")[1], -1), "negative refcount"),
        (lambda bm: bm._gpu_seqs["a"].blocks.__setitem__(1, bm.block_table("a")[0]), "names a block twice"),
        (lambda bm: bm._gpu_seqs["a"].blocks.__setitem__(1, 8), "names out-of-range block 8"),
        (_share_unevenly, "holds 2 tokens in one table, 1 in another"),
        (lambda bm: bm._gpu._refcounts.__setitem__(bm.block_table("a")[0], 3), "has refcount 3 but 2 block-table"),
        (lambda bm: setattr(bm, "num_cow_copies", -1), "num_cow_copies is negative"),
    ],
)
def test_block_manager_checks_name_each_violation(corruption, message: str) -> None:  # type: ignore[no-untyped-def]
    bm = BlockManager(num_gpu_blocks=8, block_size=2)
    bm.allocate("a", 3)
    bm.fork("a", "b")
    bm.check_invariants()
    corruption(bm)
    with pytest.raises(InvariantError, match=message):
        bm.check_invariants()


# ---- on a prefix-caching manager built by its public operations -----------------------------------------------------------------------------
def _corrupt_orphan(bm: PrefixCachingBlockManager) -> None:
    """Re-parent the live block w (after x) onto a node no block holds: an orphan."""
    gpu = bm._gpu
    w = bm.find_cached_prefix(["x", "w"])[1]
    piece = gpu._piece_of[w]
    del gpu._heads[(piece.parent, "w")]
    piece.parent = gpu.next_node + 5
    gpu._heads[(piece.parent, "w")] = piece


def _relink(bm: PrefixCachingBlockManager, order: list[int]) -> None:
    """Rebuild the GPU pool's free queue as `order` (head first), bypassing every check: the leading
    plain blocks on the stack, the rest as one segment of the cached part."""
    gpu = bm._gpu
    plain = 0
    while plain < len(order) and gpu._piece_of[order[plain]] is None:
        plain += 1
    queue = gpu._queue
    queue.plain[:] = order[:plain][::-1]
    queue.segments.clear()
    queue.tail_of.clear()
    queue.num_cached = 0
    queue.push(order[plain:])


def _lru_first(bm: PrefixCachingBlockManager) -> list[int]:
    return [b for b in bm._gpu.free_block_ids() if b != bm.evictable_blocks()[0]]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda bm: bm._gpu._heads.__setitem__((99, "k"), bm._gpu._piece_of[bm.evictable_blocks()[0]]), "hashes for"),
        (lambda bm: bm._gpu._refcounts.__setitem__(bm.evictable_blocks()[0], 1), "free list with refcount"),
        (lambda bm: _relink(bm, [bm.evictable_blocks()[0], *_lru_first(bm)]), "plain and cached mixed"),
        (lambda bm: _relink(bm, bm._gpu.free_block_ids()[:-1]), "leaked"),
        (lambda bm: setattr(bm._gpu, "_num_unreachable_free", 1), "cached counter"),
        (lambda bm: _relink(bm, [*_lru_first(bm), bm.evictable_blocks()[0]]), "evicted after its parent"),
        (_corrupt_orphan, "outlived its chain parent"),
        (lambda bm: setattr(bm._gpu_seqs["keep"], "num_cached_tokens", 99), "cached-token record"),
    ],
)
def test_check_invariants_names_the_violation(corrupt, message: str) -> None:  # type: ignore[no-untyped-def]
    bm = PrefixCachingBlockManager(num_gpu_blocks=8, block_size=2)
    bm.allocate("a", 6, ["x", "y", "z"])
    bm.allocate("keep", 4, ["x", "w"])  # keeps x live
    bm.free("a")  # z, y evictable (in this order)
    bm.check_invariants()
    corrupt(bm)
    with pytest.raises(InvariantError, match=message):
        bm.check_invariants()
