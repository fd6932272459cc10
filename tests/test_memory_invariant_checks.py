"""The invariant checkers catch what they promise: on random states of the prefix-caching manager with one
random corruption, the checks (bulk C loops over the pool) fail whenever a plain per-block walk of the
same rules fails (`walk_check`, the reference). Each violation named: `test_memory_invariant_messages.py`.
"""
from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from memory import PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain
from memory.evictor import ROOT
from memory.free_queue import FreeQueue

BS = 2


# ---- the reference: one Python step per block ----------------------------------------------------------
def _walk_allocator(pool, name: str) -> None:  # type: ignore[no-untyped-def]
    free, rc = pool.free_block_ids(), pool.refcounts
    assert len(set(free)) == len(free), f"{name}: free list holds a block twice"
    for block in free:
        assert 0 <= block < pool.num_blocks and rc[block] == 0, f"{name}: free block {block}"
    assert all(c >= 0 for c in rc), f"{name}: negative refcount"
    num_live = sum(1 for c in rc if c > 0)
    assert len(free) == pool.num_free_blocks and len(free) + num_live == pool.num_blocks, f"{name}: leak"
    assert sum(1 for c in rc if c > 1) == pool.num_shared_blocks, f"{name}: shared counter"


def _walk_tables(seqs, pool, name: str) -> dict[int, int]:  # type: ignore[no-untyped-def]
    refs: dict[int, int] = {}
    fills: dict[int, int] = {}
    for seq in seqs.values():
        blocks, n = seq.blocks, seq.num_tokens
        assert n >= 0 and len(blocks) == -(-n // BS) and len(set(blocks)) == len(blocks), name
        for i, block in enumerate(blocks):
            assert type(block) is int and 0 <= block < pool.num_blocks, name
            refs[block] = refs.get(block, 0) + 1
            fill = BS if i < len(blocks) - 1 else n - i * BS
            assert fills.setdefault(block, fill) == fill, name
    assert all(pool.refcounts[b] == refs.get(b, 0) for b in range(pool.num_blocks)), f"{name}: refcounts"
    return fills


def walk_check(bm: PrefixCachingBlockManager) -> None:
    """The rules of `memory.prefix_invariants`, walked block by block through the pool's public reads."""
    gpu = bm._gpu
    _walk_allocator(gpu, "gpu")
    queue = gpu.free_block_ids()
    hashes = [gpu.hash_of(b) for b in queue]
    cached = [h is not None for h in hashes]
    assert cached == sorted(cached), "plain and cached mixed"
    assert sum(h is not None and h[1] is not None for h in hashes) == gpu.num_cached_blocks, "cached counter"
    hash_of = [gpu.hash_of(b) for b in range(gpu.num_blocks)]
    node_of = [gpu.node_of(b) for b in range(gpu.num_blocks)]
    registry = gpu.registered()
    hashed = [b for b, h in enumerate(hash_of) if h is not None and h[1] is not None]
    assert sorted(registry.values()) == hashed, "hashes for"  # each hashed block listed once, nothing else
    assert all(hash_of[block] == h for h, block in registry.items()), "maps to"
    block_of_node: dict[int, int] = {}
    for block, node in enumerate(node_of):
        assert (node == ROOT) == (hash_of[block] is None or hash_of[block][1] is None), "has node"
        if node != ROOT:
            assert node not in block_of_node and ROOT < node < gpu.next_node, "node id"
            block_of_node[node] = block
    lru_rank = {block: i for i, block in enumerate(gpu.evictable_blocks())}
    rc = gpu.refcounts
    for block in hashed:
        parent_node = hash_of[block][0]
        if parent_node != ROOT:
            parent = block_of_node.get(parent_node)
            assert parent is not None, "outlived"
            assert not (rc[block] > 0 and rc[parent] == 0), "evictable parent"
            assert not (rc[block] == 0 and rc[parent] == 0 and lru_rank[parent] < lru_rank[block]), "order"
    _walk_allocator(bm._cpu, "cpu")
    assert not (bm._gpu_seqs.keys() & bm._cpu_seqs.keys()), "both"
    fills = _walk_tables(bm._gpu_seqs, gpu, "gpu")
    _walk_tables(bm._cpu_seqs, bm._cpu, "cpu")
    for seq in bm._gpu_seqs.values():
        for i, block in enumerate(seq.blocks):
            # whoever holds a block holds the blocks before it (`memory.block_allocator.num_live_leading`)
            assert i == 0 or rc[block] <= rc[seq.blocks[i - 1]], "refcounts increase"
            h = gpu.hash_of(block)
            if h is not None and h[1] is not None:
                assert (i + 1) * BS <= seq.num_tokens, "partial"
                assert h[0] == (ROOT if i == 0 else gpu.node_of(seq.blocks[i - 1])), "follow"
    assert bm._gpu_refcounts is gpu.refcounts and sum(fills.values()) == bm._gpu_filled_slots, "filled"
    for where in (bm._gpu_seqs, bm._cpu_seqs):
        for seq in where.values():
            c = seq.num_cached_tokens
            assert 0 <= c <= seq.num_tokens and c % BS == 0, "cached-token record"
    assert min(bm.num_cow_copies, bm.num_swapped_out_blocks, bm.num_swapped_in_blocks, bm.num_prefix_hits,
               bm.num_prefix_hit_tokens) >= 0, "negative"
    assert bm.num_prefix_hits <= bm.num_prefix_queries, "hits"
    assert bm.num_prefix_hit_tokens <= bm.num_prefix_query_tokens, "hits"


def _raised(check, bm) -> str | None:  # type: ignore[no-untyped-def]
    """The message if the check failed (any exception: a corrupt state may also crash a walk)."""
    try:
        check(bm)
    except Exception as exc:  # noqa: BLE001 - a crash counts as a caught corruption
        return f"{type(exc).__name__}: {exc}"
    return None


# ---- random states and corruptions ---------------------------------------------------------------------
OPS = st.lists(st.tuples(st.sampled_from(["alloc", "grow", "cache", "retire", "free", "fork"]), st.integers(0, 5),
                         st.integers(1, 9)), max_size=40)


def build(ops: list, pool: int) -> PrefixCachingBlockManager:
    """A manager after `ops`: owners with shared group prefixes and private chains (compact keys),
    output cached reachable or not, forks, frees."""
    bm = PrefixCachingBlockManager(pool, BS)
    chains: dict = {}
    live: dict = {}
    for op, owner, tokens in ops:
        if op == "alloc" and owner not in live:
            chain = chains.setdefault(owner, PrivateChain(owner))
            keys = ChainKeys(tuple(("g", owner % 2, i) for i in range(owner % 4)), (tokens - 1) // BS, chain)
            if bm.num_blocks_to_allocate(tokens, keys) <= bm.num_free_gpu_blocks:
                bm.allocate(owner, tokens, keys)
                live[owner] = keys
        elif op == "grow" and owner in live and bm.can_append_slots(owner, tokens):
            bm.append_slots(owner, tokens)
        elif op in ("cache", "retire") and owner in live:
            bm.cache_full_blocks(owner, live[owner].head(bm.num_tokens(owner) // BS), reachable=op == "cache")
        elif op == "free" and owner in live:
            bm.free(owner)
            del live[owner]
        elif op == "fork" and owner in live and ("fork", owner) not in bm._gpu_seqs:
            bm.fork(owner, ("fork", owner))
    bm.check_invariants()
    return bm


def corrupt(bm: PrefixCachingBlockManager, kind: int, i: int, j: int) -> None:
    """One corruption of the pool, the registry, a table or a counter; `i`, `j` pick the targets."""
    gpu = bm._gpu
    n = gpu.num_blocks
    a, b = i % n, j % n
    seqs = list(bm._gpu_seqs.values())
    seq = seqs[i % len(seqs)] if seqs else None
    if kind == 0:
        gpu._refcounts[a] = (gpu._refcounts[a] + 1 + j % 3) % 4 - (j % 5 == 0)
    elif kind == 1:  # a block gains another block's piece or loses its own (the piece untouched)
        gpu._piece_of[a] = gpu._piece_of[b] if gpu._piece_of[a] is None else None
    elif kind == 2 and gpu._pieces:  # a piece's nodes move: fresh, or onto another piece's
        piece, other = (sorted(gpu._pieces, key=lambda p: p.blocks)[k % len(gpu._pieces)] for k in (i, j))
        piece.first = other.first if j % 2 else gpu._next_node + j % 3 - 1
    elif kind == 3 and gpu._heads:  # a registry entry vanishes or points elsewhere
        h = list(gpu._heads)[j % len(gpu._heads)]
        if i % 2 or gpu._piece_of[a] is None:
            del gpu._heads[h]
        else:
            gpu._heads[h] = gpu._piece_of[a]
    elif kind == 4:  # a block moves within, into or out of the free queue
        _take_out(gpu._queue, a)
        if j % 3 == 0:
            gpu._queue.plain.append(a)
        elif j % 3 == 1:
            gpu._queue.push([a])
    elif kind == 5:
        counter = ("_num_shared", "_num_registered", "_num_unreachable_free", "_num_unreachable")[j % 4]
        setattr(gpu, counter, getattr(gpu, counter) + (1 if i % 2 else -1))
    elif kind == 6 and seq is not None:  # a table changes
        if len(seq.blocks) > 1 and j % 3 == 0:
            seq.blocks[0], seq.blocks[-1] = seq.blocks[-1], seq.blocks[0]
        elif j % 3 == 1:
            seq.num_tokens += 1 if i % 2 else -1
        else:
            seq.num_cached_tokens += BS if i % 2 else 1
    elif kind == 7:
        bm._gpu_filled_slots += 1 if i % 2 else -1
    elif kind == 8 and gpu._queue.num_cached > 1:  # the LRU order changes (not always a violation)
        queue = gpu._queue
        block = queue.cached_ids()[i % queue.num_cached]
        _take_out(queue, block)
        queue.push([block])
        if j % 2 == 0:
            queue.segments.move_to_end(queue.tail_of[block], last=False)
    elif kind == 9 and gpu._pieces:  # a piece holds one block more or less
        piece = sorted(gpu._pieces, key=lambda p: p.blocks)[i % len(gpu._pieces)]
        piece.n = min(piece.n + 1, len(piece.blocks)) if j % 2 else piece.n - 1


def _take_out(queue: FreeQueue, block: int) -> None:
    """Remove a block from the free queue if it is there, keeping the queue's own bookkeeping (its
    counts, its segment index) consistent: only the pool's state around it is corrupted."""
    if block in queue.plain:
        queue.plain.remove(block)
        return
    for segment, blocks in queue.segments.items():  # each segment's list holds its blocks last first
        if block in blocks:
            del queue.tail_of[blocks[0]]
            blocks.remove(block)
            queue.num_cached -= 1
            if blocks:
                queue.tail_of[blocks[0]] = segment
            else:
                del queue.segments[segment]
            return


# Found by the search: 1's table [0, 2] (0 shared with 3) swapped to [2, 0], refcounts [1, 2] - a rule of the
# check (`_check_chains`) the walk lacked; nothing else catches it (block 0's chain parent is the root,
# the node-less block 2's node reads as the root too).
SHARED_BLOCK_MOVED_LAST = [("alloc", 3, 3), ("alloc", 1, 4)]
# Found by a longer search: a live block retired into an unreachable piece (while a cached block is free),
# then its mark dropped (kind 1) or its piece emptied (kind 9) - rules the walk cannot see (`WALK_BLIND`).
LIVE_BLOCK_RETIRED = [("alloc", 0, 3), ("free", 0, 1), ("alloc", 1, 2), ("retire", 1, 1)]
GROWN_BLOCK_RETIRED = [("alloc", 0, 1), ("alloc", 3, 3), ("grow", 0, 1), ("free", 3, 1), ("retire", 0, 1)]
# ... and a freed retired block whose piece is given a node (kind 2), which nothing reads: the check once
# counted it as a reachable cached block.
RETIRED_BLOCK_FREED = [("alloc", 0, 3), ("alloc", 1, 2), ("free", 0, 1), ("retire", 1, 1), ("free", 1, 1)]
# A registry entry moved onto a retired block (kind 3): the walk once only counted the registry's blocks.
CACHED_AND_RETIRED = [("alloc", 4, 2), ("alloc", 1, 3), ("free", 1, 1), ("retire", 4, 1)]
# A piece's first node moved onto the node of another piece's evicted block (kind 2): `WALK_BLIND`.
TAIL_EVICTED = [("alloc", 0, 1), ("alloc", 2, 3), ("alloc", 3, 5), ("free", 3, 1), ("grow", 0, 4)]

# What the check sees and the walk, through public reads, cannot: the pool's counters; which blocks an
# unreachable piece holds (it has no nodes and no registry entry, its blocks read only as `(ROOT, None)`,
# and a live one acts as a plain block: `CachingBlockAllocator.mark_unreachable`); and the node ids a piece
# keeps for its evicted blocks, never to be reused (the walk sees only the nodes of registered blocks).
WALK_BLIND = ("registered counter", "unreachable counter", "a piece holds", "holds other blocks than its first",
              "reused or out of range")


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(4, 16), st.integers(0, 9), st.integers(0, 1000), st.integers(0, 1000))
@example(SHARED_BLOCK_MOVED_LAST, 4, 6, 1, 0)
@example(LIVE_BLOCK_RETIRED, 4, 1, 1, 0)
@example(GROWN_BLOCK_RETIRED, 4, 9, 0, 0)
@example(RETIRED_BLOCK_FREED, 4, 2, 1, 0)
@example(CACHED_AND_RETIRED, 4, 3, 0, 0)
@example(TAIL_EVICTED, 6, 2, 0, 0)
def test_checks_fail_whenever_a_block_by_block_walk_fails(ops: list, pool: int, kind: int, i: int, j: int) -> None:
    bm = build(ops, pool)
    walk_check(bm)  # a consistent state passes both
    corrupt(bm, kind, i, j)
    walked, checked = _raised(walk_check, bm), _raised(PrefixCachingBlockManager.check_invariants, bm)
    if walked is not None:
        assert checked is not None, f"the walk fails ({walked}), the check passes"
        assert checked.startswith("InvariantError"), checked  # named, never a crash
    elif checked is not None:  # stricter than the walk only where the walk cannot see
        assert any(rule in checked for rule in WALK_BLIND), checked
