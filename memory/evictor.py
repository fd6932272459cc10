"""A block pool whose free blocks may stay cached: one free queue in eviction order plus a hash registry.

A block is *cached* when it is registered in the prefix cache under a block hash (`memory.chain_registry`:
the registry, lookups and registrations). Every free block (refcount 0) sits in one queue, as in vLLM
V1's `BlockPool.free_block_queue` (`FreeKVCacheBlockQueue`, vllm/v1/core/kv_cache_utils.py): allocation
takes blocks from the head; a released cached block joins the tail, so the cached blocks nearest the head
are the least recently used; a cached block taken again (revived) leaves from the middle; a cached block
taken from the head is evicted (its hash dropped). A released block *without* a hash joins the head, as
in vLLM 0.33 (`BlockPool.free_blocks`, vllm/v1/core/block_pool.py:836-847: non-cached blocks prepended
for LIFO reuse): it holds nothing worth keeping, so it is taken before any cached block. The queue
(`memory.free_queue`) keeps the plain blocks as a stack and the cached ones as segments of blocks released
together, so that a table's release, a lookup's revival and an eviction cost a few list operations per
segment, not a map operation per block.

An unreachable block is cached (it joins the queue's tail and is evicted in turn, as vLLM V1 keeps every
hashed block) but can never be hit: the full blocks of a finished request. Metrics (`num_cached_blocks`,
`num_evicted_blocks`) count only blocks a lookup could find.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from memory.block_allocator import NoFreeBlocksError, num_live_leading
from memory.block_keys import PrivateChain
from memory.chain_registry import BlockHash, ChainRegistry
from memory.free_queue import FreeQueue
from memory.pieces import ROOT, count_unreachable
from memory.types import SeqBlocks

__all__ = ["ROOT", "BlockHash", "CachingBlockAllocator"]


class CachingBlockAllocator(ChainRegistry):
    """A `ChainRegistry` over one free queue that keeps released cached blocks for reuse.

    `match` and `acquire_many` find and take cached blocks (incref if live, revive if free); `allocate`
    and `allocate_many` take from the head, evicting cached blocks when no plain one is left.
    """

    __slots__ = ("_queue", "_num_unreachable_free", "num_revived_blocks", "unreachable_plain")

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self._queue = FreeQueue(num_blocks)
        self._num_unreachable_free = 0  # unreachable blocks in the queue's cached part
        self.unreachable_plain = True  # see `mark_unreachable` (False: always mark; tests compare)
        self.num_revived_blocks = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._queue.plain) + self._queue.num_cached

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._queue.plain) - self._queue.num_cached

    # ---- read surface ------------------------------------------------------------------------------
    @property
    def num_cached_blocks(self) -> int:
        """Evictable blocks that a lookup could still find: free, holding reusable content."""
        return self._queue.num_cached - self._num_unreachable_free

    def free_block_ids(self) -> list[int]:
        """The free queue from the head: plain blocks (next to allocate first), then cached ones, least
        recently used first (O(free): checks and debugging)."""
        return self._queue.block_ids()

    def evictable_blocks(self) -> list[int]:
        """Evictable blocks a lookup could find, next to be evicted first (O(free): tests and debugging)."""
        piece_of = self._piece_of
        return [b for b in self._queue.cached_ids() if piece_of[b].reachable]  # type: ignore[union-attr]

    # ---- caching -----------------------------------------------------------------------------------
    def mark_unreachable(self, blocks: Sequence[int]) -> bool:
        """Cache live, hashless blocks that no lookup will ask for again, so that they join the queue's
        tail when released and are evicted in turn. Only while some reachable cached block is free: with
        none, they are left plain - released to the head, they are taken before every cached block
        released later, as they would be from the tail (older than those), and what they are taken
        before or after among plain and unreachable blocks changes nothing a lookup can see. True if
        marked. The caller releases them before any other block becomes free."""
        if self.unreachable_plain and self._queue.num_cached == self._num_unreachable_free:
            return False
        self.register_unreachable(blocks)
        return True

    def forget_chain(self, chain: PrivateChain) -> int:
        """The owner of `chain` is done (a finished request): nobody looks its private blocks up again. Those
        still registered on it stay cached but become unreachable, as if cached so at release: evicted in
        turn, no longer counted as cached or evicted. Returns how many."""
        piece_of, refcounts = self._piece_of, self._refcounts
        pieces = {piece for block in chain.blocks if (piece := piece_of[block]) is not None and piece.chain is chain}
        count = 0
        for piece in pieces:
            live = piece.blocks[:piece.n]
            self._num_unreachable_free += sum(1 for block in live if not refcounts[block])
            piece.reachable, piece.chain, piece.first = False, None, ROOT
            count += piece.n
        self._num_unreachable += count
        chain.blocks.clear()
        chain.nodes.clear()
        chain.memo = None
        return count

    def acquire_many(self, blocks: Sequence[int]) -> None:
        """One more reference to each cached block: incref if live, revive from the free queue if not.
        A lookup's hits are live up to some block and free from there (`num_live_leading`): the free
        ones leave the queue together."""
        refcounts = self._refcounts
        live = num_live_leading(refcounts, blocks)
        self._num_shared += live - num_live_leading(refcounts, blocks, 2)  # those at 1 become shared
        for block in blocks[:live] if live < len(blocks) else blocks:
            refcounts[block] += 1
        if live < len(blocks):
            revived = blocks[live:]
            for block in revived:
                refcounts[block] = 1
            self._queue.revive(revived)
            self.num_revived_blocks += len(revived)

    def touch(self, blocks: Sequence[int]) -> int:
        """A lookup's hits (or a prefix of them) are used now without being taken: the free ones move to
        the queue's tail, deepest first, as if released now - SGLang's radix cache refreshing a matched
        path's LRU time (mem_cache/unified_cache/unified_tree_core.py:1030-1034). Live ones lead the hits
        (`num_live_leading`) and stay as they are; the free rest leave the queue together, as a revival's
        do, and join it again as one segment. Returns how many moved: O(blocks touched)."""
        live = num_live_leading(self._refcounts, blocks)
        if live == len(blocks):
            return 0
        free = list(blocks[live:])
        self._queue.revive(free)
        free.reverse()  # deepest first: a chain's tail is evicted before its head, as after a release
        self._queue.push(free)
        return len(free)

    # ---- allocation --------------------------------------------------------------------------------
    def allocate_many(self, count: int) -> list[int]:
        """Take `count` blocks from the head of the free queue (refcount 1 each), or none."""
        plain, refcounts = self._queue.plain, self._refcounts
        if count == 1 and (plain or self._queue.num_cached):  # one block: the decode step's case
            block = plain.pop() if plain else self._evict_one()
            refcounts[block] = 1
            return [block]
        num_plain = len(plain)
        if count > num_plain + self._queue.num_cached:
            raise NoFreeBlocksError(
                f"{count} blocks requested, {self.num_free_blocks} free (pool of {self.num_blocks})"
            )
        if count <= 0:
            return []
        if count <= num_plain:
            blocks = plain[-count:]
            del plain[-count:]
            blocks.reverse()
            for block in blocks:
                refcounts[block] = 1
            return blocks
        blocks = self._evict(count - num_plain)
        if num_plain:
            taken = plain[::-1]
            plain.clear()
            for block in taken:
                refcounts[block] = 1
            blocks += taken
        return blocks

    def _evict(self, count: int) -> list[int]:
        """Take `count` blocks from the front of the cached part, drop their hashes piece by piece and give
        them refcount 1, in one pass (the least recently used blocks' entries are cold: a C `groupby` over
        them and then a pass of stores took half as long again). They are handed out before the plain
        ones, most recently used first (the order of the former free stack, so that block ids stay)."""
        evicted = self._queue.take_cached(count)
        piece_of, refcounts = self._piece_of, self._refcounts
        unreachable, last, taken = 0, None, 0
        for block in evicted:  # each piece loses its last blocks: they leave the queue deepest first
            piece = piece_of[block]
            piece_of[block] = None
            refcounts[block] = 1  # handed out
            if piece is last:
                taken += 1
                continue
            if taken:
                unreachable += self._lose(last, taken)
            last, taken = piece, 1
        unreachable += self._lose(last, taken)
        self._num_registered -= count
        self._num_unreachable -= unreachable
        self._num_unreachable_free -= unreachable
        self.num_evicted_blocks += count - unreachable
        evicted.reverse()
        return evicted

    def _evict_one(self) -> int:
        """`_evict(1)`, in fewer steps."""
        block = self._queue.take_first()
        piece = self._piece_of[block]
        self._piece_of[block] = None
        piece.n -= 1  # type: ignore[union-attr]
        if not piece.n:  # type: ignore[union-attr]
            self._drop(piece)  # type: ignore[arg-type]
        self._num_registered -= 1
        if piece.reachable:  # type: ignore[union-attr]
            self.num_evicted_blocks += 1
        else:
            self._num_unreachable -= 1
            self._num_unreachable_free -= 1
        return block

    # ---- release -----------------------------------------------------------------------------------
    def _release(self, block: int) -> None:
        """At the tail if cached (most recently used), at the head if not."""
        piece = self._piece_of[block]
        if piece is None:
            self._queue.plain.append(block)
        else:
            self._queue.push([block])
            if not piece.reachable:
                self._num_unreachable_free += 1

    def _push_tail(self, blocks: list[int]) -> None:
        """Put cached blocks at the tail, one after the other (the last one is the most recently used)."""
        if self._num_unreachable:
            self._num_unreachable_free += count_unreachable(self._piece_of, blocks)
        self._queue.push(blocks)  # which keeps (and reverses) the list

    def free_table(self, blocks: Sequence[int]) -> int:
        """Drop one reference from each block of a table. Uncached blocks are released in table order,
        cached ones (a prefix of the table: each follows its chain parent) tail first, so a chain's tail
        is evicted before its head and no cached block outlives its parent."""
        refcounts, piece_of = self._refcounts, self._piece_of
        if not blocks:
            return 0
        if refcounts[blocks[0]] == 1:  # sole holder of all (`num_live_leading`): the common case
            for block in blocks:
                refcounts[block] = 0
            num_cached = self.num_cached_leading(blocks, len(blocks))
            if num_cached < len(blocks):
                self._queue.plain.extend(blocks[num_cached:] if num_cached else blocks)
            if num_cached:
                self._push_tail(blocks[num_cached - 1::-1])
            return len(blocks)
        decref, released = self.decref, 0
        for block in blocks:
            if piece_of[block] is None and decref(block):
                released += 1
        back = []  # the cached blocks whose last reference this was, tail first: one segment
        for block in reversed(blocks):
            if piece_of[block] is None:
                continue
            rc = refcounts[block]
            if rc == 0:
                raise ValueError(f"double free: block {block} is already free")
            if rc == 2:
                self._num_shared -= 1
            refcounts[block] = rc - 1
            if rc == 1:
                back.append(block)
        if back:
            self._push_tail(back)
        return released + len(back)

    def release_refs(self, refs: Mapping[int, int], holders: Iterable[SeqBlocks] = ()) -> None:
        """Drop `refs[block]` references from each block: uncached blocks in the mapping's order, then
        cached ones deepest first (their position in the tables of the `holders`), for the reason of
        `free_table`."""
        piece_of = self._piece_of
        depth: dict[int, int] = {}
        for seq in holders:
            for i, block in enumerate(seq.blocks):
                if piece_of[block] is not None:
                    depth[block] = i
        order = [b for b in refs if b not in depth]
        order += sorted((b for b in refs if b in depth), key=depth.__getitem__, reverse=True)
        decref = self.decref
        for block in order:
            for _ in range(refs[block]):
                decref(block)

    def __repr__(self) -> str:
        return (
            f"CachingBlockAllocator(num_blocks={self.num_blocks}, free={self.num_free_blocks} "
            f"({self.num_cached_blocks} cached), registered={self.num_registered_blocks})"
        )
