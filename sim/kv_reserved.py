"""Contiguous KV reservations (Orca, static): each sequence reserves prompt + (max or true) output up front."""
from __future__ import annotations

from memory import AllocStatus, BlockManager

from sim.config import EngineConfig
from sim.kv_lazy import LazyDecode
from sim.state import Group, Seq


class ReservedKV(LazyDecode):
    """Orca/static: each sequence reserves a contiguous region for prompt + (max or true) output up front.

    The region is held as blocks of the real block manager (a contiguous range in a real allocator; the
    pool is the same memory) but never grows: decode steps touch no memory, and nothing is shared.
    """

    memory = "reserved"

    def __init__(self, config: EngineConfig, reserve_true_output: bool,
                 block_manager_cls: type[BlockManager] = BlockManager) -> None:
        super().__init__(config, 0, 0.0, block_manager_cls)
        self.context_len = config.context_len
        self.max_output = config.max_output_tokens
        self.true_output = reserve_true_output
        self.resident = 0          # tokens held, lazy sequences as of their synced step
        self.reserved = 0          # slots reserved (exact, not rounded to blocks)
        self.counts = [0] * self.bs
        self.step_copies = 0
        self.uncomputed = 0

    def reservation(self, group: Group) -> int:
        if self.true_output:
            return group.prompt + group.output
        if self.max_output is not None:
            return min(group.prompt + self.max_output, self.context_len)
        return self.context_len

    def blocks_for(self, group: Group) -> int:
        return group.n * -(-self.reservation(group) // self.bs)

    def never_fits(self, group: Group) -> str | None:
        need = self.blocks_for(group)
        if need > self.bm.num_gpu_blocks:
            return (f"reserves {need} KV blocks ({group.n} x {self.reservation(group)} tokens); the pool has "
                    f"{self.bm.num_gpu_blocks}")
        return None

    def status(self, group: Group) -> AllocStatus:
        need = self.blocks_for(group)
        if need > self.bm.num_gpu_blocks:
            return AllocStatus.NEVER
        return AllocStatus.OK if need <= self.bm.num_free_gpu_blocks else AllocStatus.LATER

    def allocate(self, group: Group) -> int:
        tokens = self.reservation(group)
        group.seqs = [Seq(self.new_sid(), 0) for _ in range(group.n)]
        for seq in group.seqs:
            self.bm.allocate(seq.sid, tokens)
        self.reserved += tokens * group.n
        return 0  # no prefix caching: every prompt token is computed

    def computed(self, group: Group, tokens: int) -> None:
        """A prefill chunk wrote `tokens` into each sample's own region (no sharing)."""
        self.resident += tokens * group.n
        for seq in group.seqs:
            seq.length += tokens

    def free(self, group: Group, g: int) -> None:
        for seq in group.seqs:
            if seq.phase >= 0:
                self.leave(seq, g)
            self.resident -= seq.length
            self.bm.free(seq.sid)
        self.reserved -= self.reservation(group) * group.n
        group.seqs = []

    def leave(self, seq: Seq, g: int) -> None:
        self.resident += g - seq.synced_g
        super().leave(seq, g)

    def sync_all(self, g: int) -> None:  # nothing is told to the block manager while decoding
        return None

    def used_blocks(self) -> int:
        return self.bm.num_used_gpu_blocks

    def kv_tokens(self, g: int) -> int:
        return self.resident + self.lazy_b * g - self.lazy_synced

    def reserved_slots(self) -> int:
        return self.reserved
