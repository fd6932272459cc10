"""Compact keys (`ChainKeys`: shared keys, then private blocks on a chain) against the same keys listed.

Two managers run the same operations, one with `ChainKeys`, one with `keys.listed()`; lookups, free and
cached counts and block tables must agree after every step (block ids too: the compact form changes no
allocation order while finished blocks are cached as the listed form caches them).
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from memory import PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain

BS = 2
OPS = st.lists(st.tuples(st.sampled_from(["alloc", "grow", "cache", "retire", "free"]), st.integers(0, 3),
                         st.integers(1, 9)), max_size=60)


def keys_of(owner: int, num_blocks: int, chains: dict) -> ChainKeys:
    """Owner k's keys: k blocks of group k % 2's shared prefix, then its own (a chain per owner)."""
    chain = chains.setdefault(owner, PrivateChain(owner))
    return ChainKeys(tuple(("g", owner % 2, i) for i in range(owner)), num_blocks, chain)


@settings(max_examples=400, deadline=None)
@given(OPS, st.integers(4, 16))
def test_compact_keys_behave_as_listed_keys(ops: list, pool: int) -> None:
    compact, listed = PrefixCachingBlockManager(pool, BS), PrefixCachingBlockManager(pool, BS)
    for bm in (compact, listed):
        bm._gpu.unreachable_plain = False  # cache finished blocks as the listed form does
    chains: dict = {}
    live: dict[int, ChainKeys] = {}
    for op, owner, tokens in ops:
        if op == "alloc" and owner not in live:
            keys = keys_of(owner, (tokens - 1) // BS, chains)
            fits = compact.num_blocks_to_allocate(tokens, keys) <= compact.num_free_gpu_blocks
            assert fits == (listed.num_blocks_to_allocate(tokens, keys.listed()) <= listed.num_free_gpu_blocks)
            if fits:
                assert compact.allocate(owner, tokens, keys) == listed.allocate(owner, tokens, keys.listed())
                live[owner] = keys
        elif op == "grow" and owner in live and compact.can_append_slots(owner, tokens):
            compact.append_slots(owner, tokens)
            listed.append_slots(owner, tokens)
        elif op in ("cache", "retire") and owner in live:
            keys = live[owner].head(compact.num_tokens(owner) // BS)  # every full block
            got = compact.cache_full_blocks(owner, keys, reachable=op == "cache")
            assert got == listed.cache_full_blocks(owner, keys.listed(), reachable=op == "cache")
        if op in ("retire", "free") and owner in live:
            # a finished request's blocks are cached unreachable just before they are freed (kv_prefix.release)
            compact.free(owner)
            listed.free(owner)
            del live[owner]
        for other in range(4):
            probe = keys_of(other, 6, chains)
            assert compact.find_cached_prefix(probe) == listed.find_cached_prefix(probe.listed())
        assert compact.num_free_gpu_blocks == listed.num_free_gpu_blocks
        assert compact.num_cached_blocks == listed.num_cached_blocks
        assert compact.evictable_blocks() == listed.evictable_blocks()
        assert all(compact.block_table(s) == listed.block_table(s) for s in live)
        compact.check_invariants()
        listed.check_invariants()


def test_a_forgotten_chain_stays_cached_but_is_neither_found_nor_counted() -> None:
    for forget_while_live in (True, False):
        bm = PrefixCachingBlockManager(8, BS)
        chain = PrivateChain("a")
        keys = ChainKeys((("g", 0),), 3, chain)  # one shared block, two private ones
        bm.allocate("a", 7, keys)
        if forget_while_live:
            assert bm.forget_private(keys) == 2
            bm.free("a")
        else:
            bm.free("a")
            assert len(bm.find_cached_prefix(keys)) == 3 and bm.num_cached_blocks == 3
            assert bm.forget_private(keys) == 2
        bm.check_invariants()
        assert bm.num_cached_blocks == 1  # the shared block only
        assert len(bm.find_cached_prefix(ChainKeys((("g", 0),), 3, chain))) == 1
        assert bm.forget_private(keys) == 0  # nothing left on the chain
        bm.allocate("b", 16)  # takes every block: the cached ones are evicted, only the shared one counted
        assert bm.num_evicted_blocks == 1
        bm.check_invariants()
