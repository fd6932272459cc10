"""Paged KV memory (vLLM, Sarathi) over the real `memory.BlockManager`: blocks on demand, sharing, CoW, swap.

Decoding sequences are lazy (see `state.Seq`): a decode step appends one token to every running sequence,
but the block manager only hears about a sequence in the step where it needs a new block. Sequences are
bucketed by that step modulo the block size, so a step touches only `counts[G % block_size]` sequences,
and a run of k steps needs `sum(counts[(G + i) % block_size])` new blocks: known without touching any
sequence. Block counts, free blocks and the scheduler's decisions stay exactly those of appending every
token; only the calls are batched. Families that share a partial last block (just forked: parallel
samples, beams) are *dirty*: their appends go through the block manager every step (copy-on-write).
"""
from __future__ import annotations

from typing import Hashable, Sequence

from memory import AllocStatus, BlockManager, PrefixCachingBlockManager

from sim.config import EngineConfig
from sim.kv_lazy import NEVER, LazyDecode
from sim.kv_prefix import NoPrefixCache, PrefixCache
from sim.state import Group, Seq


class PagedKV(LazyDecode):
    """vLLM's paged KV cache: blocks on demand, fork sharing, copy-on-write, swap to a CPU pool.
    Implements `sim.kv_layout.KVLayout`."""

    def __init__(self, config: EngineConfig, swap: bool, block_manager_cls: type[BlockManager] = BlockManager,
                 per_chunk: bool = False) -> None:
        if config.enable_prefix_caching:
            block_manager_cls = PrefixCachingBlockManager
        super().__init__(config, config.cpu_blocks if swap else 0, config.watermark, block_manager_cls)
        # Automatic prefix caching (see sim.kv_prefix), or its null object when off.
        self.prefix: PrefixCache | NoPrefixCache = (PrefixCache if config.enable_prefix_caching else NoPrefixCache)(
            self.bm, self.bs)
        self.buckets: list[dict[Seq, None]] = [{} for _ in range(self.bs)]
        self.counts = [0] * self.bs
        self.logical = 0       # sum of block-table lengths on the GPU: the blocks without sharing
        self.uncomputed = 0    # allocated prompt tokens a chunked prefill has not computed yet
        self.step_copies = 0   # copy-on-write copies of the current step
        # V1: a (re)prefill holds blocks for its prefix hits and the chunks scheduled so far only
        # (`allocate_chunk`), not the whole prompt from admission on.
        self.per_chunk = per_chunk
        self.chunk_keys: dict[int, tuple[Sequence[Hashable], int]] = {}  # sid -> (keys, blocks registered)

    @classmethod
    def for_policy(cls, config: EngineConfig, policy, block_manager_cls: type[BlockManager]) -> "PagedKV":
        return cls(config, swap=policy.preemption == "swap", block_manager_cls=block_manager_cls,
                   per_chunk=getattr(policy, "allocate_per_chunk", False))

    # ---- admission -----------------------------------------------------------------------------------
    def assign_block_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                          prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        self.prefix.assign_block_keys(group, request_key, prefix_group, prefix_tokens, hash_ids)

    def cached_tokens(self, group: Group) -> int:
        return self.prefix.cached_tokens(group)

    def blocks_for(self, group: Group, generated: int) -> int:
        """Blocks a (re)prefill takes: the prompt's full blocks once, each sample's tail on its own."""
        bs, p = self.bs, group.prompt
        if generated == 0:
            return -(-p // bs)
        return p // bs + group.n * (-(-(p + generated) // bs) - p // bs)

    def never_fits(self, group: Group) -> str | None:
        need = self.blocks_for(group, group.output - 1 if group.output > 1 else 0)
        usable = self.bm.num_gpu_blocks - self.bm.watermark_blocks
        if need > usable:
            return (f"needs {need} KV blocks at its longest; the pool has {self.bm.num_gpu_blocks} "
                    f"({usable} above the watermark)")
        return None

    def status(self, group: Group) -> AllocStatus:
        required = self.blocks_for(group, group.generated)
        bm = self.bm
        if bm.num_gpu_blocks - required < bm.watermark_blocks:  # an empty pool caches nothing
            return AllocStatus.NEVER
        required -= self.prefix.blocks_saved(group)  # live cached blocks are shared, not taken
        if bm.num_free_gpu_blocks - required >= bm.watermark_blocks:
            return AllocStatus.OK
        return AllocStatus.LATER

    def allocate(self, group: Group) -> int:
        """Blocks for the group's (re)prefill; a recompute restores each sample's own tokens. Returns the
        prompt tokens found computed in the prefix cache (their prefill is skipped). Per chunk: only the
        prefix hits; the chunks take theirs in `allocate_chunk`."""
        if self.per_chunk:
            return self._allocate_hits(group)
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

    def _allocate_hits(self, group: Group) -> int:
        """V1's admission: the request's computed prefix hits, nothing else (kv_cache_manager.py:266-328);
        one sequence (V1 runs each sample as its own request)."""
        assert group.n == 1, "per-chunk allocation holds one sequence per request"
        seq, bm, prefix = Seq(self.new_sid(), 0), self.bm, self.prefix
        cached = 0
        if isinstance(prefix, PrefixCache):
            keys, ready = prefix.plan(group)
            cached = ready * self.bs
            bm.allocate(seq.sid, cached, keys.head(ready))
            self.chunk_keys[seq.sid] = (keys, ready)
            prefix.query_tokens += group.prompt
            if ready:
                prefix.hits += 1
                prefix.hit_tokens += cached
        else:
            bm.allocate(seq.sid, 0)
        seq.length = cached
        self.logical += bm.num_blocks(seq.sid)
        group.seqs, group.pending = [seq], []
        return cached

    def chunk_need(self, group: Group, tokens: int) -> int:
        """Blocks `allocate_chunk(group, tokens)` takes: ceil((allocated + tokens) / block_size) less the
        blocks held (V1 allocate_slots, kv_cache_manager.py:551-588); 0 when the prompt was allocated whole."""
        if not self.per_chunk:
            return 0
        seq = group.seqs[0]
        return -(-(seq.length + tokens) // self.bs) - self.bm.num_blocks(seq.sid)

    def allocate_chunk(self, group: Group, tokens: int) -> bool:
        """Slots for a scheduled prefill chunk of `tokens`; False (nothing taken) if the free pool is short.
        Full prompt blocks are cached as they are allocated (kv_cache_manager.py:616-625): a request
        scheduled later in the same step already hits them (each layer writes the step's new K/V into the
        cache before its attention reads it), so they are never pending."""
        if not self.per_chunk:
            return True
        need = self.chunk_need(group, tokens)
        bm, seq = self.bm, group.seqs[0]
        if need > bm.num_free_gpu_blocks:
            return False
        bm.append_slots(seq.sid, tokens)
        seq.length += tokens
        self.logical += need
        self.uncomputed += tokens
        entry = self.chunk_keys.get(seq.sid)
        if entry is not None:
            keys, done = entry
            full = min(len(keys), seq.length // self.bs)
            if self.prefix.lazy:  # private blocks are registered on release (only this request looks them up)
                full = min(full, keys.num_shared)
            if full > done:
                start, added = bm.cache_full_blocks(seq.sid, keys.head(full))
                if start + len(added) < full:  # another request cached that content first: ours stays private
                    del self.chunk_keys[seq.sid]
                else:
                    self.chunk_keys[seq.sid] = (keys, full)
        return True

    # ---- prefill progress ----------------------------------------------------------------------------
    def begin_prefill(self, group: Group) -> None:
        if not self.per_chunk:
            self.uncomputed += group.prefill_len - group.prefill_done

    def computed(self, group: Group, tokens: int) -> None:
        self.uncomputed -= tokens
        if group.pending:
            self.prefix.progress(group)

    def abort_prefill(self, group: Group) -> None:
        if self.per_chunk:  # chunks allocated in this step and not run
            self.uncomputed -= group.seqs[0].length - group.prefill_done
        else:
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

    def free(self, group: Group, g: int) -> None:
        # A lazy sequence's untold tokens sit in blocks it already has: freeing needs no sync.
        bm = self.bm
        if self.prefix.hash_output:  # its tokens go into the cache: the block manager must hold them
            for seq in group.seqs:
                if seq.phase >= 0:
                    self.sync(seq, g)
        self.prefix.release(group)
        for seq in group.seqs:
            if seq.phase >= 0:
                self.leave(seq, g)
            self.logical -= bm.num_blocks(seq.sid)
            bm.free(seq.sid)
            self.chunk_keys.pop(seq.sid, None)
        group.seqs = []
        group.pending = []  # blocks it did not compute stay pending (orphans: the next hit computes them)

    # ---- lazy decoding -------------------------------------------------------------------------------
    def join(self, seq: Seq, g: int) -> None:
        super().join(seq, g)
        seq.phase = (g + 1 - seq.length) % self.bs
        self.buckets[seq.phase][seq] = None
        self.counts[seq.phase] += 1

    def leave(self, seq: Seq, g: int) -> None:
        del self.buckets[seq.phase][seq]
        self.counts[seq.phase] -= 1
        super().leave(seq, g)

    def sync(self, seq: Seq, g: int) -> None:
        """Tell the block manager a lazy sequence's tokens up to decode step g."""
        n = g - seq.synced_g
        if n:
            nb = len(self.bm.append_slots(seq.sid, n))
            assert nb == 0, "a lazy sequence never shares its last block"
            seq.length += n
            seq.synced_g = g
            self.lazy_synced += n

    def sync_all(self, g: int) -> None:
        for bucket in self.buckets:
            for seq in bucket:
                self.sync(seq, g)

    @property
    def growing(self) -> int:
        return self.lazy_b

    def crossings(self, g: int) -> int:
        return self.counts[g % self.bs]

    def reserve_bucket(self, g: int) -> None:
        """Decode step g: the sequences that need a block in it get it."""
        append, n_synced = self.bm.append_slots, 0
        for seq in self.buckets[g % self.bs]:
            n = g - seq.synced_g
            append(seq.sid, n)
            seq.length += n
            seq.synced_g = g
            n_synced += n
            self.logical += 1
        self.lazy_synced += n_synced

    def reserve_run(self, g_first: int, g_last: int) -> None:
        """Decode steps g_first..g_last at once (the caller checked the blocks suffice)."""
        if g_last < g_first:
            return
        bs, counts = self.bs, self.counts
        span = g_last - g_first + 1
        phases = range(bs) if span >= bs else [(g_first + i) % bs for i in range(span)]
        append, n_synced = self.bm.append_slots, 0
        for r in phases:
            for seq in self.buckets[r]:
                n = g_last - seq.synced_g
                append(seq.sid, n)
                seq.length += n
                seq.synced_g = g_last
                n_synced += n
        self.lazy_synced += n_synced
        # One new block per sequence per crossing: span // bs full cycles, then the leftover phases.
        cycles, rest = divmod(span, bs)
        self.logical += cycles * self.lazy_b + sum(counts[(g_first + i) % bs] for i in range(rest))

    def steps_memory_allows(self, g1: int) -> int:
        counts, bs, lazy_b = self.counts, self.bs, self.lazy_b
        free = self.bm.num_free_gpu_blocks
        if lazy_b == 0:
            return NEVER
        cycles = free // lazy_b
        left, steps = free - cycles * lazy_b, cycles * bs
        for i in range(1, bs + 1):
            need = counts[(g1 + i) % bs]
            if need > left:
                break
            left -= need
            steps += 1
        return steps + 1

    # ---- dirty families (shared partial last blocks) -------------------------------------------------
    def group_need(self, group: Group, g: int) -> int:
        """New blocks the group's sequences take in decode step g."""
        if not group.dirty:
            r = g % self.bs
            return sum(1 for seq in group.seqs if seq.phase == r)
        bm, bs, need, holders = self.bm, self.bs, 0, {}
        for seq in group.seqs:
            if seq.length % bs == 0:
                need += 1
            else:
                last = bm.block_table(seq.sid)[-1]
                holders[last] = holders.get(last, 0) + 1
        for block, held in holders.items():
            # The last holder of a shared partial block writes into it; every other one copies it.
            need += held - 1 if bm.refcount(block) == held else held
        return need

    def commit_group(self, group: Group, g: int) -> None:
        """Decode step g's slots for one group (after `group_need` fit)."""
        if not group.dirty:
            r = g % self.bs
            for seq in group.seqs:
                if seq.phase == r:
                    self.sync(seq, g)
                    self.logical += 1
            return
        bm = self.bm
        for seq in group.seqs:
            before = bm.num_blocks(seq.sid)
            self.step_copies += len(bm.append_slots(seq.sid, 1))
            self.logical += bm.num_blocks(seq.sid) - before
            seq.length += 1
            seq.synced_g = g

    def drop_seq(self, seq: Seq) -> None:
        self.logical -= self.bm.num_blocks(seq.sid)
        self.bm.free(seq.sid)

    def fork_seq(self, parent: Seq) -> Seq:
        child = Seq(self.new_sid(), parent.length)
        self.bm.fork(parent.sid, child.sid)
        self.logical += self.bm.num_blocks(parent.sid)
        return child

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

    def can_swap_in(self, group: Group) -> bool:
        """Room for the group's blocks plus one new block per sequence, above the watermark."""
        sids = [s.sid for s in group.seqs]
        if not self.bm.can_swap_in(sids):
            return False
        blocks = sum(self.bm.num_blocks(sid) for sid in sids) + len(sids)
        return self.bm.num_free_gpu_blocks - blocks >= self.bm.watermark_blocks

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
