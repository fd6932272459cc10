"""A pool of equally sized physical KV blocks with reference counts.

Every operation is O(1) per block: the free list is a LIFO stack (list append/pop at the end) and
refcounts live in a flat list indexed by block id. A refcount of 0 means "on the free list"; there is no
other state. `memory.evictor.CachingBlockAllocator` has the same interface over a free queue that keeps
cached blocks for reuse; both are `BlockPool`s, and the block manager uses only that interface.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from memory.types import SeqBlocks


class NoFreeBlocksError(RuntimeError):
    """The pool has fewer free blocks than the operation needs; nothing was changed."""


def _check_count(name: str, value: int, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")


def num_live_leading(refcounts: Sequence[int], blocks: Sequence[int], below: int = 1) -> int:
    """How many leading `blocks` have a refcount of at least `below`, by bisection: along a block table
    (or a cached chain's prefix) refcounts never increase - whoever holds a block holds the blocks before
    it (a fork copies the whole table, a cache hit takes the whole chain before it, and only the last
    block is ever replaced) - as `memory.prefix_invariants` checks."""
    lo, hi = 0, len(blocks)
    while lo < hi:
        mid = (lo + hi) // 2
        if refcounts[blocks[mid]] >= below:
            lo = mid + 1
        else:
            hi = mid
    return lo


class BlockPool:
    """What every pool shares: block ids `0 .. num_blocks - 1`, their refcounts and the read surface.

    Subclasses keep the free blocks (`BlockAllocator`: a stack; `memory.evictor.CachingBlockAllocator`:
    a queue that keeps cached blocks) and implement `num_free_blocks`, `free_block_ids`, `allocate_many`,
    `_release`, `free_table` and `release_refs`; the block manager uses nothing else.
    """

    __slots__ = ("num_blocks", "_refcounts", "_num_shared")

    def __init__(self, num_blocks: int) -> None:
        _check_count("num_blocks", num_blocks, 0)
        self.num_blocks = num_blocks
        self._refcounts: list[int] = [0] * num_blocks  # never rebound: `refcounts` hands it out
        self._num_shared = 0  # blocks with refcount > 1, kept incrementally

    # ---- read surface ------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation may take."""
        raise NotImplementedError

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def num_shared_blocks(self) -> int:
        """Blocks referenced more than once (shared after a fork)."""
        return self._num_shared

    @property
    def refcounts(self) -> Sequence[int]:
        """The live refcount of every block, indexed by id: a read-only view for hot paths (the list
        itself, never copied; callers must not write to it)."""
        return self._refcounts

    def refcount(self, block: int) -> int:
        return self._refcounts[self._check_id(block)]

    def is_free(self, block: int) -> bool:
        return self._refcounts[self._check_id(block)] == 0

    def is_cached(self, block: int) -> bool:
        """Whether the block is kept for reuse by content (never, unless the pool caches)."""
        self._check_id(block)
        return False

    def free_block_ids(self) -> list[int]:
        """The free blocks, next to be allocated first (O(free): checks and debugging)."""
        raise NotImplementedError

    # ---- references --------------------------------------------------------------------------------
    def allocate(self) -> int:
        """Take a free block; its refcount becomes 1."""
        return self.allocate_many(1)[0]

    def allocate_many(self, count: int) -> list[int]:
        """Take `count` free blocks at once (refcount 1 each), or none: O(count)."""
        raise NotImplementedError

    def allocate_with_refcounts(self, counts: Sequence[int]) -> list[int]:
        """Take `len(counts)` free blocks at once, block i with refcount `counts[i]` (>= 1), or none."""
        blocks = self.allocate_many(len(counts))
        refcounts = self._refcounts
        for block, count in zip(blocks, counts):
            if count > 1:
                refcounts[block] = count
                self._num_shared += 1
        return blocks

    def incref(self, block: int) -> None:
        """Add a reference to an allocated block."""
        rc = self._refcounts[self._check_id(block)]
        if rc == 0:
            raise ValueError(f"incref of free block {block}")
        if rc == 1:
            self._num_shared += 1
        self._refcounts[block] = rc + 1

    def decref(self, block: int) -> bool:
        """Drop a reference; True when it was the last one and the block went back to the free blocks
        (where it goes is the pool's `_release`)."""
        rc = self._refcounts[self._check_id(block)]
        if rc == 0:
            raise ValueError(f"double free: block {block} is already free")
        if rc == 2:
            self._num_shared -= 1
        rc -= 1
        self._refcounts[block] = rc
        if rc:
            return False
        self._release(block)
        return True

    def _release(self, block: int) -> None:
        """Put a block whose last reference was dropped among the free blocks."""
        raise NotImplementedError

    def free_table(self, blocks: Sequence[int]) -> int:
        """Drop one reference from each block of a block table; returns how many became free."""
        raise NotImplementedError

    def release_refs(self, refs: Mapping[int, int], holders: Iterable[SeqBlocks] = ()) -> None:
        """Drop `refs[block]` references from each block (`holders`: the sequences that held them)."""
        raise NotImplementedError

    def _check_id(self, block: int) -> int:
        # Negative ids would silently index from the end of the list.
        if type(block) is not int or not 0 <= block < self.num_blocks:
            raise ValueError(f"block id {block!r} out of range 0..{self.num_blocks - 1}")
        return block


class BlockAllocator(BlockPool):
    """Refcounted allocator over block ids `0 .. num_blocks - 1` with a LIFO free list.

    `allocate` hands out a free block with refcount 1, `incref` adds a reference, `decref` drops one and
    returns the block to the free list when the last reference goes. Misuse (touching a free block, an id
    out of range) raises `ValueError`; an empty pool raises `NoFreeBlocksError`.
    """

    __slots__ = ("_free",)

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        # Reversed so that a fresh pool hands out 0, 1, 2, ... (readable demos and tables).
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def free_block_ids(self) -> list[int]:
        return self._free[::-1]

    # ---- allocation --------------------------------------------------------------------------------
    def allocate(self) -> int:
        """Take a free block; its refcount becomes 1."""
        if not self._free:
            raise NoFreeBlocksError(f"no free blocks (pool of {self.num_blocks})")
        block = self._free.pop()
        self._refcounts[block] = 1
        return block

    def allocate_many(self, count: int) -> list[int]:
        """Take `count` free blocks at once (refcount 1 each), or none: O(count)."""
        free = self._free
        if count == 1 and free:  # one new block: the decode step's case
            block = free.pop()
            self._refcounts[block] = 1
            return [block]
        if count > len(free):
            raise NoFreeBlocksError(
                f"{count} blocks requested, {len(free)} free (pool of {self.num_blocks})"
            )
        if count <= 0:
            return []
        blocks = free[-count:]
        del free[-count:]
        blocks.reverse()  # same order as `count` calls to allocate()
        refcounts = self._refcounts
        for block in blocks:
            refcounts[block] = 1
        return blocks

    def _release(self, block: int) -> None:
        self._free.append(block)

    def free_table(self, blocks: Sequence[int]) -> int:
        """Drop one reference from each block of a block table; returns how many went back to the free
        list. They go back in table order, as one `decref` per block would put them."""
        refcounts = self._refcounts
        for block in blocks:
            if refcounts[block] != 1:
                decref = self.decref
                return sum(1 for block in blocks if decref(block))
        for block in blocks:  # sole holder (the common case): all go back at once
            refcounts[block] = 0
        self._free.extend(blocks)
        return len(blocks)

    def release_refs(self, refs: Mapping[int, int], holders: Iterable[SeqBlocks] = ()) -> None:
        """Drop `refs[block]` references from each block, in the mapping's order (`holders`, the
        sequences that held them, matter only to a caching pool)."""
        refcounts, free = self._refcounts, self._free
        for block, count in refs.items():
            rc = refcounts[block]
            if not 0 < count <= rc:
                raise ValueError(f"release of {count} references to block {block}, which has {rc}")
            if rc > 1 >= rc - count:
                self._num_shared -= 1
            refcounts[block] = rc - count
            if rc == count:
                free.append(block)

    def __repr__(self) -> str:
        return (
            f"BlockAllocator(num_blocks={self.num_blocks}, free={self.num_free_blocks}, "
            f"shared={self._num_shared})"
        )
