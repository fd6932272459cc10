"""Prefix caching of output blocks, and the compact cache against a straightforward reference.

Every full block a request computed - prompt and output - is cached when its blocks are released (vLLM V1
hashes each full block; V0's block manager did too), so a request preempted by recompute finds its own
prompt and output again unless they were evicted meanwhile. The simulator's cache keys a request's own
blocks compactly (`memory.block_keys.ChainKeys`), registers them only when released, and leaves a finished
request's blocks plain while no reachable cached block is free; `ReferenceManager` does none of that -
every key listed, registered in the registry at allocation, finished blocks always cached - and replays
must come out identical.
"""
from __future__ import annotations

import pytest
from test_sim_prefix import prefix_trace

import sim.kv_paged
from memory import PrefixCachingBlockManager
from memory.block_keys import ChainKeys
from sim import EngineConfig, replay
from sim.kv_prefix import PrefixCache
from traces import Request, Trace

BS = 16


@pytest.mark.parametrize("policy", ["vllm", "vllm-v0"])
@pytest.mark.parametrize(("pool", "a_output"), [(31, 90), (30, 100)])
def test_a_resumed_request_hits_its_own_prompt_and_output_blocks(policy: str, pool: int, a_output: int) -> None:
    # a and b (160-token prompts) grow until they need their 16th block; b (the later one) is preempted
    # with 15 full blocks. With 31 blocks a takes the one free block and finishes within it; with 30 it
    # takes blocks from the free queue, where only b's cached blocks are: the least recently used, b's
    # last blocks, are evicted first.
    # No CPU pool (vllm-v0 has one for forked groups): private blocks are then registered on release, so
    # the evictions counted are b's alone.
    reqs = [Request("a", 0.0, 160, a_output), Request("b", 0.0, 160, 300)]
    result = replay(Trace(reqs), EngineConfig(num_gpu_blocks=pool, enable_prefix_caching=True, check_every=1,
                                              swap_space_gib=0.0), policy=policy)
    b = result.requests.set_index("request_id").loc["b"]
    s = result.summary
    assert b.preemptions == 1 and b.status == "finished"
    hit, evicted = s["prefix_hit_tokens"], s["prefix_evicted_blocks"]
    resumed = hit + b.recomputed_tokens  # b's prompt and output when preempted
    assert resumed > 160 + BS  # it had generated more than a block
    # Its computed full blocks (all but the last token has KV) minus the evicted ones, tail first.
    assert hit == ((resumed - 1) // BS - evicted) * BS
    assert hit > (160 - 1) // BS * BS  # more than its prompt's blocks: output blocks hit
    assert (evicted == 0) == (pool == 31)


class ReferenceManager(PrefixCachingBlockManager):
    """Every key listed and registered at allocation; finished requests' blocks always cached."""

    def __init__(self, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kw)
        self._gpu.unreachable_plain = False

    @staticmethod
    def _listed(keys):  # type: ignore[no-untyped-def]
        return keys.listed() if type(keys) is ChainKeys else keys

    def find_cached_prefix(self, block_keys):  # type: ignore[no-untyped-def]
        return super().find_cached_prefix(self._listed(block_keys))

    def num_blocks_to_allocate(self, num_tokens, block_keys=None):  # type: ignore[no-untyped-def]
        return super().num_blocks_to_allocate(num_tokens, self._listed(block_keys))

    def allocate(self, seq_id, num_tokens, block_keys=None, defer_private=False):  # type: ignore[no-untyped-def]
        return super().allocate(seq_id, num_tokens, self._listed(block_keys))

    def cache_full_blocks(self, seq_id, block_keys, reachable=True):  # type: ignore[no-untyped-def]
        return super().cache_full_blocks(seq_id, self._listed(block_keys), reachable)


class EagerPrefixCache(PrefixCache):
    """Registers every block at allocation (pending until computed), as `ReferenceManager` does."""

    def __init__(self, bm, block_size: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(bm, block_size, lazy=False)


def hash_id_trace() -> Trace:
    """Mooncake-style requests: three families of hash ids, prompts of 700-1500 tokens."""
    reqs = []
    for i in range(40):
        family = i % 3
        prompt = 700 + 20 * i
        ids = tuple([100 + family, 200 + family] + [1000 + i * 10 + j for j in range(prompt // 512)])
        reqs.append(Request(f"m{i}", 0.05 * i, prompt, 40 + 7 * i, hash_ids=ids[: -(-prompt // 512)]))
    return Trace(reqs)


@pytest.mark.parametrize("policy", ["vllm", "vllm-v0", "sglang", "vllm-swap", "sarathi"])
@pytest.mark.parametrize("which", ["prefix", "hash_ids"])
def test_compact_cache_replays_like_the_reference(policy: str, which: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    trace = prefix_trace(60, seed=5) if which == "prefix" else hash_id_trace()
    config = EngineConfig(num_gpu_blocks=260, enable_prefix_caching=True, check_every=7)
    fast = replay(trace, config, policy=policy, seed=1)
    monkeypatch.setattr(sim.kv_paged, "PrefixCachingBlockManager", ReferenceManager)
    monkeypatch.setattr(sim.kv_paged, "PrefixCache", EagerPrefixCache)
    ref = replay(trace, config, policy=policy, seed=1)
    assert fast.summary["preemptions"] > 0 and fast.summary["prefix_hit_tokens"] > 0
    assert fast.requests.equals(ref.requests)
    assert fast.steps.equals(ref.steps)
    for key in ("prefix_hit_tokens", "prefix_hit_requests", "preemptions", "recomputed_tokens"):
        assert fast.summary[key] == ref.summary[key], key
