"""A pool of equally sized physical KV blocks with reference counts.

Every operation is O(1): the free list is a LIFO stack (list append/pop at the end) and refcounts live
in a flat list indexed by block id. A refcount of 0 means "on the free list"; there is no other state.
"""
from __future__ import annotations


class NoFreeBlocksError(RuntimeError):
    """The pool has fewer free blocks than the operation needs; nothing was changed."""


def _check_count(name: str, value: int, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")


class BlockAllocator:
    """Refcounted allocator over block ids `0 .. num_blocks - 1`.

    `allocate` hands out a free block with refcount 1, `incref` adds a reference, `decref` drops one and
    returns the block to the free list when the last reference goes. Misuse (touching a free block, an id
    out of range) raises `ValueError`; an empty pool raises `NoFreeBlocksError`.
    """

    __slots__ = ("num_blocks", "_free", "_refcounts", "_num_shared")

    def __init__(self, num_blocks: int) -> None:
        _check_count("num_blocks", num_blocks, 0)
        self.num_blocks = num_blocks
        # Reversed so that a fresh pool hands out 0, 1, 2, ... (readable demos and tables).
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        # The block manager reads this list directly on its hot path; it is never rebound.
        self._refcounts: list[int] = [0] * num_blocks
        self._num_shared = 0  # blocks with refcount > 1, kept incrementally

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_shared_blocks(self) -> int:
        """Blocks referenced more than once (shared after a fork)."""
        return self._num_shared

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

    def incref(self, block: int) -> None:
        """Add a reference to an allocated block."""
        rc = self._refcounts[self._check_id(block)]
        if rc == 0:
            raise ValueError(f"incref of free block {block}")
        if rc == 1:
            self._num_shared += 1
        self._refcounts[block] = rc + 1

    def decref(self, block: int) -> bool:
        """Drop a reference; True when it was the last one and the block went back to the free list."""
        rc = self._refcounts[self._check_id(block)]
        if rc == 0:
            raise ValueError(f"double free: block {block} is already free")
        if rc == 2:
            self._num_shared -= 1
        rc -= 1
        self._refcounts[block] = rc
        if rc == 0:
            self._release(block)
            return True
        return False

    def _release(self, block: int) -> None:
        """Where a block goes when its last reference drops (subclasses may keep it cached instead)."""
        self._free.append(block)

    def refcount(self, block: int) -> int:
        return self._refcounts[self._check_id(block)]

    def _check_id(self, block: int) -> int:
        # Negative ids would silently index from the end of the list.
        if type(block) is not int or not 0 <= block < self.num_blocks:
            raise ValueError(f"block id {block!r} out of range 0..{self.num_blocks - 1}")
        return block

    def __repr__(self) -> str:
        return (
            f"BlockAllocator(num_blocks={self.num_blocks}, free={self.num_free_blocks}, "
            f"shared={self._num_shared})"
        )
