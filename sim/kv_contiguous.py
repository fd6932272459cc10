"""Contiguous per-request KV buffers (the PagedAttention paper's Orca baselines), with external fragmentation.

Kwon et al., SOSP'23, Sec. 6.1 ("Baseline 2: Orca"): "we assume that Orca uses the buddy allocation algorithm
to determine the memory address to store KV cache", and its three variants differ in what they reserve for
the output: Oracle the true output length, Pow2 at most 2x of it (a 25-token output reserves 32 slots), Max
the model's maximum sequence length (2048). Each sequence's KV is one contiguous range of the pool, so a
request fits only if a free range of its (power-of-two) size exists: free memory fragments externally
(Sec. 2.3, Fig. 2: "external fragmentation").

`BuddyAllocator` hands out ranges of the pool in units of one KV block (`block_size` slots; the smallest
range a request takes) and sizes of 2^k units; `ContiguousKV` is `ReservedKV` (exact reservations, decoding
takes no memory, nothing shared, no swap) with admission and the pool figures taken from the buddy allocator.
The reservation is also held as blocks of the block manager (what the execute backend's cache reads); the
buddy range always covers it, so that never runs short.
"""
from __future__ import annotations

from typing import Sequence

from memory import AllocStatus, BlockManager

from sim.config import EngineConfig
from sim.kv_reserved import ReservedKV, refuse_prefix_caching
from sim.state import Group

OUTPUT_RESERVATIONS = ("max", "pow2", "oracle")


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1)."""
    return 1 << max(0, x - 1).bit_length()


class BuddyAllocator:
    """Binary buddy allocator over `num_units` units: ranges of 2^k units aligned to their size.

    A pool that is not a power of two is cut into aligned power-of-two top ranges, largest first (so no
    range's buddy ever lies outside the pool). Allocation takes the lowest-addressed free range of the
    smallest sufficient order and splits it; freeing merges a range with its free buddy, repeatedly.
    """

    def __init__(self, num_units: int) -> None:
        assert num_units > 0, f"empty pool: {num_units} units"
        self.num_units = num_units
        self.max_order = num_units.bit_length() - 1
        self.free_ranges: list[set[int]] = [set() for _ in range(self.max_order + 1)]  # order -> starts
        self.allocated: dict[int, int] = {}  # start -> order
        self.num_free_units = num_units
        start = 0
        for order in range(self.max_order, -1, -1):
            if num_units >> order & 1:
                self.free_ranges[order].add(start)
                start += 1 << order
        # Ranges of each order an empty pool yields: fixed by the pool's size, asked at every admission.
        self.pool_capacity = [sum(1 << j >> order for j in range(order, self.max_order + 1) if num_units >> j & 1)
                              for order in range(self.max_order + 1)]

    @staticmethod
    def order_for(units: int) -> int:
        return next_pow2(units).bit_length() - 1

    def capacity(self, order: int, free_only: bool = True) -> int:
        """How many ranges of `order` the free ranges (or an empty pool) could yield at once."""
        if order > self.max_order:
            return 0
        if not free_only:
            return self.pool_capacity[order]
        return sum(len(self.free_ranges[j]) << (j - order) for j in range(order, self.max_order + 1))

    def fits(self, order: int, count: int) -> bool:
        """`capacity(order) >= count`, counting only until it is reached (the admission check)."""
        if order > self.max_order:
            return count <= 0
        free, n = self.free_ranges, 0
        for j in range(order, self.max_order + 1):
            n += len(free[j]) << (j - order)
            if n >= count:
                return True
        return n >= count

    def largest_free_order(self) -> int:
        """The order of the largest free range (-1 when nothing is free)."""
        return next((j for j in range(self.max_order, -1, -1) if self.free_ranges[j]), -1)

    def allocate(self, order: int) -> int:
        """Take a range of 2^order units; returns its start (the caller checked `capacity(order) >= 1`)."""
        free, j = self.free_ranges, order
        while not free[j]:  # the smallest order with a free range (IndexError: the caller did not check)
            j += 1
        start = min(free[j])  # lowest address: deterministic, packs the pool from the bottom
        free[j].remove(start)
        while j > order:  # split: keep the lower half, free the upper
            j -= 1
            free[j].add(start + (1 << j))
        self.allocated[start] = order
        self.num_free_units -= 1 << order
        return start

    def free(self, start: int) -> None:
        order = self.allocated.pop(start)
        self.num_free_units += 1 << order
        while order < self.max_order:
            buddy = start ^ (1 << order)
            if buddy not in self.free_ranges[order]:
                break
            self.free_ranges[order].remove(buddy)  # coalesce with the free buddy
            start = min(start, buddy)
            order += 1
        self.free_ranges[order].add(start)

    def check(self) -> None:
        """Free and allocated ranges tile the pool exactly; no two free buddies are left unmerged."""
        spans = sorted([(s, 1 << o) for s, o in self.allocated.items()]
                       + [(s, 1 << o) for o, starts in enumerate(self.free_ranges) for s in starts])
        pos = 0
        for s, size in spans:
            assert s == pos and s % size == 0, f"range {s}+{size} overlaps, leaves a gap or is misaligned"
            pos += size
        assert pos == self.num_units, "ranges do not cover the pool"
        assert self.num_free_units == sum(len(st) << o for o, st in enumerate(self.free_ranges))
        for order, starts in enumerate(self.free_ranges):
            assert not any(s ^ (1 << order) in starts for s in starts), "two free buddies were not merged"


class ContiguousKV(ReservedKV):
    """Orca: one contiguous buddy range per sequence, sized for prompt + the reserved output.
    Implements `sim.kv_layout.KVLayout` (via `ReservedKV`, whose no-ops for growth, sharing and swap hold)."""

    def __init__(self, config: EngineConfig, output_reservation: str,
                 block_manager_cls: type[BlockManager] = BlockManager) -> None:
        if output_reservation not in OUTPUT_RESERVATIONS:
            raise ValueError(f"output_reservation: {output_reservation!r} is not one of "
                             f"{', '.join(OUTPUT_RESERVATIONS)}")
        super().__init__(config, output_reservation == "oracle", block_manager_cls)
        self.output_reservation = output_reservation
        self.buddy = BuddyAllocator(self.bm.num_gpu_blocks)
        self.ranges: dict[int, int] = {}  # sid -> start unit of its range

    @classmethod
    def for_policy(cls, config: EngineConfig, policy, block_manager_cls: type[BlockManager]) -> "ContiguousKV":
        refuse_prefix_caching(config, policy.name)
        return cls(config, policy.output_reservation, block_manager_cls)

    def reservation(self, group: Group) -> int:
        """Slots one sequence reserves: prompt + output, the output per the variant (Sec. 6.1)."""
        base = super().reservation(group)  # true output for Oracle, the longest allowed otherwise
        if self.output_reservation == "pow2":
            return min(group.prompt + next_pow2(group.output), base)
        return base

    def order_for(self, group: Group) -> int:
        """`BuddyAllocator.order_for` of the group's reservation in units (blocks): ceil(log2(units))."""
        return max(0, -(-self.reservation(group) // self.bs) - 1).bit_length()

    def never_fits(self, group: Group) -> str | None:
        order = self.order_for(group)
        if self.buddy.capacity(order, free_only=False) < group.n:
            return (f"needs {group.n} contiguous range(s) of {1 << order} KV blocks ({self.reservation(group)} "
                    f"tokens each, buddy-rounded); the pool of {self.bm.num_gpu_blocks} blocks has no room for them")
        return None

    def status(self, group: Group) -> AllocStatus:
        order = self.order_for(group)
        if self.buddy.capacity(order, free_only=False) < group.n:
            return AllocStatus.NEVER
        # Contiguity, not the free total, decides: free slots may all lie in ranges too small.
        return AllocStatus.OK if self.buddy.fits(order, group.n) else AllocStatus.LATER

    def allocate(self, group: Group) -> int:
        order = self.order_for(group)
        cached = super().allocate(group)
        for seq in group.seqs:
            self.ranges[seq.sid] = self.buddy.allocate(order)
        return cached

    def free(self, group: Group, g: int, cache_output: bool = True) -> None:
        for seq in group.seqs:
            self.buddy.free(self.ranges.pop(seq.sid))
        super().free(group, g, cache_output)

    def used_blocks(self) -> int:
        return self.buddy.num_units - self.buddy.num_free_units  # whole buddy ranges: nobody else can use them

    def logical_blocks(self) -> int:
        return self.used_blocks()  # nothing is shared

    def check(self, groups: Sequence[Group], g: int) -> None:
        super().check(groups, g)
        self.buddy.check()
        sids = [s.sid for grp in groups for s in grp.seqs]
        assert sorted(sids) == sorted(self.ranges), "a sequence without its range, or a range without its sequence"
        assert all(self.buddy.allocated[self.ranges[s.sid]] == self.order_for(grp)
                   for grp in groups for s in grp.seqs), "a range of the wrong size"
        assert self.bm.num_used_gpu_blocks <= self.used_blocks(), "blocks outside the buddy ranges"
