"""Example tests of automatic prefix caching: sharing within a prefix group, reviving freed prefixes, LRU
eviction order, admission counts, refusals, copy-on-write next to cached blocks, swap. (The invariant
checker's messages: `test_memory_invariant_messages.py`; the key helpers and the manager without keys:
`test_memory_prefix_keys.py`.)"""
from __future__ import annotations

import pytest

from memory import AllocStatus, NoFreeBlocksError, PrefixCachingBlockManager
from memory.block_keys import prefix_group_block_keys


def keys(*names: str) -> list[str]:
    return list(names)


# ---- sharing, reviving, evicting -----------------------------------------------------------------------
def test_two_requests_of_one_prefix_group_share_their_prefix_blocks() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=16, block_size=4)
    # 2 shared prefix blocks ("g7"), then each request's own full block, then a partial block.
    a_keys = prefix_group_block_keys(14, 4, "a", "g7", prefix_tokens=8)
    b_keys = prefix_group_block_keys(13, 4, "b", "g7", prefix_tokens=8)
    assert bm.allocate("a", 14, a_keys) == 0 and bm.num_cached_tokens("a") == 0
    free_before = bm.num_free_gpu_blocks
    assert bm.can_allocate(13, b_keys) is AllocStatus.OK and bm.num_blocks_to_allocate(13, b_keys) == 2
    assert bm.allocate("b", 13, b_keys) == 8 and bm.num_cached_tokens("b") == 8
    a, b = bm.block_table("a"), bm.block_table("b")
    assert a[:2] == b[:2] and len(set(a[2:]) | set(b[2:])) == 4  # prefix shared, the rest private
    assert bm.refcount(a[0]) == bm.refcount(a[1]) == 2 and bm.num_shared_gpu_blocks == 2
    assert bm.num_free_gpu_blocks == free_before - 2  # only b's own blocks were taken
    assert bm.num_allocated_unused_slots == 2 + 3  # the shared blocks' slots count once
    assert (bm.num_prefix_queries, bm.num_prefix_hits, bm.num_prefix_hit_tokens) == (2, 1, 8)
    assert bm.prefix_hit_rate == pytest.approx(8 / 27)
    bm.check_invariants()


def test_chained_keys_share_only_behind_an_equal_prefix() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=8, block_size=2)
    bm.allocate("a", 4, keys("x", "y"))
    assert bm.allocate("b", 4, keys("z", "y")) == 0  # same key for block 1, different block 0
    assert set(bm.block_table("a")).isdisjoint(bm.block_table("b"))
    assert bm.find_cached_prefix(keys("x", "y", "w")) == bm.block_table("a")
    assert bm.find_cached_prefix(keys("y")) == []
    bm.check_invariants()


def test_a_freed_prefix_is_revived_not_recomputed() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=6, block_size=4)
    bm.allocate("a", 10, keys("p", "q"))  # blocks 0, 1 cached; block 2 partial (never cached)
    table = bm.block_table("a")
    bm.free("a")
    assert bm.num_free_gpu_blocks == 6 and bm.num_cached_blocks == 2
    assert bm.evictable_blocks() == [table[1], table[0]]  # the chain's tail goes first
    assert bm.is_cached(table[0]) and not bm.is_cached(table[2])
    assert bm.num_blocks_to_allocate(8, keys("p", "q")) == 2  # revived blocks leave the free pool too
    assert bm.allocate("b", 8, keys("p", "q")) == 8
    assert bm.block_table("b") == table[:2] and bm.num_revived_blocks == 2
    assert bm.num_cached_blocks == 0 and bm.num_free_gpu_blocks == 4 and bm.num_evicted_blocks == 0
    assert bm.refcount(table[0]) == 1
    bm.check_invariants()


def test_eviction_takes_plain_free_blocks_first_then_least_recently_used() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=4, block_size=2)
    for name in ("a", "b", "c"):
        bm.allocate(name, 2, keys(name))
    blocks = {name: bm.block_table(name)[0] for name in ("a", "b", "c")}
    for name in ("a", "b", "c"):  # freed in this order: a is the least recently used
        bm.free(name)
    assert bm.evictable_blocks() == [blocks["a"], blocks["b"], blocks["c"]]
    bm.allocate("d", 1)  # the one plain-free block: nothing evicted
    assert bm.num_evicted_blocks == 0 and bm.num_cached_blocks == 3
    bm.allocate("e", 4)  # two blocks: evicts a, then b
    assert sorted(bm.block_table("e")) == sorted([blocks["a"], blocks["b"]])
    assert bm.num_evicted_blocks == 2 and bm.evictable_blocks() == [blocks["c"]]
    d_block = bm.block_table("d")[0]
    bm.free("d")  # plain free again (it has no key)
    assert bm.allocate("f", 2, keys("a")) == 0  # a is gone: a plain block is taken, c stays cached
    assert bm.block_table("f") == [d_block] and bm.num_evicted_blocks == 2
    assert bm.allocate("g", 2, keys("c")) == 2 and bm.block_table("g") == [blocks["c"]]
    bm.check_invariants()


@pytest.mark.parametrize(("num_tokens", "table"), [(3, [1, 2, 3]), (4, [0, 1, 2, 3])])
def test_the_free_queue_hands_out_evicted_blocks_first_most_recent_first(num_tokens: int, table: list[int]) -> None:
    """Block ids stay those of the former free stack, which took evicted blocks on top of the plain ones;
    the simulator keys state by block id, so its tables depend on this order."""
    bm = PrefixCachingBlockManager(num_gpu_blocks=4, block_size=1)
    bm.allocate("a", 2, keys("x", "y"))  # blocks 0, 1, cached
    bm.allocate("p", 1)                  # block 2, plain
    bm.free("a")                         # tail first: 1 is evicted before 0
    bm.free("p")
    assert bm._gpu.free_block_ids() == [2, 3, 1, 0] and bm.evictable_blocks() == [1, 0]
    bm.allocate("q", num_tokens)
    assert bm.block_table("q") == table
    assert bm.num_evicted_blocks == num_tokens - 2
    bm.check_invariants()


def test_a_reused_block_becomes_most_recently_used_again() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=2, block_size=2)
    bm.allocate("a", 2, keys("a"))
    bm.allocate("b", 2, keys("b"))
    a, b = bm.block_table("a")[0], bm.block_table("b")[0]
    bm.free("a")
    bm.free("b")
    bm.allocate("a2", 2, keys("a"))  # revive a; freed again it is newer than b
    bm.free("a2")
    assert bm.evictable_blocks() == [b, a]
    bm.allocate("x", 2)
    assert bm.block_table("x") == [b] and bm.find_cached_prefix(keys("a")) == [a]
    bm.check_invariants()


def test_touching_a_cached_prefix_makes_its_evictable_blocks_the_most_recently_used() -> None:
    # SGLang refreshes a waiting request's cached prefix (its LRU time) without taking it: the evictable
    # blocks of the longest cached prefix move to the end of the eviction order, a chain's tail still first.
    bm = PrefixCachingBlockManager(num_gpu_blocks=6, block_size=2)
    for name, ks in (("a", keys("x", "y")), ("b", keys("z")), ("q", keys("q"))):
        bm.allocate(name, 2 * len(ks), ks)
    (a0, a1), (b0,), (q0,) = bm.block_table("a"), bm.block_table("b"), bm.block_table("q")
    for name in ("a", "b", "q"):
        bm.free(name)
    assert bm.evictable_blocks() == [a1, a0, b0, q0]
    assert bm.touch_cached_prefix(keys("x", "y", "v")) == 2  # the prefix found: x, y
    assert bm.evictable_blocks() == [b0, q0, a1, a0]
    assert bm.touch_cached_prefix(keys("v")) == 0 and bm.touch_cached_prefix(keys("z")) == 1
    assert bm.evictable_blocks() == [q0, a1, a0, b0]
    bm.allocate("c", 3, keys("x"))  # x is live now: only y can move, and a prefix of the hits moves alone
    assert bm.touch_cached_prefix(keys("x")) == 0 and bm.touch_cached_prefix(keys("x", "y")) == 1
    assert bm.evictable_blocks() == [q0, b0, a1]
    assert (bm.num_revived_blocks, bm.num_evicted_blocks, bm.num_prefix_queries) == (1, 0, 4)  # not counted
    bm.allocate("d", 6)  # three blocks: the plain one, then q and b are evicted; y is kept
    assert {q0, b0} < set(bm.block_table("d")) and bm.num_evicted_blocks == 2
    assert bm.find_cached_prefix(keys("x", "y")) == [a0, a1]
    bm.check_invariants()


# ---- admission and refusals ----------------------------------------------------------------------------
def test_can_allocate_counts_live_hits_as_free_and_revived_hits_as_taken() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=4, block_size=2)
    bm.allocate("a", 6, keys("x", "y", "z"))  # 3 live cached blocks, 1 free
    # 4 blocks, 3 of them live hits: one new block, which is free. Without the cache it would not fit.
    assert bm.can_allocate(8, keys("x", "y", "z", "w")) is AllocStatus.OK
    assert bm.can_allocate(8) is AllocStatus.LATER
    bm.free("a")  # all 4 free, 3 of them cached
    # The same 4 blocks now: 3 revived + 1 new, all from the free pool (4 free): still fits exactly.
    assert bm.num_blocks_to_allocate(8, keys("x", "y", "z", "w")) == 4
    assert bm.can_allocate(8, keys("x", "y", "z", "w")) is AllocStatus.OK
    assert bm.can_allocate(10) is AllocStatus.NEVER  # 5 blocks never fit: cached blocks don't change that
    bm.allocate("b", 2, keys("q"))  # takes the plain-free block
    assert bm.can_allocate(8, keys("x", "y", "z", "w")) is AllocStatus.LATER  # needs 4, 3 free
    with pytest.raises(NoFreeBlocksError):
        bm.allocate("c", 8, keys("x", "y", "z", "w"))
    assert bm.can_allocate(6, keys("x", "y", "z")) is AllocStatus.OK  # 3 revived
    bm.check_invariants()


def _state(bm: PrefixCachingBlockManager) -> tuple:
    gpu = bm._gpu
    return ({s: (bm.block_table(s), bm.num_tokens(s)) for s in ("a", "b", "c", "d") if bm.has_seq(s)},
            list(gpu.refcounts), gpu.free_block_ids(), bm.evictable_blocks(), gpu.registered(),
            bm.num_free_gpu_blocks, bm.num_allocated_unused_slots, bm.num_evicted_blocks,
            bm.num_revived_blocks, bm.num_prefix_queries, bm.num_prefix_hit_tokens)


def test_refused_allocation_and_append_leave_no_trace() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=4, block_size=2)
    bm.allocate("a", 4, keys("x", "y"))
    bm.allocate("b", 3, keys("u"))
    bm.free("a")  # 2 cached, 0 plain free ... plus b's 2 blocks
    before = _state(bm)
    with pytest.raises(NoFreeBlocksError):
        bm.allocate("c", 6, keys("x", "y", "v"))  # revive 2 + 1 new > 2 free
    assert _state(bm) == before and not bm.has_seq("c")
    bm.fork("b", "d")
    before = _state(bm)
    assert bm.can_append_slots("d", 4) is False  # copy-on-write + 2 new blocks > 2 free
    with pytest.raises(NoFreeBlocksError):
        bm.append_slots("d", 4)
    assert _state(bm) == before
    for bad, match in [(["k"] * 3, "3 keys"), ("xy", "sequence"), ([[1]], "not hashable"), (7, "sequence")]:
        with pytest.raises(ValueError, match=match):
            bm.allocate("c", 4, bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=match):
            bm.can_allocate(4, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already exists"):
        bm.allocate("b", 2, keys("x"))
    assert _state(bm) == before
    bm.check_invariants()


def test_append_evicts_cached_blocks_only_when_it_succeeds() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=3, block_size=2)
    bm.allocate("a", 4, keys("x", "y"))
    x, y = bm.block_table("a")
    bm.allocate("b", 2)
    bm.free("a")  # blocks of a cached, b holds the third
    assert not bm.can_append_slots("b", 6) and bm.num_cached_blocks == 2
    with pytest.raises(NoFreeBlocksError):
        bm.append_slots("b", 6)  # 3 new blocks, 2 free: nothing is evicted
    assert bm.num_evicted_blocks == 0 and bm.evictable_blocks() == [y, x]
    assert bm.can_append_slots("b", 2)
    assert list(bm.append_slots("b", 2)) == [] and bm.num_evicted_blocks == 1  # y (the tail) went first
    assert bm.block_table("b")[1] == y and bm.find_cached_prefix(keys("x", "y")) == [x]
    bm.check_invariants()


# ---- copy-on-write next to cached blocks ---------------------------------------------------------------
def test_appending_after_a_cached_shared_full_block_opens_a_new_block() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=8, block_size=4)
    bm.allocate("a", 8, keys("x", "y"))
    bm.allocate("b", 8, keys("x", "y"))  # b's whole table is a's: shared, cached, full
    shared = bm.block_table("a")
    assert bm.block_table("b") == shared and bm.num_cached_tokens("b") == 8
    assert list(bm.append_slots("b")) == []  # a new block, no write into the shared one
    assert bm.block_table("b") == shared + [2] and bm.block_table("a") == shared
    assert bm.refcount(shared[1]) == 2 and bm.is_cached(shared[1]) and not bm.is_cached(2)
    assert bm.num_cow_copies == 0
    # A fork of a sequence with a cached prefix and a partial tail: copy-on-write of the tail only.
    bm.allocate("c", 10, keys("x", "y"))
    bm.fork("c", "d")
    ((src, dst),) = bm.append_slots("d")
    assert src == bm.block_table("c")[2] and bm.block_table("d") == shared + [dst]
    assert not bm.is_cached(dst) and bm.refcount(shared[0]) == 4
    bm.check_invariants()


# ---- swap ----------------------------------------------------------------------------------------------
def test_swap_out_of_one_prefix_sharer_copies_the_cached_prefix() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=8, block_size=4, num_cpu_blocks=8)
    bm.allocate("a", 10, keys("x", "y"))
    bm.allocate("b", 9, keys("x", "z"))  # shares block x with a only
    x, y, a_tail = bm.block_table("a")
    assert bm.can_swap_out(["a"])  # not a forked family: the shared block is cached
    out = bm.swap_out(["a"])
    assert set(out) == {x, y, a_tail} and bm.is_swapped("a")
    assert bm.refcount(x) == 1 and bm.is_cached(x)  # still b's
    assert bm.refcount(y) == 0 and bm.evictable_blocks() == [y]  # still reusable
    assert not bm.is_cached(a_tail) and bm.num_allocated_unused_slots == 3  # b's tail only
    assert bm.find_cached_prefix(keys("x", "y")) == [x, y]
    back = bm.swap_in(["a"])  # fresh private copies: swapping drops the cache for its blocks
    table = bm.block_table("a")
    assert table == [back[out[x]], back[out[y]], back[out[a_tail]]]
    assert not any(bm.is_cached(b) for b in table) and x not in table
    bm.fork("b", "b2")
    with pytest.raises(ValueError, match="must move together"):
        bm.swap_out(["b"])  # b's partial tail is shared with its fork: that still is a family
    assert bm.can_swap_out(["b", "b2"])
    bm.check_invariants()


def test_swap_in_evicts_cached_blocks_when_it_needs_them() -> None:
    bm = PrefixCachingBlockManager(num_gpu_blocks=3, block_size=2, num_cpu_blocks=2)
    bm.allocate("a", 3)
    bm.swap_out(["a"])
    bm.allocate("b", 6, keys("x", "y", "z"))
    bm.free("b")
    assert bm.can_swap_in(["a"]) and bm.num_cached_blocks == 3
    bm.swap_in(["a"])
    assert bm.num_evicted_blocks == 2 and bm.find_cached_prefix(keys("x", "y", "z")) != []
    bm.check_invariants()
