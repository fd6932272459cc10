"""Block tables for sequences over a GPU and a CPU block pool: allocate, append, fork/copy-on-write, swap.

A sequence owns a block table (physical block ids) and a token count; its tokens fill the table's blocks
in order, so only the last block can be partial. A fork shares every block (refcount + 1). A write into a
shared partial block first copies it (copy-on-write); the caller performs the returned `(src, dst)` copies
before writing. Full shared blocks are never written again, so they stay shared.

Every operation is O(blocks of the sequences it touches); the single-token append that stays inside an
unshared last block (the common decode step) touches nothing but two integers.

A sequence lives on the GPU or, after `swap_out`, on the CPU ("swapped"). A swapped sequence's
`block_table` names CPU block ids; it cannot be appended to or read by `slot_mapping` until `swap_in`.
Failed operations raise and change nothing: `NoFreeBlocksError` when a pool is too small, `ValueError`
for misuse (unknown or duplicate sequence id, wrong location, partial family swap).
"""
from __future__ import annotations

import enum
from typing import Iterable

from memory.block_allocator import NoFreeBlocksError, _check_count
from memory.block_tables import BlockTables
from memory.invariants import check_invariants
from memory.swap import collect_family, move_family
from memory.types import NO_COPIES as _NO_COPIES
from memory.types import BlockMapping, Copies, SeqBlocks, SeqId

__all__ = ["AllocStatus", "BlockManager", "Copies", "SeqId"]


class AllocStatus(enum.Enum):
    """vLLM's answer to "can this prompt be allocated?"."""

    OK = "ok"          # fits now, leaving the watermark free
    LATER = "later"    # fits in the pool, but not with what is free now
    NEVER = "never"    # can never fit, even into an empty pool (minus the watermark)


class BlockManager(BlockTables):
    """Refcounted block tables over `num_gpu_blocks` GPU and `num_cpu_blocks` CPU blocks: allocate, append,
    fork, free and swap (the state and its queries: `memory.block_tables.BlockTables`).

    The GPU pool is a `BlockAllocator`, or any `BlockPool` given as `gpu_pool`: the prefix cache
    passes one that keeps released blocks cached and evicts them on demand; this class only asks the
    pool for free counts, blocks and releases.
    """

    # ---- allocate / append / fork / free -----------------------------------------------------------
    def can_allocate(self, num_tokens: int) -> AllocStatus:
        _check_count("num_tokens", num_tokens, 0)
        required = self.num_required_blocks(num_tokens)
        if self._gpu.num_blocks - required < self.watermark_blocks:
            return AllocStatus.NEVER
        if self._gpu.num_free_blocks - required >= self.watermark_blocks:
            return AllocStatus.OK
        return AllocStatus.LATER

    def allocate(self, seq_id: SeqId, num_tokens: int) -> None:
        """Blocks for a prompt of `num_tokens`. Raises `NoFreeBlocksError` (changing nothing) if they
        do not fit; the watermark is the scheduler's business (`can_allocate`), not enforced here."""
        _check_count("num_tokens", num_tokens, 0)
        if self.has_seq(seq_id):
            raise ValueError(f"sequence {seq_id!r} already exists")
        required = -(-num_tokens // self.block_size)
        try:
            blocks = self._gpu.allocate_many(required)  # takes all of them or none
        except NoFreeBlocksError:
            raise NoFreeBlocksError(
                f"prompt of {num_tokens} tokens needs {required} blocks, {self._gpu.num_free_blocks} free"
            ) from None
        self._gpu_seqs[seq_id] = SeqBlocks(blocks, num_tokens)
        self._gpu_filled_slots += num_tokens

    def can_append_slots(self, seq_id: SeqId, num_new_tokens: int = 1) -> bool:
        seq = self._on_gpu(seq_id)
        _check_count("num_new_tokens", num_new_tokens, 0)
        return self._blocks_needed_for_append(seq, num_new_tokens) <= self._gpu.num_free_blocks

    def append_slots(self, seq_id: SeqId, num_new_tokens: int = 1) -> Copies:
        """Reserve slots for `num_new_tokens` new tokens; cost O(new blocks), not O(tokens).

        Returns the `(src, dst)` GPU block copies to perform before writing: at most one, when the
        partial last block was shared (copy-on-write). The no-copy answer is a shared empty tuple.
        """
        try:
            seq = self._gpu_seqs[seq_id]
        except KeyError:
            raise self._missing(seq_id, "append to") from None
        # Fast path: room left in the last block and nobody else reads it.
        if type(num_new_tokens) is int and num_new_tokens > 0:
            blocks = seq.blocks
            new_total = seq.num_tokens + num_new_tokens
            if new_total <= len(blocks) * self.block_size and self._gpu_refcounts[blocks[-1]] == 1:
                seq.num_tokens = new_total
                self._gpu_filled_slots += num_new_tokens
                return _NO_COPIES
        return self._append_slow(seq, num_new_tokens)

    def _blocks_needed_for_append(self, seq: SeqBlocks, num_new_tokens: int) -> int:
        if num_new_tokens == 0:
            return 0
        n, blocks = seq.num_tokens, seq.blocks
        needed = self.num_required_blocks(n + num_new_tokens) - len(blocks)
        if n % self.block_size and self._gpu_refcounts[blocks[-1]] > 1:
            needed += 1  # copy-on-write of the shared partial last block
        return needed

    def _append_slow(self, seq: SeqBlocks, num_new_tokens: int) -> Copies:
        _check_count("num_new_tokens", num_new_tokens, 0)
        needed = self._blocks_needed_for_append(seq, num_new_tokens)
        if needed > self._gpu.num_free_blocks:
            raise NoFreeBlocksError(
                f"appending {num_new_tokens} tokens needs {needed} blocks, {self._gpu.num_free_blocks} free"
            )
        if num_new_tokens == 0:
            return _NO_COPIES
        copies = _NO_COPIES
        blocks, bs, gpu = seq.blocks, self.block_size, self._gpu
        new = gpu.allocate_many(needed)  # one call: the copy's block first, then the new ones
        in_last = seq.num_tokens % bs
        if in_last and self._gpu_refcounts[blocks[-1]] > 1:
            src, dst = blocks[-1], new[0]
            gpu.decref(src)  # stays allocated: other sequences still hold it
            blocks[-1] = dst
            self._gpu_filled_slots += in_last  # the copy holds the same tokens in a new physical block
            self.num_cow_copies += 1
            copies = ((src, dst),)
            del new[0]
        blocks += new
        new_total = seq.num_tokens + num_new_tokens
        seq.num_tokens = new_total
        self._gpu_filled_slots += num_new_tokens
        return copies

    def fork(self, parent_id: SeqId, child_id: SeqId) -> None:
        """The child shares every block of the parent (on the parent's device); nothing is allocated."""
        parent = self._lookup(parent_id)
        if self.has_seq(child_id):
            raise ValueError(f"fork: child sequence {child_id!r} already exists")
        swapped = parent_id in self._cpu_seqs
        pool = self._cpu if swapped else self._gpu
        for block in parent.blocks:
            pool.incref(block)
        (self._cpu_seqs if swapped else self._gpu_seqs)[child_id] = SeqBlocks(
            list(parent.blocks), parent.num_tokens
        )

    def free(self, seq_id: SeqId) -> None:
        """Drop the sequence and its references; blocks nobody else holds return to their pool."""
        seq = self._gpu_seqs.pop(seq_id, None)
        if seq is not None:
            blocks = seq.blocks
            released = self._gpu.free_table(blocks)
            if released == len(blocks):  # sole holder: the common case
                self._gpu_filled_slots -= seq.num_tokens
            elif released:
                refcounts = self._gpu_refcounts
                self._gpu_filled_slots -= sum(
                    fill for block, fill in zip(blocks, seq.block_fills(self.block_size))
                    if refcounts[block] == 0
                )
        elif seq_id in self._cpu_seqs:
            self._cpu.free_table(self._cpu_seqs.pop(seq_id).blocks)
        else:
            raise ValueError(f"free of unknown sequence {seq_id!r}")

    # ---- swap --------------------------------------------------------------------------------------
    def can_swap_out(self, seq_ids: Iterable[SeqId]) -> bool:
        """Whether the CPU pool can take these sequences; raises `ValueError` on an invalid request."""
        _, refs, _ = collect_family(seq_ids, self._gpu_seqs, self._gpu, "swap out", self._missing)
        return len(refs) <= self._cpu.num_free_blocks

    def swap_out(self, seq_ids: Iterable[SeqId]) -> BlockMapping:
        """Move whole families to the CPU; returns the GPU block -> CPU block copies to perform."""
        seqs, refs, kept = collect_family(seq_ids, self._gpu_seqs, self._gpu, "swap out", self._missing)
        if len(refs) > self._cpu.num_free_blocks:
            raise NoFreeBlocksError(
                f"swap out needs {len(refs)} CPU blocks, {self._cpu.num_free_blocks} free"
            )
        released = self._distinct_fill(seqs)
        if kept:  # cached blocks also held outside the request stay on the GPU, filled
            fills = self._distinct_fills(seqs)
            released -= sum(fills[block] for block in kept)
        mapping = move_family(seqs, refs, self._gpu_seqs, self._cpu_seqs, self._gpu, self._cpu)
        self._gpu_filled_slots -= released
        self.num_swapped_out_blocks += len(mapping)
        return mapping

    def can_swap_in(self, seq_ids: Iterable[SeqId]) -> bool:
        """Whether these sequences fit back on the GPU leaving the watermark free."""
        _, refs, _ = collect_family(seq_ids, self._cpu_seqs, self._cpu, "swap in", self._missing)
        return self._gpu.num_free_blocks - len(refs) >= self.watermark_blocks

    def num_full_blocks_to_swap_in(self, seq_ids: Iterable[SeqId]) -> int:
        """Distinct full blocks of these swapped sequences: what vLLM V0's `can_swap_in` counts of their
        tables (`get_num_full_blocks_touched`, core/block_manager.py:494-497 @v0.6.6.post1); a partial last
        block is left to the caller's one slot per sequence."""
        seqs, _, _ = collect_family(seq_ids, self._cpu_seqs, self._cpu, "swap in", self._missing)
        bs, full = self.block_size, set()
        for seq in seqs.values():
            full.update(seq.blocks[:seq.num_tokens // bs])
        return len(full)

    def swap_in(self, seq_ids: Iterable[SeqId]) -> BlockMapping:
        """Move whole swapped families back; returns the CPU block -> GPU block copies to perform.
        Raises `NoFreeBlocksError` only when they do not fit at all (the watermark is `can_swap_in`'s)."""
        seqs, refs, _ = collect_family(seq_ids, self._cpu_seqs, self._cpu, "swap in", self._missing)
        if len(refs) > self._gpu.num_free_blocks:
            raise NoFreeBlocksError(
                f"swap in needs {len(refs)} GPU blocks, {self._gpu.num_free_blocks} free"
            )
        mapping = move_family(seqs, refs, self._cpu_seqs, self._gpu_seqs, self._cpu, self._gpu)
        self._gpu_filled_slots += self._distinct_fill(seqs)
        self.num_swapped_in_blocks += len(mapping)
        return mapping

    def _distinct_fill(self, seqs: dict[SeqId, SeqBlocks]) -> int:
        """Tokens held by the distinct blocks of `seqs`, a block shared among them counted once."""
        if len(seqs) == 1:  # a table names each block once
            return next(iter(seqs.values())).num_tokens
        return sum(self._distinct_fills(seqs).values())

    def _distinct_fills(self, seqs: dict[SeqId, SeqBlocks]) -> dict[int, int]:
        """Tokens held by each distinct block of `seqs`."""
        fills: dict[int, int] = {}
        for seq in seqs.values():
            fills.update(zip(seq.blocks, seq.block_fills(self.block_size)))
        return fills

    # ---- checks ------------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Full O(pool + tables) consistency check; raises `InvariantError` naming the first violation."""
        check_invariants(self)

    def __repr__(self) -> str:
        return (
            f"BlockManager(gpu {self.num_free_gpu_blocks}/{self.num_gpu_blocks} free, "
            f"cpu {self.num_free_cpu_blocks}/{self.num_cpu_blocks} free, block_size={self.block_size}, "
            f"seqs={len(self._gpu_seqs)} on gpu + {len(self._cpu_seqs)} swapped)"
        )
