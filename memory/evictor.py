"""A block pool whose unreferenced blocks may stay cached: plain-free blocks plus an LRU evictor.

A block is *cached* when it is registered in the prefix cache under a block hash. The hash of a block is
the pair `(parent node, key)`: the node id of the previous block of its chain (`ROOT` for a prompt's first
block) and the caller's key for the block's own content (its token ids, or any key standing for them).
Every registration gets a fresh node id, so a hash names one content chain exactly, with no collisions:
vLLM's `H(hash(block i-1), tokens of block i)`, interned instead of digested.

A block with refcount 0 is either plain free (on the LIFO free list, no hash) or evictable (cached, in
the LRU evictor): both count as free. Allocation takes plain-free blocks first; when none is left it
evicts the least recently freed cached block, dropping its hash. All operations are O(1) per block.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Sequence

from memory.block_allocator import BlockAllocator, NoFreeBlocksError

BlockHash = tuple[int, Hashable]  # (node id of the previous block of the chain or ROOT, block key)
ROOT = 0                          # the parent node of a prompt's first block; real node ids start at 1


class CachingBlockAllocator(BlockAllocator):
    """`BlockAllocator` plus a prefix-cache registry and an LRU evictor of unreferenced cached blocks.

    `decref` to 0 puts a cached block into the evictor (most recently used end) instead of the free list;
    `acquire_many` takes cached blocks, live (incref) or evictable (revive); `allocate`/`allocate_many`
    evict least recently used cached blocks when the plain free list runs out.
    """

    __slots__ = ("_evictor", "_block_by_hash", "_hash_of", "_node_of", "_next_node",
                 "num_evicted_blocks", "num_revived_blocks")

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        # Insertion order is LRU order: the first key is the next block to evict.
        self._evictor: OrderedDict[int, None] = OrderedDict()
        self._block_by_hash: dict[BlockHash, int] = {}
        self._hash_of: list[BlockHash | None] = [None] * num_blocks
        self._node_of: list[int] = [ROOT] * num_blocks
        self._next_node = ROOT + 1
        self.num_evicted_blocks = 0
        self.num_revived_blocks = 0

    # ---- sizes --------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Plain-free plus evictable blocks: everything an allocation may take."""
        return len(self._free) + len(self._evictor)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free) - len(self._evictor)

    @property
    def num_cached_blocks(self) -> int:
        """Evictable blocks: unreferenced, still holding reusable content."""
        return len(self._evictor)

    @property
    def num_registered_blocks(self) -> int:
        """Blocks with a hash, live or evictable."""
        return len(self._block_by_hash)

    # ---- the registry -------------------------------------------------------------------------------
    def lookup(self, parent_node: int, key: Hashable) -> int | None:
        """The cached block of hash `(parent_node, key)`, or None; changes nothing."""
        return self._block_by_hash.get((parent_node, key))

    def node_of(self, block: int) -> int:
        """Node id of a cached block (`ROOT` if it has no hash)."""
        return self._node_of[block]

    def hash_of(self, block: int) -> BlockHash | None:
        return self._hash_of[self._check_id(block)]

    def register_chain(self, blocks: Sequence[int], parent_node: int, keys: Sequence[Hashable]) -> None:
        """Register live, hashless `blocks[i]` under `keys[i]`, each chained after the one before it and
        the first after `parent_node`. The caller has checked that the first hash is not taken (later
        ones cannot be: their parents are new nodes)."""
        block_by_hash, hash_of, node_of = self._block_by_hash, self._hash_of, self._node_of
        node = self._next_node
        for block, key in zip(blocks, keys):
            h = (parent_node, key)
            block_by_hash[h] = block
            hash_of[block] = h
            node_of[block] = parent_node = node
            node += 1
        self._next_node = node

    def acquire_many(self, blocks: Sequence[int]) -> None:
        """One more reference to each cached block: incref if live, revive from the evictor if not."""
        refcounts, evictor = self._refcounts, self._evictor
        for block in blocks:
            rc = refcounts[block]
            if rc == 0:
                del evictor[block]
                self.num_revived_blocks += 1
            elif rc == 1:
                self._num_shared += 1
            refcounts[block] = rc + 1

    def evictable_blocks(self) -> list[int]:
        """Evictable blocks, least recently used first (O(evictable): tests and debugging)."""
        return list(self._evictor)

    # ---- allocation and release ---------------------------------------------------------------------
    def make_plain_free(self, count: int) -> None:
        """Evict LRU cached blocks until `count` blocks are plain free. Does nothing when `count` blocks
        are not free at all, so that a refused operation leaves the cache as it was."""
        short = count - len(self._free)
        if short <= 0 or short > len(self._evictor):
            return
        evictor, free = self._evictor, self._free
        for _ in range(short):
            block, _ = evictor.popitem(last=False)
            del self._block_by_hash[self._hash_of[block]]  # type: ignore[index]
            self._hash_of[block] = None
            self._node_of[block] = ROOT
            free.append(block)
        self.num_evicted_blocks += short

    # Explicit base-class calls rather than super(): these run once per new block on the decode path.
    def allocate(self) -> int:
        if not self._free:
            self.make_plain_free(1)
        return BlockAllocator.allocate(self)

    def allocate_many(self, count: int) -> list[int]:
        if count > len(self._free):
            if count > self.num_free_blocks:
                raise NoFreeBlocksError(
                    f"{count} blocks requested, {self.num_free_blocks} free (pool of {self.num_blocks})"
                )
            self.make_plain_free(count)
        return BlockAllocator.allocate_many(self, count)

    def _release(self, block: int) -> None:
        """The last reference dropped: a cached block becomes evictable (most recently used end), any other
        block plain free."""
        if self._hash_of[block] is None:
            self._free.append(block)
        else:
            self._evictor[block] = None

    def __repr__(self) -> str:
        return (
            f"CachingBlockAllocator(num_blocks={self.num_blocks}, plain free={len(self._free)}, "
            f"evictable={len(self._evictor)}, registered={len(self._block_by_hash)})"
        )
