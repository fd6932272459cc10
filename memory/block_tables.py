"""`BlockTables`: the state of `memory.block_manager.BlockManager` and its read side.

The sequences' block tables over a GPU and a CPU pool, the counters, and every O(1) or per-sequence
question asked of them (sizes, `block_table`, `slot_mapping`, refcounts); `BlockManager` adds what
changes them (allocate, append, fork, free, swap).
"""
from __future__ import annotations

from memory.block_allocator import BlockAllocator, BlockPool, _check_count
from memory.types import SeqBlocks, SeqId

__all__ = ["BlockTables"]


class BlockTables:
    """Refcounted block tables over `num_gpu_blocks` GPU and `num_cpu_blocks` CPU blocks (read side).

    The GPU pool is a `BlockAllocator`, or any `BlockPool` given as `gpu_pool`: the prefix cache
    passes one that keeps released blocks cached and evicts them on demand; this class only asks the
    pool for free counts, blocks and releases.
    """

    def __init__(
        self, num_gpu_blocks: int, block_size: int, num_cpu_blocks: int = 0, watermark: float = 0.0,
        *, gpu_pool: BlockPool | None = None,
    ) -> None:
        _check_count("num_gpu_blocks", num_gpu_blocks, 1)
        _check_count("block_size", block_size, 1)
        _check_count("num_cpu_blocks", num_cpu_blocks, 0)
        if not isinstance(watermark, (int, float)) or not 0.0 <= watermark < 1.0:
            raise ValueError(f"watermark: must be a fraction in [0, 1), got {watermark!r}")
        self.block_size = block_size
        self.watermark = float(watermark)
        # Blocks kept free for running sequences to grow into (vLLM's watermark against thrashing).
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        if gpu_pool is not None and gpu_pool.num_blocks != num_gpu_blocks:
            raise ValueError(f"gpu_pool: has {gpu_pool.num_blocks} blocks, not num_gpu_blocks={num_gpu_blocks}")
        self._gpu = BlockAllocator(num_gpu_blocks) if gpu_pool is None else gpu_pool
        self._cpu = BlockAllocator(num_cpu_blocks)
        self._gpu_refcounts = self._gpu.refcounts  # hot-path alias (read only)
        self._gpu_seqs: dict[SeqId, SeqBlocks] = {}
        self._cpu_seqs: dict[SeqId, SeqBlocks] = {}
        # Tokens held in GPU blocks, each physical block counted once; fragmentation is derived from it.
        self._gpu_filled_slots = 0
        self.num_cow_copies = 0
        self.num_swapped_out_blocks = 0
        self.num_swapped_in_blocks = 0

    # ---- sizes and counters (all O(1)) -------------------------------------------------------------
    @property
    def num_gpu_blocks(self) -> int:
        return self._gpu.num_blocks

    @property
    def num_cpu_blocks(self) -> int:
        return self._cpu.num_blocks

    @property
    def num_free_gpu_blocks(self) -> int:
        return self._gpu.num_free_blocks

    @property
    def num_free_cpu_blocks(self) -> int:
        return self._cpu.num_free_blocks

    @property
    def num_used_gpu_blocks(self) -> int:
        return self._gpu.num_used_blocks

    @property
    def num_shared_gpu_blocks(self) -> int:
        return self._gpu.num_shared_blocks

    @property
    def num_allocated_unused_slots(self) -> int:
        """Slots in allocated GPU blocks that hold no token (internal fragmentation)."""
        return self._gpu.num_used_blocks * self.block_size - self._gpu_filled_slots

    def num_required_blocks(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    @property
    def num_gpu_seqs(self) -> int:
        """Sequences whose blocks are on the GPU (swapped ones are not)."""
        return len(self._gpu_seqs)

    # ---- per-sequence queries ----------------------------------------------------------------------
    def has_seq(self, seq_id: SeqId) -> bool:
        return seq_id in self._gpu_seqs or seq_id in self._cpu_seqs

    def is_swapped(self, seq_id: SeqId) -> bool:
        self._lookup(seq_id)
        return seq_id in self._cpu_seqs

    def num_tokens(self, seq_id: SeqId) -> int:
        return self._lookup(seq_id).num_tokens

    def num_blocks(self, seq_id: SeqId) -> int:
        return len(self._lookup(seq_id).blocks)

    def block_table(self, seq_id: SeqId) -> list[int]:
        """A copy of the sequence's block table: GPU block ids, or CPU block ids while swapped."""
        return list(self._lookup(seq_id).blocks)

    def slot_mapping(self, seq_id: SeqId, start: int, end: int) -> list[int]:
        """Physical GPU slots (block * block_size + offset) of token positions [start, end)."""
        seq = self._on_gpu(seq_id)
        if not 0 <= start <= end <= seq.num_tokens:
            raise ValueError(f"slot range [{start}, {end}) outside 0..{seq.num_tokens} of {seq_id!r}")
        bs, blocks = self.block_size, seq.blocks
        return [blocks[pos // bs] * bs + pos % bs for pos in range(start, end)]

    def refcount(self, block: int) -> int:
        """Refcount of a GPU block (0 when free)."""
        return self._gpu.refcount(block)

    def cpu_refcount(self, block: int) -> int:
        """Refcount of a CPU block (0 when free)."""
        return self._cpu.refcount(block)

    # ---- lookups -----------------------------------------------------------------------------------
    def _lookup(self, seq_id: SeqId) -> SeqBlocks:
        seq = self._gpu_seqs.get(seq_id) or self._cpu_seqs.get(seq_id)
        if seq is None:
            raise ValueError(f"unknown sequence {seq_id!r}")
        return seq

    def _on_gpu(self, seq_id: SeqId) -> SeqBlocks:
        seq = self._gpu_seqs.get(seq_id)
        if seq is None:
            raise self._missing(seq_id, "use")
        return seq

    def _missing(self, seq_id: SeqId, what: str) -> ValueError:
        if seq_id in self._cpu_seqs:
            return ValueError(f"cannot {what} sequence {seq_id!r}: it is swapped out")
        if seq_id in self._gpu_seqs:
            return ValueError(f"cannot {what} sequence {seq_id!r}: it is on the GPU")
        return ValueError(f"cannot {what} unknown sequence {seq_id!r}")
