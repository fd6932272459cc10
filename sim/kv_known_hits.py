"""Prefix-cache answers remembered for keys that many requests look up: vLLM V1's beam-search rounds.

Every round's request of a beam (`sim.v1_beam_search`) looks up its beam's keys, and the beams of a round,
and the next rounds' that filled no new block, have the very same keys: one lookup walks the whole chain
(one registry piece per beam block, each registered by the round that filled it). Such requests share one
`SharedChain` (`sim.kv_paged_chunked.ChunkedPagedKV.assign_beam_keys`), which keeps two answers:

- its own, `hits`: the blocks of the longest cached prefix of the keys, as of `evictions`. A registered
  block leaves the cache only when it is evicted (`num_evicted_blocks` counts every one a lookup could
  find), and a registration never changes the blocks of an answer, only adds past its end. So while no
  block was evicted, the answer for the first m keys is the first m of `hits` if it has that many: no
  lookup at all.
- the block manager's (`PrivateChain.memo`, which the lookup checks against the registry and goes on
  from), kept across the allocation that drops it (`allocate_hits`): the allocation's own lookup, and the
  next round's when an eviction came first, resume from it instead of walking the chain again.

`tests/test_sim_vllm_beam.py` checks every allocation of a replay with evictions against a fresh lookup.
"""
from __future__ import annotations

from memory import PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain


class SharedChain(PrivateChain):
    """The `PrivateChain` of every request with one key tuple that covers its whole prompt (no private
    block is ever registered on it), with the last answer for those keys."""

    __slots__ = ("hits", "evictions")

    def __init__(self, owner: object) -> None:
        super().__init__(owner)
        self.hits: list[int] = []
        self.evictions = -1  # `num_evicted_blocks` when `hits` was found (-1: never looked up)


def cached_prefix(bm: PrefixCachingBlockManager, keys: ChainKeys) -> list[int]:
    """`bm.find_cached_prefix(keys)`, from the remembered answer of a `SharedChain` where it still holds."""
    chain = keys.chain if type(keys) is ChainKeys else None
    if type(chain) is not SharedChain:
        return bm.find_cached_prefix(keys)
    n, hits = keys.num_blocks, chain.hits
    if chain.evictions == bm.num_evicted_blocks and n <= len(hits):
        return hits[:n] if n < len(hits) else hits
    hits = chain.hits = bm.find_cached_prefix(keys)
    chain.evictions = bm.num_evicted_blocks
    return hits


def allocate_hits(bm: PrefixCachingBlockManager, seq_id: int, keys: ChainKeys, ready: int) -> None:
    """Allocate the sequence's first `ready` blocks: its computed prefix hits (`keys`' first `ready`).
    A `SharedChain` keeps the block manager's last answer, which the allocation drops: the next request
    with these keys resumes from it."""
    chain = keys.chain
    memo = chain.memo
    cached = bm.allocate(seq_id, ready * bm.block_size, keys.head(ready))
    assert cached == ready * bm.block_size, "the allocation found other hits than the lookup just before"
    if type(chain) is SharedChain:
        chain.memo = memo
