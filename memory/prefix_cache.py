"""Automatic prefix caching over the block manager: full prompt blocks are shared by content.

`allocate(seq, n, block_keys)` takes one key per full block of the prompt (its token ids, or any key
standing for them: a prefix group's `("g7", i)`, a Mooncake hash id). A block's identity is its key
chained over the blocks before it (see `memory.evictor`), so two prompts share block i only if they agree
on blocks 0..i. The longest cached prefix is reused: a live block gets one more reference, an evictable
one (freed but still cached) is revived. The remaining blocks are fresh, and those with a key are
registered so that later prompts can reuse them.

Freed cached blocks go to an LRU evictor instead of the free list: they still count as free, and an
allocation that finds no plain-free block evicts the least recently used one. A sequence releases its
cached blocks tail first, so a chain's tail is always evicted before its head (no cached block outlives
its parent). Only full blocks are cached; they are never written again, so appends into a shared cached
block cannot happen (the next token opens a new block) and copy-on-write stays the base class's.

Swap: swapping out moves the listed sequences' blocks to the CPU as usual, except that a cached block may
also be held by sequences outside the request (prompts of one prefix group are not a forked family): it
gets a CPU copy and the GPU block loses the request's references, staying live for the others or becoming
evictable. CPU blocks carry no hash: a sequence swapped back in holds private, uncached copies.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Sequence

from memory.block_allocator import NoFreeBlocksError, _check_count
from memory.block_manager import AllocStatus, BlockManager, Copies, SeqId, _Seq
from memory.evictor import ROOT, CachingBlockAllocator
from memory.prefix_invariants import check_prefix_invariants
from memory.swap import collect_family, move_family

BlockKeys = Sequence[Hashable]


class PrefixCachingBlockManager(BlockManager):
    """`BlockManager` whose full prompt blocks are cached by content and reused across sequences."""

    def __init__(
        self, num_gpu_blocks: int, block_size: int, num_cpu_blocks: int = 0, watermark: float = 0.0
    ) -> None:
        super().__init__(num_gpu_blocks, block_size, num_cpu_blocks, watermark)
        self._gpu: CachingBlockAllocator = CachingBlockAllocator(num_gpu_blocks)
        self._gpu_refcounts = self._gpu._refcounts  # the base class's hot-path alias, re-pointed
        self._cached_tokens: dict[SeqId, int] = {}  # only sequences that got a hit
        self.num_prefix_queries = 0        # successful allocations
        self.num_prefix_hits = 0           # ... that reused at least one cached block
        self.num_prefix_query_tokens = 0   # prompt tokens allocated
        self.num_prefix_hit_tokens = 0     # ... of which were found in the cache

    # ---- counters ----------------------------------------------------------------------------------
    @property
    def num_free_gpu_blocks(self) -> int:
        """Plain-free plus evictable GPU blocks."""
        return self._gpu.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Evictable GPU blocks: unreferenced but still reusable."""
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

    # ---- queries -----------------------------------------------------------------------------------
    def num_cached_tokens(self, seq_id: SeqId) -> int:
        """Prompt tokens that `allocate` found cached for this sequence (a scheduler skips their
        prefill); 0 for forked children and sequences allocated without keys."""
        self._lookup(seq_id)
        return self._cached_tokens.get(seq_id, 0)

    def is_cached(self, block: int) -> bool:
        """Whether a GPU block is registered in the prefix cache (live or evictable)."""
        return self._gpu.hash_of(block) is not None

    def evictable_blocks(self) -> list[int]:
        """Evictable GPU blocks, next to be evicted first (O(evictable): tests and debugging)."""
        return self._gpu.evictable_blocks()

    def find_cached_prefix(self, block_keys: BlockKeys) -> list[int]:
        """The GPU blocks of the longest cached prefix of `block_keys`; changes nothing."""
        return self._match(self._checked_keys(block_keys, None))

    def num_blocks_to_allocate(self, num_tokens: int, block_keys: BlockKeys | None = None) -> int:
        """Blocks `allocate` would take from the free pool: the prompt's blocks minus the cached ones
        that are live (a revived block leaves the pool too, so it counts)."""
        _check_count("num_tokens", num_tokens, 0)
        keys = self._checked_keys(block_keys, num_tokens)
        rc = self._gpu_refcounts
        return self.num_required_blocks(num_tokens) - sum(1 for b in self._match(keys) if rc[b])

    # ---- allocate / append / free ------------------------------------------------------------------
    def can_allocate(self, num_tokens: int, block_keys: BlockKeys | None = None) -> AllocStatus:
        take = self.num_blocks_to_allocate(num_tokens, block_keys)
        # NEVER is about an empty pool, where nothing is cached: the whole prompt must fit.
        if self._gpu.num_blocks - self.num_required_blocks(num_tokens) < self.watermark_blocks:
            return AllocStatus.NEVER
        if self._gpu.num_free_blocks - take >= self.watermark_blocks:
            return AllocStatus.OK
        return AllocStatus.LATER

    def allocate(self, seq_id: SeqId, num_tokens: int, block_keys: BlockKeys | None = None) -> int:
        """Blocks for a prompt of `num_tokens`, reusing the longest cached prefix of `block_keys` (one
        key per full block from the first; fewer keys cache fewer blocks). Returns the number of
        cached tokens (whole blocks, possibly all of the prompt). Raises `NoFreeBlocksError` (changing
        nothing) if the blocks it must take do not fit."""
        _check_count("num_tokens", num_tokens, 0)
        keys = () if block_keys is None else self._checked_keys(block_keys, num_tokens)
        if seq_id in self._gpu_seqs or seq_id in self._cpu_seqs:
            raise ValueError(f"sequence {seq_id!r} already exists")
        gpu, bs = self._gpu, self.block_size
        required = -(-num_tokens // bs)
        hits = self._match(keys) if keys else []
        rc = self._gpu_refcounts
        live = sum(1 for b in hits if rc[b]) if hits else 0
        if required - live > len(gpu._free) + len(gpu._evictor):
            raise NoFreeBlocksError(
                f"prompt of {num_tokens} tokens needs {required - live} blocks "
                f"({len(hits)} of {required} cached, {live} live), {gpu.num_free_blocks} free"
            )
        if hits:  # revive before allocating, so that no eviction can take a hit
            gpu.acquire_many(hits)
        new = gpu.allocate_many(required - len(hits))
        if len(keys) > len(hits):
            gpu.register_chain(new, gpu._node_of[hits[-1]] if hits else ROOT, keys[len(hits):])
        self._gpu_seqs[seq_id] = _Seq(hits + new if hits else new, num_tokens)
        self._gpu_filled_slots += num_tokens - live * bs  # live hits were already counted as filled
        self.num_prefix_queries += 1
        self.num_prefix_query_tokens += num_tokens
        if not hits:
            return 0
        cached = len(hits) * bs
        self._cached_tokens[seq_id] = cached
        self.num_prefix_hits += 1
        self.num_prefix_hit_tokens += cached
        return cached

    def can_append_slots(self, seq_id: SeqId, num_new_tokens: int = 1) -> bool:
        seq = self._on_gpu(seq_id)
        _check_count("num_new_tokens", num_new_tokens, 0)
        return self._blocks_needed_for_append(seq, num_new_tokens) <= self._gpu.num_free_blocks

    def _append_slow(self, seq: _Seq, num_new_tokens: int) -> Copies:
        # The base class allocates from the plain free list: evict into it first, only if it will fit.
        gpu = self._gpu
        if gpu._evictor and type(num_new_tokens) is int and num_new_tokens > 0:
            needed = self._blocks_needed_for_append(seq, num_new_tokens)
            if needed > len(gpu._free):
                if needed > gpu.num_free_blocks:
                    raise NoFreeBlocksError(
                        f"appending {num_new_tokens} tokens needs {needed} blocks, {gpu.num_free_blocks} free"
                    )
                gpu.make_plain_free(needed)
        return BlockManager._append_slow(self, seq, num_new_tokens)  # not super(): once per new block

    def free(self, seq_id: SeqId) -> None:
        seq = self._gpu_seqs.pop(seq_id, None)
        if seq is None:
            super().free(seq_id)  # swapped (CPU blocks are never cached) or unknown
            self._cached_tokens.pop(seq_id, None)
            return
        self._cached_tokens.pop(seq_id, None)
        blocks, decref, hash_of = seq.blocks, self._gpu.decref, self._gpu._hash_of
        num_cached = 0  # cached blocks are a prefix of the table (each follows its chain parent)
        while num_cached < len(blocks) and hash_of[blocks[num_cached]] is not None:
            num_cached += 1
        fills, released = self._block_fills(seq), 0
        for i in range(num_cached, len(blocks)):  # the base class's order: the same plain free list
            if decref(blocks[i]):
                released += fills[i]
        # Cached blocks tail first: a chain's tail enters the evictor before its head, so it is evicted
        # first and no cached block outlives its parent.
        for i in range(num_cached - 1, -1, -1):
            if decref(blocks[i]):
                released += self.block_size
        self._gpu_filled_slots -= released

    # ---- swap --------------------------------------------------------------------------------------
    def can_swap_out(self, seq_ids: Iterable[SeqId]) -> bool:
        _, refs = self._collect_swap_out(seq_ids)
        return len(refs) <= len(self._cpu._free)

    def swap_out(self, seq_ids: Iterable[SeqId]) -> dict[int, int]:
        """Move the sequences to the CPU; returns the GPU block -> CPU block copies to perform. A cached
        block held outside the request is copied and stays on the GPU for its other holders."""
        seqs, refs = self._collect_swap_out(seq_ids)
        if len(refs) > len(self._cpu._free):
            raise NoFreeBlocksError(f"swap out needs {len(refs)} CPU blocks, {len(self._cpu._free)} free")
        fills: dict[int, int] = {}
        for seq in seqs.values():
            fills.update(zip(seq.blocks, self._block_fills(seq)))
        mapping = move_family(seqs, refs, self._gpu_seqs, self._cpu_seqs, self._gpu, self._cpu)
        rc = self._gpu_refcounts
        self._gpu_filled_slots -= sum(fill for block, fill in fills.items() if rc[block] == 0)
        self.num_swapped_out_blocks += len(mapping)
        return mapping

    def can_swap_in(self, seq_ids: Iterable[SeqId]) -> bool:
        _, refs = collect_family(seq_ids, self._cpu_seqs, self._cpu, "swap in", self._missing)
        return self._gpu.num_free_blocks - len(refs) >= self.watermark_blocks

    def swap_in(self, seq_ids: Iterable[SeqId]) -> dict[int, int]:
        """Move swapped sequences back into fresh, uncached GPU blocks (evicting if need be)."""
        seq_ids = list(seq_ids)
        _, refs = collect_family(seq_ids, self._cpu_seqs, self._cpu, "swap in", self._missing)
        if len(refs) > self._gpu.num_free_blocks:
            raise NoFreeBlocksError(f"swap in needs {len(refs)} GPU blocks, {self._gpu.num_free_blocks} free")
        self._gpu.make_plain_free(len(refs))
        return super().swap_in(seq_ids)

    def _collect_swap_out(self, seq_ids: Iterable[SeqId]) -> tuple[dict[SeqId, _Seq], dict[int, int]]:
        """As `swap.collect_family`, but a cached block may be shared outside the request (it is full and
        immutable, so a CPU copy cannot diverge). `move_family` releases blocks in the order of `refs`:
        cached ones come last and deepest first, so a chain's tail enters the evictor before its head."""
        seqs: dict[SeqId, _Seq] = {}
        for seq_id in seq_ids:
            if seq_id in seqs:
                raise ValueError(f"swap out: sequence {seq_id!r} listed twice")
            if seq_id not in self._gpu_seqs:
                raise self._missing(seq_id, "swap out")
            seqs[seq_id] = self._gpu_seqs[seq_id]
        refs: dict[int, int] = {}
        cached_depth: dict[int, int] = {}
        hash_of = self._gpu._hash_of
        for seq in seqs.values():
            for i, block in enumerate(seq.blocks):
                refs[block] = refs.get(block, 0) + 1
                if hash_of[block] is not None:
                    cached_depth[block] = i
        if cached_depth:  # uncached blocks in the base class's order, then cached ones deepest first
            order = [b for b in refs if b not in cached_depth]
            order += sorted(cached_depth, key=cached_depth.__getitem__, reverse=True)
            refs = {b: refs[b] for b in order}
        rc = self._gpu_refcounts
        for block, count in refs.items():
            if count != rc[block] and hash_of[block] is None:
                others = sorted(
                    repr(s) for s, q in self._gpu_seqs.items() if s not in seqs and block in q.blocks
                )
                raise ValueError(
                    f"swap out: block {block} is shared with {', '.join(others)} outside the request; "
                    f"a family of forked sequences must move together"
                )
        return seqs, refs

    # ---- keys and lookups --------------------------------------------------------------------------
    def _checked_keys(self, block_keys: BlockKeys | None, num_tokens: int | None) -> BlockKeys:
        """Validated keys (all checked before any use, so that a bad one cannot fail half-way)."""
        if block_keys is None:
            return ()
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

    def _match(self, keys: BlockKeys) -> list[int]:
        """Blocks of the longest cached prefix: walk the chain until the first miss."""
        lookup, node_of = self._gpu._block_by_hash.get, self._gpu._node_of
        parent, hits = ROOT, []
        for key in keys:
            block = lookup((parent, key))
            if block is None:
                break
            hits.append(block)
            parent = node_of[block]
        return hits

    def check_invariants(self) -> None:
        """The base checks with the GPU pool's evictor and registry (see `memory.prefix_invariants`)."""
        check_prefix_invariants(self)

    def __repr__(self) -> str:
        return (
            f"PrefixCachingBlockManager(gpu {self.num_free_gpu_blocks}/{self.num_gpu_blocks} free "
            f"({self.num_cached_blocks} cached), cpu {self.num_free_cpu_blocks}/{self.num_cpu_blocks} free, "
            f"block_size={self.block_size}, seqs={len(self._gpu_seqs)} on gpu + "
            f"{len(self._cpu_seqs)} swapped, hit rate {self.prefix_hit_rate:.1%})"
        )
