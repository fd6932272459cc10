"""Automatic prefix caching over the block manager: full prompt blocks are shared by content.

`allocate(seq, n, block_keys)` takes one key per full block of the prompt (its token ids, or any key
standing for them: a prefix group's `("g7", i)`, a Mooncake hash id). A block's identity is its key
chained over the blocks before it (see `memory.evictor`), so two prompts share block i only if they agree
on blocks 0..i. The longest cached prefix is reused: a live block gets one more reference, an evictable
one (freed but still cached) is revived. The remaining blocks are fresh, and those with a key are
registered so that later prompts can reuse them.

Composition: the manager is a `BlockManager` over a `CachingBlockAllocator` GPU pool
(`memory.evictor`), which keeps the one free queue (released cached blocks stay in it, reusable, and are
evicted when an allocation reaches them), the hash registry, and the release order (a sequence's cached
blocks tail first, so a chain's tail is evicted before its head). Appends, copy-on-write, fork, free and
swap are the base class's, unchanged: they only ask the pool for blocks. This class adds the keyed
allocation and its admission count. Only full blocks are cached; they are never written again, so appends
into a shared cached block cannot happen (the next token opens a new block).

Swap: swapping out moves the listed sequences' blocks to the CPU as usual, except that a cached block may
also be held by sequences outside the request (prompts of one prefix group are not a forked family): it
gets a CPU copy and the GPU block loses the request's references, staying live for the others or becoming
evictable. CPU blocks carry no hash: a sequence swapped back in holds private, uncached copies.
"""
from __future__ import annotations

from typing import Hashable, Sequence

from memory.block_allocator import NoFreeBlocksError, _check_count, num_live_leading
from memory.block_manager import AllocStatus, BlockManager
from memory.block_keys import ChainKeys
from memory.evictor import ROOT, CachingBlockAllocator
from memory.prefix_invariants import check_prefix_invariants
from memory.types import SeqBlocks, SeqId

BlockKeys = Sequence[Hashable]


class PrefixCachingBlockManager(BlockManager):
    """`BlockManager` whose full prompt blocks are cached by content and reused across sequences."""

    _gpu: CachingBlockAllocator

    def __init__(
        self, num_gpu_blocks: int, block_size: int, num_cpu_blocks: int = 0, watermark: float = 0.0
    ) -> None:
        _check_count("num_gpu_blocks", num_gpu_blocks, 1)
        super().__init__(num_gpu_blocks, block_size, num_cpu_blocks, watermark,
                         gpu_pool=CachingBlockAllocator(num_gpu_blocks))
        self.num_prefix_queries = 0        # successful allocations
        self.num_prefix_hits = 0           # ... that reused at least one cached block
        self.num_prefix_query_tokens = 0   # prompt tokens allocated
        self.num_prefix_hit_tokens = 0     # ... of which were found in the cache

    # ---- counters ----------------------------------------------------------------------------------
    @property
    def num_cached_blocks(self) -> int:
        """Evictable GPU blocks: free but still reusable."""
        return self._gpu.num_cached_blocks

    @property
    def num_evicted_blocks(self) -> int:
        return self._gpu.num_evicted_blocks

    @property
    def num_revived_blocks(self) -> int:
        return self._gpu.num_revived_blocks

    @property
    def prefix_hit_rate(self) -> float:
        """Share of allocated prompt tokens that were found in the cache (0.0 before any allocation)."""
        if not self.num_prefix_query_tokens:
            return 0.0
        return self.num_prefix_hit_tokens / self.num_prefix_query_tokens

    @property
    def gpu_refcounts(self) -> Sequence[int]:
        """Every GPU block's refcount, by id (read only: the pool's own list, for hot paths)."""
        return self._gpu_refcounts

    # ---- queries -----------------------------------------------------------------------------------
    def num_cached_tokens(self, seq_id: SeqId) -> int:
        """Prompt tokens that `allocate` found cached for this sequence (a scheduler skips their
        prefill); 0 for forked children and sequences allocated without keys."""
        return self._lookup(seq_id).num_cached_tokens

    def is_cached(self, block: int) -> bool:
        """Whether a GPU block is registered in the prefix cache (live or evictable)."""
        return self._gpu.is_cached(block)

    def evictable_blocks(self) -> list[int]:
        """Evictable GPU blocks, next to be evicted first (O(free blocks): tests and debugging)."""
        return self._gpu.evictable_blocks()

    def find_cached_prefix(self, block_keys: BlockKeys) -> list[int]:
        """The GPU blocks of the longest cached prefix of `block_keys`; changes nothing."""
        keys = self._checked_keys(block_keys, None)
        return self._gpu.match_chain(keys) if type(keys) is ChainKeys else self._gpu.match(keys)

    def num_blocks_to_allocate(self, num_tokens: int, block_keys: BlockKeys | None = None) -> int:
        """Blocks `allocate` would take from the free pool: the prompt's blocks minus the cached ones
        that are live (a revived block leaves the pool too, so it counts)."""
        _check_count("num_tokens", num_tokens, 0)
        keys = self._checked_keys(block_keys, num_tokens)
        rc = self._gpu_refcounts
        hits = self._gpu.match_chain(keys) if type(keys) is ChainKeys else self._gpu.match(keys)
        return self.num_required_blocks(num_tokens) - num_live_leading(rc, hits)

    def touch_cached_prefix(self, block_keys: BlockKeys) -> int:
        """The longest cached prefix of `block_keys` is used now, not taken: its evictable blocks become the
        most recently used, deepest first (evicted after every other evictable block, a chain's tail still
        before its head). SGLang's scheduler refreshes a waiting request's cached prefix this way
        (`touch_prefix`/`match_prefix`). Returns how many blocks moved in the eviction order."""
        keys = self._checked_keys(block_keys, None)
        gpu = self._gpu
        return gpu.touch(gpu.match_chain(keys) if type(keys) is ChainKeys else gpu.match(keys))

    # ---- allocate ----------------------------------------------------------------------------------
    def can_allocate(self, num_tokens: int, block_keys: BlockKeys | None = None) -> AllocStatus:
        take = self.num_blocks_to_allocate(num_tokens, block_keys)
        # NEVER is about an empty pool, where nothing is cached: the whole prompt must fit.
        if self._gpu.num_blocks - self.num_required_blocks(num_tokens) < self.watermark_blocks:
            return AllocStatus.NEVER
        if self._gpu.num_free_blocks - take >= self.watermark_blocks:
            return AllocStatus.OK
        return AllocStatus.LATER

    def allocate(self, seq_id: SeqId, num_tokens: int, block_keys: BlockKeys | None = None,
                 defer_private: bool = False) -> int:
        """Blocks for a prompt of `num_tokens`, reusing the longest cached prefix of `block_keys` (one
        key per full block from the first; fewer keys cache fewer blocks). Returns the number of
        cached tokens (whole blocks, possibly all of the prompt). Raises `NoFreeBlocksError` (changing
        nothing) if the blocks it must take do not fit. `defer_private` (with `ChainKeys`): the new
        private blocks are not registered now but by `cache_full_blocks` before they are released -
        the same cache, for a caller that looks its own keys up only once it has freed them."""
        _check_count("num_tokens", num_tokens, 0)
        keys = () if block_keys is None else self._checked_keys(block_keys, num_tokens)
        if seq_id in self._gpu_seqs or seq_id in self._cpu_seqs:
            raise ValueError(f"sequence {seq_id!r} already exists")
        gpu, bs = self._gpu, self.block_size
        required = -(-num_tokens // bs)
        compact = type(keys) is ChainKeys
        hits = (gpu.match_chain(keys) if compact else gpu.match(keys)) if keys else []
        rc = self._gpu_refcounts
        live = num_live_leading(rc, hits)
        if required - live > gpu.num_free_blocks:
            raise NoFreeBlocksError(
                f"prompt of {num_tokens} tokens needs {required - live} blocks "
                f"({len(hits)} of {required} cached, {live} live), {gpu.num_free_blocks} free"
            )
        if hits:  # revive before allocating, so that no eviction can take a hit
            gpu.acquire_many(hits)
        new = gpu.allocate_many(required - len(hits))
        if len(keys) > len(hits):
            parent = gpu.node_of(hits[-1]) if hits else ROOT
            if compact:
                if defer_private:
                    keys = keys.head(min(len(keys), len(keys.shared)))  # type: ignore[union-attr]
                if len(keys) > len(hits):
                    gpu.register_keys(new, len(hits), parent, keys)  # type: ignore[arg-type]
            else:
                gpu.register_chain(new, parent, keys[len(hits):])
        cached = len(hits) * bs
        self._gpu_seqs[seq_id] = SeqBlocks(hits + new if hits else new, num_tokens, cached)
        self._gpu_filled_slots += num_tokens - live * bs  # live hits were already counted as filled
        self.num_prefix_queries += 1
        self.num_prefix_query_tokens += num_tokens
        if hits:
            self.num_prefix_hits += 1
            self.num_prefix_hit_tokens += cached
        return cached

    # ---- caching a sequence's later blocks ---------------------------------------------------------
    def forget_private(self, block_keys: BlockKeys) -> int:
        """The sequence keyed by `block_keys` is done for good: its private blocks still cached can never be
        hit again (`CachingBlockAllocator.forget_chain`). Listed keys have no chain: nothing to do. Returns
        the blocks that became unreachable."""
        if type(block_keys) is not ChainKeys or not block_keys.chain.blocks:
            return 0
        return self._gpu.forget_chain(block_keys.chain)

    def cache_full_blocks(self, seq_id: SeqId, block_keys: BlockKeys,
                          reachable: bool = True) -> tuple[int, list[int]]:
        """Register the sequence's blocks that `block_keys` names beyond its leading cached ones, up to
        the first block already cached: its output once computed (vLLM V1 hashes every full block of
        prompt and output), or the private blocks an allocation deferred. Nothing if the first key is
        registered to another block (private keys: the chain holds a live block there, or the block
        before is not the chain's). `reachable=False`: cache them unreachable instead (a finished
        request: they join the free queue's tail and are evicted in turn, as V1 keeps every hashed
        block, but nobody looks them up; see `CachingBlockAllocator.mark_unreachable`). Returns the
        position of the first block and the blocks registered."""
        seq = self._on_gpu(seq_id)
        keys = self._checked_keys(block_keys, seq.num_tokens)
        gpu, blocks = self._gpu, seq.blocks
        num_keys = len(keys)
        start = gpu.num_cached_leading(blocks, num_keys)  # cached blocks lead the table
        if start == num_keys:
            return start, []
        new = blocks[start:num_keys]
        if not reachable:
            return start, new if gpu.mark_unreachable(new) else []
        parent = gpu.node_of(blocks[start - 1]) if start else ROOT
        parent_block = blocks[start - 1] if start else None
        if type(keys) is ChainKeys and start < keys.num_shared:
            if gpu.child_registered(parent_block, keys.shared[start]):
                return start, []
            gpu.register_keys(new, start, parent, keys)
        elif type(keys) is ChainKeys:
            s = len(keys.shared)
            chain = keys.chain
            i = start - s  # the chain's index of `start`
            if i and (len(chain.blocks) < i or chain.blocks[i - 1] != blocks[start - 1]):
                return start, []  # the blocks before are not the chain's
            if (i < len(chain.blocks) and gpu.node_of(chain.blocks[i]) == chain.nodes[i]
                    and (i or chain.parent == parent)):
                return start, []  # the chain already has a block there (a copy of this one was cached)
            gpu.register_keys(new, start, parent, keys)  # type: ignore[arg-type]
        else:
            if gpu.child_registered(parent_block, keys[start]):
                return start, []
            gpu.register_chain(new, parent, keys[start:num_keys])
        return start, new

    # ---- keys and lookups --------------------------------------------------------------------------
    def _checked_keys(self, block_keys: BlockKeys | None, num_tokens: int | None) -> BlockKeys:
        """Validated keys (all checked before any use, so that a bad one cannot fail half-way). Compact
        `ChainKeys` were built checked: only their count is."""
        if block_keys is None:
            return ()
        if type(block_keys) is ChainKeys:
            if num_tokens is not None and block_keys.num_blocks > num_tokens // self.block_size:
                raise ValueError(
                    f"block_keys: {block_keys.num_blocks} keys for a sequence of {num_tokens} tokens, which "
                    f"has {num_tokens // self.block_size} full blocks of {self.block_size}"
                )
            return block_keys
        if isinstance(block_keys, (str, bytes)) or not isinstance(block_keys, Sequence):
            raise ValueError(
                f"block_keys: must be a sequence of hashable keys, one per full block, "
                f"got {type(block_keys).__name__}"
            )
        if num_tokens is not None and len(block_keys) > num_tokens // self.block_size:
            raise ValueError(
                f"block_keys: {len(block_keys)} keys for a prompt of {num_tokens} tokens, which has "
                f"{num_tokens // self.block_size} full blocks of {self.block_size}"
            )
        for i, key in enumerate(block_keys):
            try:
                hash(key)
            except TypeError:
                raise ValueError(f"block_keys: key {i} ({type(key).__name__}) is not hashable") from None
        return block_keys

    def check_invariants(self) -> None:
        """The base checks with the GPU pool's free queue and registry (see `memory.prefix_invariants`)."""
        check_prefix_invariants(self)

    def __repr__(self) -> str:
        return (
            f"PrefixCachingBlockManager(gpu {self.num_free_gpu_blocks}/{self.num_gpu_blocks} free "
            f"({self.num_cached_blocks} cached), cpu {self.num_free_cpu_blocks}/{self.num_cpu_blocks} free, "
            f"block_size={self.block_size}, seqs={len(self._gpu_seqs)} on gpu + "
            f"{len(self._cpu_seqs)} swapped, hit rate {self.prefix_hit_rate:.1%})"
        )
