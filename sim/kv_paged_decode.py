"""Paged KV decoding without a call per token: lazy sequences bucketed by the step they need a block in.

Decoding sequences are lazy (see `state.Seq`): a decode step appends one token to every running sequence,
but the block manager only hears about a sequence in the step where it needs a new block. Sequences are
bucketed by that step modulo the block size, so a step touches only `counts[G % block_size]` sequences,
and a run of k steps needs `sum(counts[(G + i) % block_size])` new blocks: known without touching any
sequence. Block counts, free blocks and the scheduler's decisions stay exactly those of appending every
token; only the calls are batched. Families that share a partial last block (just forked: parallel
samples, beams) are *dirty*: their appends go through the block manager every step (copy-on-write).
"""
from __future__ import annotations

from memory import BlockManager

from sim.config import EngineConfig
from sim.kv_lazy import NEVER, LazyDecode
from sim.state import Group, Seq


class PagedDecode(LazyDecode):
    """The decode half of `sim.kv_paged.PagedKV`: buckets of lazy sequences, runs of decode steps, dirty
    families, and the logical block count (block-table lengths without sharing) they change."""

    def __init__(self, config: EngineConfig, num_cpu_blocks: int, watermark: float,
                 block_manager_cls: type[BlockManager] = BlockManager) -> None:
        super().__init__(config, num_cpu_blocks, watermark, block_manager_cls)
        self.buckets: list[dict[Seq, None]] = [{} for _ in range(self.bs)]
        self.counts = [0] * self.bs
        self.logical = 0       # sum of block-table lengths on the GPU: the blocks without sharing
        self.step_copies = 0   # copy-on-write copies of the current step

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

    def hold(self, group: Group, g: int) -> None:
        for seq in group.seqs:
            if seq.phase >= 0:  # told to the block manager, so that the later release sees every token
                self.sync(seq, g)
                self.leave(seq, g)

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
