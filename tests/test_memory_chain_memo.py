"""The prefix cache's memo of compact keys (`PrivateChain.memo`, `ChainRegistry.match_chain`): reused with no
walk while no block was evicted, never a block the cache no longer holds, extended by later registrations,
and kept across the allocation (vLLM V1's beam-search rounds look the same keys up again and again)."""
from __future__ import annotations

import pytest

import memory.chain_registry
from memory import PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain
from sim import EngineConfig, replay
from traces import Request, Trace

KEYS = tuple(("beam", 0, i) for i in range(4))
LOOKUP = PrefixCachingBlockManager.find_cached_prefix  # unpatched


def fresh_lookup(bm: PrefixCachingBlockManager, keys: ChainKeys) -> list[int]:
    """The cache's answer, from nothing remembered."""
    return LOOKUP(bm, ChainKeys(keys.shared, keys.num_blocks, PrivateChain("fresh")))


@pytest.fixture
def bm() -> PrefixCachingBlockManager:
    """8 blocks of 4 tokens: KEYS' 4 blocks cached and free (evictable, deepest first), 4 plain free."""
    bm = PrefixCachingBlockManager(num_gpu_blocks=8, block_size=4)
    bm.allocate("holder", 16, ChainKeys(KEYS, 4, PrivateChain("holder")))
    bm.free("holder")
    return bm


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many registry walks lookups made."""
    calls = [0]
    walk = memory.chain_registry.walk

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return walk(*args, **kwargs)

    monkeypatch.setattr(memory.chain_registry, "walk", counted)
    return calls


def test_a_remembered_answer_is_reused_without_a_walk_while_no_block_was_evicted(bm, walks) -> None:
    chain = PrivateChain("beam")
    three = bm.find_cached_prefix(ChainKeys(KEYS, 3, chain))
    assert len(three) == 3 and walks[0] == 1
    bm.allocate("plain", 12)  # takes plain blocks only: nothing evicted
    assert bm.find_cached_prefix(ChainKeys(KEYS, 2, chain)) == three[:2]
    assert bm.find_cached_prefix(ChainKeys(KEYS, 3, chain)) == three
    assert walks[0] == 1
    four = bm.find_cached_prefix(ChainKeys(KEYS, 4, chain))
    assert walks[0] == 2  # more keys than the answer covered: the walk goes on past it
    assert four == fresh_lookup(bm, ChainKeys(KEYS, 4, chain)) and four[:3] == three


def test_a_remembered_answer_survives_the_allocation(bm, walks) -> None:
    chain = PrivateChain("beam")
    keys = ChainKeys(KEYS, 3, chain)
    assert bm.allocate("round 1", 12, keys) == 12 and walks[0] == 1
    assert bm.find_cached_prefix(keys) == bm.block_table("round 1") and walks[0] == 1


def test_a_remembered_answer_is_not_reused_after_an_eviction(bm) -> None:
    chain = PrivateChain("beam")
    before = bm.find_cached_prefix(ChainKeys(KEYS, 3, chain))
    bm.allocate("plain", 24)  # 4 plain blocks, then 2 cached ones evicted (the chain's last two)
    after = bm.find_cached_prefix(ChainKeys(KEYS, 3, chain))
    assert after == fresh_lookup(bm, ChainKeys(KEYS, 3, chain)) == before[:2]


def test_a_remembered_answer_is_extended_by_a_later_registration(bm) -> None:
    chain = PrivateChain("beam")
    keys = KEYS + (("beam", 0, 4),)
    assert len(bm.find_cached_prefix(ChainKeys(keys, 5, chain))) == 4  # the fifth is not cached
    bm.allocate("longer", 20, list(keys))  # registers the fifth, evicting nothing
    assert bm.find_cached_prefix(ChainKeys(keys, 5, chain)) == bm.block_table("longer")


def test_the_answer_kept_across_an_allocation_is_checked_after_an_eviction(bm) -> None:
    # A round's request allocates its hits; the next round's, after evictions, must not get the old blocks.
    keys = ChainKeys(KEYS, 3, PrivateChain("beam"))
    bm.allocate("round 1", 12, keys)
    bm.free("round 1")
    bm.allocate("plain", 28)  # evicts 3 of the 4 cached blocks
    assert bm.find_cached_prefix(keys) == fresh_lookup(bm, keys) and len(bm.find_cached_prefix(keys)) == 1
    bm.allocate("round 2", 4, keys.head(1))
    assert bm.block_table("round 2") == fresh_lookup(bm, keys)


def test_every_round_allocation_under_evictions_takes_the_blocks_a_fresh_lookup_finds(monkeypatch) -> None:
    # Beam requests on a small pool: rounds evict each other's cached blocks. Every allocation's hits are
    # compared with a lookup that remembers nothing, and both ways of answering are exercised.
    allocate, lookup = PrefixCachingBlockManager.allocate, PrefixCachingBlockManager.find_cached_prefix
    seen = {"allocations": 0, "remembered": 0, "looked_up": 0}

    def checked_allocate(self, seq_id, num_tokens, block_keys=None, defer_private=False):
        expected = fresh_lookup(self, block_keys) if type(block_keys) is ChainKeys else []
        cached = allocate(self, seq_id, num_tokens, block_keys, defer_private)
        assert self.block_table(seq_id)[:len(expected)] == expected and cached == len(expected) * self.block_size
        seen["allocations"] += 1
        return cached

    def checked_lookup(self, keys):
        memo = keys.chain.memo if type(keys) is ChainKeys else None
        reused = memo is not None and memo[0] is keys.shared and memo[3] == self.num_evicted_blocks \
            and keys.num_shared <= len(memo[1])
        seen["remembered" if reused else "looked_up"] += 1
        hits = lookup(self, keys)
        if type(keys) is ChainKeys:
            assert hits == fresh_lookup(self, keys)
        return hits

    monkeypatch.setattr(PrefixCachingBlockManager, "allocate", checked_allocate)
    monkeypatch.setattr(PrefixCachingBlockManager, "find_cached_prefix", checked_lookup)
    reqs = [Request(f"b{i}", 0.002 * i, 60 + 37 * i, 40 + 9 * i, n=4, sampling="beam") for i in range(5)]
    reqs += [Request(f"g{i}", 0.003 * i, 200 + 50 * i, 80) for i in range(3)]
    result = replay(Trace(reqs), EngineConfig(num_gpu_blocks=90, max_num_batched_tokens=256, max_num_seqs=12,
                                              check_every=1), policy="vllm", seed=3)
    assert (result.requests["status"] == "finished").all()
    assert result.summary["prefix_evicted_blocks"] > 0
    assert seen["allocations"] > 200 and seen["remembered"] > 50 and seen["looked_up"] > 50
