"""KV reservations held as blocks of the pool (`static`; the base of `sim.kv_contiguous` for Orca): each
sequence reserves prompt + (max or true) output up front."""
from __future__ import annotations

from typing import Hashable, Sequence

from memory import AllocStatus, BlockManager

from sim.config import EngineConfig
from sim.kv_lazy import NEVER, LazyDecode
from sim.kv_prefix import no_prefix_summary
from sim.state import Group, Seq


def refuse_prefix_caching(config: EngineConfig, policy_name: str) -> None:
    """Reservations share nothing, so there is no prefix cache to turn on."""
    if config.enable_prefix_caching:
        raise ValueError(f"enable_prefix_caching: needs a paged policy (vllm, vllm-v0, vllm-swap, sarathi, sglang), "
                         f"not {policy_name!r}")


class ReservedKV(LazyDecode):
    """Static batching: each sequence reserves a region for prompt + (max or true) output up front.

    The region is held as blocks of the real block manager (no placement: `ContiguousKV` adds the
    contiguous placement and its fragmentation for Orca) but never grows: decode steps touch no memory,
    and nothing is shared. Every `KVLayout` method that concerns growth, sharing, swap or a prefix cache is therefore a real no-op here.
    """

    def __init__(self, config: EngineConfig, reserve_true_output: bool,
                 block_manager_cls: type[BlockManager] = BlockManager) -> None:
        super().__init__(config, 0, 0.0, block_manager_cls)
        self.context_len = config.context_len
        self.max_output = config.max_output_tokens
        self.true_output = reserve_true_output
        self.resident = 0          # tokens held, lazy sequences as of their synced step
        self.reserved = 0          # slots reserved (exact, not rounded to blocks)
        self.counts = [0] * self.bs  # decode steps take no block
        self.step_copies = 0

    @classmethod
    def for_policy(cls, config: EngineConfig, policy, block_manager_cls: type[BlockManager]) -> "ReservedKV":
        refuse_prefix_caching(config, policy.name)
        return cls(config, reserve_true_output=policy.reserve_true_output, block_manager_cls=block_manager_cls)

    def assign_block_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                          prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        return None  # no prefix cache: each sequence writes its own region

    def cached_tokens(self, group: Group) -> int:
        return 0

    def touch_prefix(self, group: Group) -> None:
        return None  # no prefix cache

    def evictable_prefix_blocks(self, group: Group) -> int:
        return 0  # no prefix cache

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

    def chunk_need(self, group: Group, tokens: int) -> int:
        return 0  # the reservation taken at admission covers every chunk

    def allocate_chunk(self, group: Group, tokens: int) -> bool:
        return True  # nothing to take: the reservation already holds the chunk's slots

    def begin_prefill(self, group: Group) -> None:
        return None  # the reservation already covers the prefill

    def computed(self, group: Group, tokens: int) -> None:
        """A prefill chunk wrote `tokens` into each sample's own region (no sharing)."""
        self.resident += tokens * group.n
        for seq in group.seqs:
            seq.length += tokens

    def abort_prefill(self, group: Group) -> None:
        return None  # `free` drops what the chunks wrote (`seq.length`)

    def share_samples(self, group: Group) -> None:
        return None  # each sample prefilled its own region: nothing to share, never dirty

    def free(self, group: Group, g: int, cache_output: bool = True) -> None:
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

    def hold(self, group: Group, g: int) -> None:
        for seq in group.seqs:
            if seq.phase >= 0:
                self.leave(seq, g)

    def sync_all(self, g: int) -> None:  # nothing is told to the block manager while decoding
        return None

    # ---- decoding takes no memory --------------------------------------------------------------------
    @property
    def growing(self) -> int:
        return 0

    def crossings(self, g: int) -> int:
        return 0

    def reserve_bucket(self, g: int) -> None:
        return None

    def reserve_run(self, g_first: int, g_last: int) -> None:
        return None

    def steps_memory_allows(self, g1: int) -> int:
        return NEVER

    def group_need(self, group: Group, g: int) -> int:
        return 0

    def commit_group(self, group: Group, g: int) -> None:
        return None  # lazy sequences: their tokens land in the reservation

    def drop_seq(self, seq: Seq) -> None:
        raise AssertionError("reserved memory never re-selects beams (its groups are never dirty)")

    def fork_seq(self, parent: Seq) -> Seq:
        raise AssertionError("reserved memory never re-selects beams (its groups are never dirty)")

    # ---- no swap pool ------------------------------------------------------------------------------
    def can_swap_out(self, group: Group) -> bool:
        return False

    def swap_out(self, group: Group, g: int) -> int:
        raise AssertionError("reserved memory has no swap pool (can_swap_out is False)")

    def swap_in_status(self, group: Group) -> AllocStatus:
        raise AssertionError("reserved memory has no swap pool (can_swap_out is False)")

    def swap_in(self, group: Group) -> int:
        raise AssertionError("reserved memory has no swap pool")

    def drop_swapped(self, group: Group) -> None:
        raise AssertionError("reserved memory has no swap pool")

    def used_blocks(self) -> int:
        return self.bm.num_used_gpu_blocks

    def kv_tokens(self, g: int) -> int:
        return self.resident + self.lazy_b * g - self.lazy_synced

    def reserved_slots(self) -> int:
        return self.reserved

    def logical_blocks(self) -> int:
        return self.bm.num_used_gpu_blocks  # nothing is shared

    def check(self, groups: Sequence[Group], g: int) -> None:
        assert self.reserved == sum(self.reservation(grp) * grp.n for grp in groups), "reservations drifted"
        assert self.kv_tokens(g) <= self.reserved, "more tokens than reserved slots"
        assert self.lazy_b == sum(1 for grp in groups for s in grp.seqs if s.phase >= 0)

    def summary(self) -> dict:
        return no_prefix_summary()
