"""Lookups over pieces (`memory.pieces`: the blocks of one registration, one registry entry) against the
per-block walk, with runs of one key among them (a Mooncake hash id keys every block of its 512 tokens).

The pool registers blocks in pieces, branches off inside pieces and, for a chain's shared keys, remembers
the last answer with the pieces it took (`PrivateChain.memo`, revalidated piece by piece). Whatever the
operations before, every lookup must return what walking the registry block by block returns: `match` for
plain keys, `find_cached_prefix` for compact keys (shared keys, then the private chain, looked up as their
listed form).
"""
from __future__ import annotations

from itertools import chain, repeat

from hypothesis import given, settings
from hypothesis import strategies as st

from memory import PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain
from memory.evictor import ROOT

BS = 2
PER = 3  # blocks per hash id
# Owners' hash ids: common leading ids, a divergence, the same id twice in a row (one run of 2 * PER keys),
# and an id that comes back after another (a run's end that bisection alone would misplace).
IDS = ([1, 2, 3], [1, 2, 4, 8], [1, 5, 6], [7, 7, 9], [7, 9, 7, 7])
SHARED = [list(chain.from_iterable(repeat(h, PER) for h in ids)) for ids in IDS]  # one list each: memos persist
OPS = st.lists(st.tuples(st.sampled_from(["alloc", "grow", "cache", "retire", "free"]), st.integers(0, 4),
                         st.integers(1, 30)), max_size=50)


def walk(registry: dict, node_of, keys: list) -> list[int]:
    """The per-block lookup: one registry entry per block, each chained on its parent's node."""
    parent, hits = ROOT, []
    for key in keys:
        block = registry.get((parent, key))
        if block is None:
            break
        hits.append(block)
        parent = node_of(block)
    return hits


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(3, 24))
def test_run_lookups_and_memos_answer_as_the_per_block_walk(ops: list, pool: int) -> None:
    bm = PrefixCachingBlockManager(pool, BS)
    gpu = bm._gpu
    chains = {k: PrivateChain(k) for k in range(len(IDS))}
    live: dict[int, ChainKeys] = {}
    for step, (op, owner, tokens) in enumerate(ops):
        if op == "alloc" and owner not in live:
            keys = ChainKeys(SHARED[owner], (tokens - 1) // BS, chains[owner])
            if bm.num_blocks_to_allocate(tokens, keys) <= bm.num_free_gpu_blocks:
                bm.allocate(owner, tokens, keys, defer_private=bool(step % 2))
                live[owner] = keys
        elif op == "grow" and owner in live and bm.can_append_slots(owner, tokens):
            bm.append_slots(owner, tokens)
        elif op in ("cache", "retire") and owner in live:
            bm.cache_full_blocks(owner, live[owner].head(bm.num_tokens(owner) // BS), reachable=op == "cache")
        if op in ("retire", "free") and owner in live:
            bm.free(owner)
            del live[owner]
        bm.check_invariants()
        registry = gpu.registered()
        for k in range(len(IDS)):
            for num_blocks in (step % 9, 16):  # the long answer is remembered into the next step
                probe = ChainKeys(SHARED[k], num_blocks, chains[k])
                assert bm.find_cached_prefix(probe) == walk(registry, gpu.node_of, probe.listed())
            plain = SHARED[k][: 1 + step % len(SHARED[k])]
            assert gpu.match(plain) == walk(registry, gpu.node_of, plain)


def test_a_piece_is_found_with_one_registry_lookup_and_stops_where_its_blocks_were_evicted() -> None:
    bm = PrefixCachingBlockManager(12, BS)
    keys = SHARED[0][:6]  # hash ids 1 and 2: two runs of 3, registered together (one piece)
    bm.allocate("a", 14, keys)
    table = bm.block_table("a")
    bm.free("a")  # cached, tail first in the free queue
    class Counting(dict):
        gets = 0

        def get(self, key, default=None):
            Counting.gets += 1
            return super().get(key, default)
    gpu = bm._gpu
    gpu._heads = Counting(gpu._heads)
    assert gpu.match(keys) == table[:6]
    assert Counting.gets == 1  # one per piece, not one per block
    bm.allocate("b", 4)  # two plain blocks, then evicts the run's tail: table[5], table[4]
    bm.allocate("c", 2 * 12 - 2 * 2 - 2 * 6 + 2)
    assert gpu.match(keys) == walk(gpu.registered(), gpu.node_of, keys)
    assert gpu.match(keys) == table[:5]  # the piece lost its last block


def test_a_remembered_answer_loses_the_evicted_tail_of_its_chain() -> None:
    bm = PrefixCachingBlockManager(14, BS)
    owner = PrivateChain("w")
    keys = ChainKeys(SHARED[1], 12, owner)  # hash ids 1, 2, 4, 8: twelve blocks
    bm.allocate("a", 2 * 12 + 1, keys)
    table = bm.block_table("a")
    bm.free("a")
    assert bm.find_cached_prefix(keys) == table[:12]  # remembered on the chain
    bm.allocate("b", 2 * 4)  # the two plain blocks left, then the chain's two last blocks (tail first)
    assert bm.find_cached_prefix(keys) == table[:10] == walk(bm._gpu.registered(), bm._gpu.node_of, keys.listed())
    bm.allocate("c", 2 * 7)  # and seven more
    assert bm.find_cached_prefix(keys) == table[:3] == walk(bm._gpu.registered(), bm._gpu.node_of, keys.listed())
