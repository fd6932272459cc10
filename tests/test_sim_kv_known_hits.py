"""Remembered prefix-cache answers of beam-search rounds (`sim.kv_known_hits`): reused only while they are
still the cache's answer, never a block it no longer holds."""
from __future__ import annotations

import pytest

from memory import PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain
from sim import EngineConfig, replay
from sim.kv_known_hits import SharedChain, allocate_hits, cached_prefix
from traces import Request, Trace

KEYS = tuple(("beam", 0, i) for i in range(4))


def fresh_lookup(bm: PrefixCachingBlockManager, keys: ChainKeys) -> list[int]:
    """The cache's answer, from nothing remembered."""
    return bm.find_cached_prefix(ChainKeys(keys.shared, keys.num_blocks, PrivateChain("fresh")))


@pytest.fixture
def bm() -> PrefixCachingBlockManager:
    """8 blocks of 4 tokens: KEYS' 4 blocks cached and free (evictable, deepest first), 4 plain free."""
    bm = PrefixCachingBlockManager(num_gpu_blocks=8, block_size=4)
    bm.allocate("holder", 16, ChainKeys(KEYS, 4, PrivateChain("holder")))
    bm.free("holder")
    return bm


def counting_lookups(bm: PrefixCachingBlockManager, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    lookup = bm.find_cached_prefix

    def counted(keys):
        calls[0] += 1
        return lookup(keys)

    monkeypatch.setattr(bm, "find_cached_prefix", counted)
    return calls


def test_a_remembered_answer_is_reused_while_no_block_was_evicted(bm, monkeypatch) -> None:
    calls = counting_lookups(bm, monkeypatch)
    chain = SharedChain("beam")
    three = cached_prefix(bm, ChainKeys(KEYS, 3, chain))
    assert len(three) == 3 and calls[0] == 1
    bm.allocate("plain", 12)  # takes plain blocks only: nothing evicted
    assert cached_prefix(bm, ChainKeys(KEYS, 2, chain)) == three[:2]
    assert cached_prefix(bm, ChainKeys(KEYS, 3, chain)) == three
    assert calls[0] == 1
    four = cached_prefix(bm, ChainKeys(KEYS, 4, chain))
    assert calls[0] == 2  # more keys than the answer covered: looked up
    assert four == fresh_lookup(bm, ChainKeys(KEYS, 4, chain)) and four[:3] == three


def test_a_remembered_answer_is_not_reused_after_an_eviction(bm) -> None:
    chain = SharedChain("beam")
    before = cached_prefix(bm, ChainKeys(KEYS, 3, chain))
    bm.allocate("plain", 24)  # 4 plain blocks, then 2 cached ones evicted (the chain's last two)
    after = cached_prefix(bm, ChainKeys(KEYS, 3, chain))
    assert after == fresh_lookup(bm, ChainKeys(KEYS, 3, chain)) == before[:2]


def test_the_answer_kept_across_an_allocation_is_checked_after_an_eviction(bm) -> None:
    # A round's request allocates its hits; the next round's, after evictions, must not get the old blocks.
    chain = SharedChain("beam")
    keys = ChainKeys(KEYS, 3, chain)
    allocate_hits(bm, "round 1", keys, len(cached_prefix(bm, keys)))
    bm.free("round 1")
    bm.allocate("plain", 28)  # evicts 3 of the 4 cached blocks
    assert cached_prefix(bm, keys) == fresh_lookup(bm, keys) and len(cached_prefix(bm, keys)) == 1
    allocate_hits(bm, "round 2", keys, 1)
    assert bm.block_table("round 2") == fresh_lookup(bm, keys)


def test_every_round_allocation_under_evictions_takes_the_blocks_a_fresh_lookup_finds(monkeypatch) -> None:
    # Beam requests on a small pool: rounds evict each other's cached blocks. Every allocation's hits are
    # compared with a lookup that remembers nothing, and both ways of answering are exercised.
    allocate, remembered = PrefixCachingBlockManager.allocate, cached_prefix
    seen = {"allocations": 0, "remembered": 0, "looked_up": 0}

    def checked_allocate(self, seq_id, num_tokens, block_keys=None, defer_private=False):
        expected = fresh_lookup(self, block_keys) if type(block_keys) is ChainKeys else []
        cached = allocate(self, seq_id, num_tokens, block_keys, defer_private)
        assert self.block_table(seq_id)[:len(expected)] == expected and cached == len(expected) * self.block_size
        seen["allocations"] += 1
        return cached

    def counted_prefix(bm, keys):
        chain = keys.chain if type(keys) is ChainKeys else None
        reused = type(chain) is SharedChain and chain.evictions == bm.num_evicted_blocks \
            and keys.num_blocks <= len(chain.hits)
        seen["remembered" if reused else "looked_up"] += 1
        hits = remembered(bm, keys)
        assert hits == fresh_lookup(bm, keys)
        return hits

    monkeypatch.setattr(PrefixCachingBlockManager, "allocate", checked_allocate)
    monkeypatch.setattr("sim.kv_prefix.cached_prefix", counted_prefix)
    reqs = [Request(f"b{i}", 0.002 * i, 60 + 37 * i, 40 + 9 * i, n=4, sampling="beam") for i in range(5)]
    reqs += [Request(f"g{i}", 0.003 * i, 200 + 50 * i, 80) for i in range(3)]
    result = replay(Trace(reqs), EngineConfig(num_gpu_blocks=90, max_num_batched_tokens=256, max_num_seqs=12,
                                              check_every=1), policy="vllm", seed=3)
    assert (result.requests["status"] == "finished").all()
    assert result.summary["prefix_evicted_blocks"] > 0
    assert seen["allocations"] > 200 and seen["remembered"] > 50 and seen["looked_up"] > 50
