"""The models `test_memory_prefix_stateful.py` holds a `PrefixCachingBlockManager` against.

`CacheModel`: the prefix cache, predicted from the manager's operations alone. Which key chains are
registered to which block, and the evictor's LRU order: revivals leave it, released cached blocks join it
tail first, so do touched ones (a lookup's free hits used without being taken), allocations beyond the plain-free blocks evict from its front; down to its segments
(`memory.free_queue`): the blocks one release put at the tail form one segment, less those revived or
evicted since. Also the cache's counters (evictions, revivals, queries and hits). The machine tells it
what each operation did; `check` holds a manager against it.

`ChainTokens`: the tokens written, for the slot model (`memory_shadow`): a prompt's keyed blocks hold
tokens derived from the whole chain of keys up to them, every other token is fresh, so a block shared or
revived for the wrong chain reads back wrong tokens.

Imported as a plain module, as `memory_shadow` is.
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

Chain = tuple[Hashable, ...]


class CacheModel:
    def __init__(self) -> None:
        self.block_of: dict[Chain, int] = {}   # registered chain -> its block
        self.chain_of: dict[int, Chain] = {}   # cached block -> its chain
        self.segments: list[list[int]] = []    # the evictable blocks in LRU order, by release
        self.counts = dict(evicted=0, revived=0, queries=0, hits=0, query_tokens=0, hit_tokens=0)

    @property
    def lru(self) -> list[int]:
        return [b for segment in self.segments for b in segment]

    def hits(self, keys: Sequence[Hashable]) -> list[int]:
        """The blocks of the longest registered prefix of `keys`' chain, in order."""
        hits: list[int] = []
        while len(hits) < len(keys) and tuple(keys[: len(hits) + 1]) in self.block_of:
            hits.append(self.block_of[tuple(keys[: len(hits) + 1])])
        return hits

    def plain_free(self, bm: Any) -> set[int]:
        """Free GPU blocks that hold no cached chain (taken before any eviction)."""
        return {b for b in range(bm.num_gpu_blocks) if bm.refcount(b) == 0 and b not in self.chain_of}

    def allocated(self, keys: Sequence[Hashable], table: list[int], num_hits: int, num_tokens: int,
                  cached: int) -> None:
        """A prompt of `num_tokens` with `keys` got `table`, its first `num_hits` blocks (`cached` tokens)
        found in the cache: the rest of its keyed blocks are registered; a query, a hit if `cached`."""
        for i in range(num_hits, len(keys)):
            self.block_of[tuple(keys[: i + 1])] = table[i]
            self.chain_of[table[i]] = tuple(keys[: i + 1])
        self.counts["queries"] += 1
        self.counts["query_tokens"] += num_tokens
        if cached:
            self.counts["hits"] += 1
            self.counts["hit_tokens"] += cached

    def evict(self, count: int) -> list[int]:
        """An operation took `count` blocks beyond the plain-free ones: the LRU front goes."""
        gone: list[int] = []
        while len(gone) < count:
            segment = self.segments[0]
            take = min(count - len(gone), len(segment))
            gone += segment[:take]
            del segment[:take]
            if not segment:
                del self.segments[0]
        for block in gone:
            del self.block_of[self.chain_of.pop(block)]
        self.counts["evicted"] += count
        return gone

    def revive(self, block: int) -> None:
        """A cached block taken again: if evictable, it leaves its segment (which goes when empty)."""
        for k, segment in enumerate(self.segments):
            if block in segment:
                segment.remove(block)
                if not segment:
                    del self.segments[k]
                self.counts["revived"] += 1
                return

    def touch(self, blocks: list[int]) -> None:
        """A lookup's evictable hits, in chain order, used without being taken: they leave their segments
        and join the LRU tail as one, deepest first (not a revival)."""
        for block in blocks:
            k = next(k for k, segment in enumerate(self.segments) if block in segment)
            self.segments[k].remove(block)
            if not self.segments[k]:
                del self.segments[k]
        if blocks:
            self.segments.append(blocks[::-1])

    def release_cached(self, blocks: list[int], together: bool = True) -> None:
        """These blocks lost their last reference, in this order; the cached ones join the LRU tail,
        `together`: in one release (one segment), else one by one."""
        cached = [b for b in blocks if b in self.chain_of]
        if together and cached:
            self.segments.append(cached)
        elif cached:
            self.segments += [[b] for b in cached]

    def check(self, bm: Any) -> None:
        """`bm`'s cache is this one: the same chains and blocks, LRU order, segments and counters."""
        assert bm.evictable_blocks() == self.lru and bm.num_cached_blocks == len(self.lru)
        assert bm._gpu._queue.segments_in_order() == self.segments
        assert {b for b in range(bm.num_gpu_blocks) if bm.is_cached(b)} == set(self.chain_of)
        for chain in self.block_of:
            assert bm.find_cached_prefix(list(chain)) == [self.block_of[chain[: i + 1]] for i in range(len(chain))]
        c = self.counts
        assert (bm.num_evicted_blocks, bm.num_revived_blocks) == (c["evicted"], c["revived"])
        assert (bm.num_prefix_queries, bm.num_prefix_hits, bm.num_prefix_query_tokens,
                bm.num_prefix_hit_tokens) == (c["queries"], c["hits"], c["query_tokens"], c["hit_tokens"])


class ChainTokens:
    def __init__(self, block_size: int) -> None:
        self.bs = block_size
        self.of_chain: dict[tuple[Chain, int], int] = {}  # (chain, offset in its block) -> token
        self.last = 0

    def fresh(self) -> int:
        self.last += 1
        return self.last

    def prompt(self, keys: Sequence[Hashable], num_tokens: int) -> list[int]:
        """Tokens of a prompt: keyed blocks derive from their chain of keys, the rest are fresh."""
        toks = []
        for i in range(len(keys)):
            chain = tuple(keys[: i + 1])
            for off in range(self.bs):
                if (chain, off) not in self.of_chain:
                    self.of_chain[chain, off] = self.fresh()
                toks.append(self.of_chain[chain, off])
        return toks + [self.fresh() for _ in range(num_tokens - len(toks))]
