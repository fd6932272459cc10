"""Paged KV memory (vLLM, Sarathi) over the real `memory.BlockManager`: blocks on demand, sharing, CoW, swap.

A (re)prefill's blocks are allocated whole at admission (vLLM V0, Sarathi); `sim.kv_paged_chunked` is the
layout that allocates them chunk by chunk (vLLM V1, SGLang). Decoding is lazy and batched
(`sim.kv_paged_decode`), prefix caching is `sim.kv_prefix`'s.
"""
from __future__ import annotations

from typing import Hashable, Sequence

from memory import AllocStatus, BlockManager, PrefixCachingBlockManager

from sim.config import EngineConfig
from sim.kv_paged_decode import PagedDecode
from sim.kv_prefix import NoPrefixCache, PrefixCache
from sim.state import SWAP, SWAP_GROUPS, Group, Seq


class PagedKV(PagedDecode):
    """vLLM's paged KV cache: blocks on demand, fork sharing, copy-on-write, swap to a CPU pool.
    Implements `sim.kv_layout.KVLayout`."""

    def __init__(self, config: EngineConfig, swap: bool, block_manager_cls: type[BlockManager] = BlockManager,
                 credit_live_hits: bool = True, watermark_while_idle: bool = True) -> None:
        if config.enable_prefix_caching:
            block_manager_cls = PrefixCachingBlockManager
        super().__init__(config, config.cpu_blocks if swap else 0, config.watermark, block_manager_cls)
        # Automatic prefix caching (see sim.kv_prefix), or its null object when off.
        self.prefix: PrefixCache | NoPrefixCache = (PrefixCache if config.enable_prefix_caching else NoPrefixCache)(
            self.bm, self.bs)
        self.uncomputed = 0    # allocated prompt tokens a chunked prefill has not computed yet
        # Admission counts live cached blocks another request shares as not taken (V1, SGLang); V0 counts
        # every prompt block as needed and credits only free (evictable) cached ones, as free blocks.
        self.credit_live_hits = credit_live_hits
        # V0 keeps the admission watermark free on an idle engine too; V1 only while requests run.
        self.watermark_while_idle = watermark_while_idle

    @classmethod
    def for_policy(cls, config: EngineConfig, policy, block_manager_cls: type[BlockManager]) -> "PagedKV":
        return cls(config, swap=policy.preemption in (SWAP, SWAP_GROUPS), block_manager_cls=block_manager_cls,
                   credit_live_hits=policy.admission_credits_live_hits,
                   watermark_while_idle=policy.watermark_while_idle)

    # ---- admission -----------------------------------------------------------------------------------
    def assign_block_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                          prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        self.prefix.assign_block_keys(group, request_key, prefix_group, prefix_tokens, hash_ids)

    def cached_tokens(self, group: Group) -> int:
        return self.prefix.cached_tokens(group)

    def touch_prefix(self, group: Group) -> None:
        self.prefix.touch(group)

    def evictable_prefix_blocks(self, group: Group) -> int:
        return self.prefix.evictable_hits(group)

    def blocks_for(self, group: Group, generated: int) -> int:
        """Blocks a (re)prefill takes: the prompt's full blocks once, each sample's tail on its own."""
        bs, p = self.bs, group.prompt
        if generated == 0:
            return -(-p // bs)
        return p // bs + group.n * (-(-(p + generated) // bs) - p // bs)

    def usable_blocks(self) -> int:
        """The most blocks a request may hold at admission: V0's NEVER is the pool less the watermark
        (core/block_manager.py:139-141 @v0.6.6.post1); the whole pool where an idle engine keeps no watermark
        (V1, which checks at startup that a request of `max_model_len` fits the pool)."""
        return self.bm.num_gpu_blocks - (self.bm.watermark_blocks if self.watermark_while_idle else 0)

    def admission_watermark(self) -> int:
        """Blocks admission leaves free: V0 always the watermark; V1 only while requests run
        (`has_scheduled_reqs=bool(self.running)`, sched/scheduler.py:1451; kv_cache_manager.py:518-525, 546): a
        sequence on the GPU is a running request (a finished one held for async scheduling too, as V1's
        stays in `running`)."""
        if self.watermark_while_idle or self.bm.num_gpu_seqs:
            return self.bm.watermark_blocks
        return 0

    def never_fits(self, group: Group) -> str | None:
        need = self.blocks_for(group, group.output - 1 if group.output > 1 else 0)
        usable = self.usable_blocks()
        if need > usable:
            above = f" ({usable} above the watermark)" if usable < self.bm.num_gpu_blocks else ""
            return f"needs {need} KV blocks at its longest; the pool has {self.bm.num_gpu_blocks}{above}"
        return None

    def status(self, group: Group) -> AllocStatus:
        required = self.blocks_for(group, group.generated)
        bm = self.bm
        if required > self.usable_blocks():  # an empty pool caches nothing
            return AllocStatus.NEVER
        room = bm.num_free_gpu_blocks - self.admission_watermark()
        if room >= required:  # fits without sharing a cached block: the prefix lookup cannot change that
            return AllocStatus.OK
        if not self.credit_live_hits:  # V0: every prompt block counts as needed
            return AllocStatus.LATER
        # Live cached blocks are shared, not taken.
        return AllocStatus.OK if room >= required - self.prefix.blocks_saved(group) else AllocStatus.LATER

    def allocate(self, group: Group) -> int:
        """Blocks for the group's (re)prefill; a recompute restores each sample's own tokens. Returns the
        prompt tokens found computed in the prefix cache (their prefill is skipped)."""
        bm, first = self.bm, Seq(self.new_sid(), group.prompt)
        cached = self.prefix.allocate(first.sid, group)
        seqs = [first]
        if group.generated:
            for _ in range(group.n - 1):
                seq = Seq(self.new_sid(), group.prompt)
                bm.fork(first.sid, seq.sid)
                seqs.append(seq)
            for seq in seqs:  # copies of the shared prompt tail are part of the recompute, not CoW work
                # (the prefix cache may have allocated a lone sample's output with its prompt)
                extra = group.prompt + group.generated - bm.num_tokens(seq.sid)
                if extra:
                    bm.append_slots(seq.sid, extra)
                seq.length += group.generated
        for seq in seqs:
            self.logical += bm.num_blocks(seq.sid)
        group.seqs = seqs
        return cached

    def chunk_need(self, group: Group, tokens: int) -> int:
        return 0  # the whole prefill was allocated at admission

    def allocate_chunk(self, group: Group, tokens: int) -> bool:
        return True

    # ---- prefill progress ----------------------------------------------------------------------------
    def begin_prefill(self, group: Group) -> None:
        self.uncomputed += group.prefill_len - group.prefill_done

    def computed(self, group: Group, tokens: int) -> None:
        self.uncomputed -= tokens
        if group.pending:
            self.prefix.progress(group)

    def abort_prefill(self, group: Group) -> None:
        self.uncomputed -= group.prefill_len - group.prefill_done

    def share_samples(self, group: Group) -> None:
        """After a (re)prefill: the first prefill's samples share every block of the first sequence (a
        recompute already restored each sample's own); the family is dirty while it shares a partial
        block (parallel samples until their first decode step, beams always)."""
        if group.n == 1:
            return
        if len(group.seqs) == 1:
            bm, first = self.bm, group.seqs[0]
            nb = bm.num_blocks(first.sid)
            for _ in range(group.n - 1):
                seq = Seq(self.new_sid(), first.length)
                bm.fork(first.sid, seq.sid)
                group.seqs.append(seq)
                self.logical += nb
            group.fresh_fork = not group.is_beam
        group.dirty = group.fresh_fork or group.is_beam

    def free(self, group: Group, g: int, cache_output: bool = True) -> None:
        # A lazy sequence's untold tokens sit in blocks it already has: freeing needs no sync.
        bm = self.bm
        if self.prefix.hash_output:  # its tokens go into the cache: the block manager must hold them
            for seq in group.seqs:
                # A victim already given this step's slot (V1's priority walk) is synced past g: nothing to tell.
                if seq.phase >= 0 and seq.synced_g < g:
                    self.sync(seq, g)
        self.prefix.release(group, cache_output)
        for seq in group.seqs:
            if seq.phase >= 0:
                self.leave(seq, g)
            self.logical -= bm.num_blocks(seq.sid)
            bm.free(seq.sid)
        group.seqs = []
        group.pending = []  # blocks it did not compute stay pending (orphans: the next hit computes them)

    # ---- swap ----------------------------------------------------------------------------------------
    def can_swap_out(self, group: Group) -> bool:
        return self.bm.num_cpu_blocks > 0 and self.bm.can_swap_out([s.sid for s in group.seqs])

    def swap_out(self, group: Group, g: int) -> int:
        for seq in group.seqs:
            if seq.phase >= 0:
                self.sync(seq, g)
                self.leave(seq, g)
            self.logical -= self.bm.num_blocks(seq.sid)
        return len(self.bm.swap_out([s.sid for s in group.seqs]))

    def swap_in_status(self, group: Group) -> AllocStatus:
        """V0's `can_swap_in` (core/block_manager.py:343-357, 458-510 @v0.6.6.post1): the group's distinct
        full blocks plus one block per sequence for the slot its next decode appends, NEVER above the pool,
        OK above the watermark. That bounds what swapping in and the next decode take (a sequence's partial
        last block, or its copy on write, is its one block), so the step cannot run short."""
        bm = self.bm
        sids = [s.sid for s in group.seqs]
        touched = bm.num_full_blocks_to_swap_in(sids) + len(sids)
        if bm.num_gpu_blocks < touched:
            return AllocStatus.NEVER
        return AllocStatus.OK if bm.num_free_gpu_blocks - touched >= bm.watermark_blocks else AllocStatus.LATER

    def swap_in(self, group: Group) -> int:
        moved = len(self.bm.swap_in([s.sid for s in group.seqs]))
        for seq in group.seqs:
            self.logical += self.bm.num_blocks(seq.sid)
        return moved

    def drop_swapped(self, group: Group) -> None:
        for seq in group.seqs:
            self.bm.free(seq.sid)
        group.seqs = []

    # ---- per-step figures ----------------------------------------------------------------------------
    def used_blocks(self) -> int:
        return self.bm.num_used_gpu_blocks

    def kv_tokens(self, g: int) -> int:
        bm = self.bm
        filled = bm.num_used_gpu_blocks * self.bs - bm.num_allocated_unused_slots
        return filled - self.uncomputed + self.lazy_b * g - self.lazy_synced

    def reserved_slots(self) -> int:
        return self.bm.num_used_gpu_blocks * self.bs

    def logical_blocks(self) -> int:
        return self.logical

    def check(self, groups: Sequence[Group], g: int) -> None:
        bm = self.bm
        seqs = [s for grp in groups for s in grp.seqs]
        assert self.logical == sum(bm.num_blocks(s.sid) for s in seqs), "logical block count drifted"
        lazy = [s for s in seqs if s.phase >= 0]
        assert all(bm.num_tokens(s.sid) == s.length for s in lazy), "lazy sequence out of sync"
        assert self.lazy_b == len(lazy) == sum(self.counts)

    def summary(self) -> dict:
        return self.prefix.summary()
