"""A block pool whose free blocks may stay cached: one free queue in eviction order plus a hash registry.

A block is *cached* when it is registered in the prefix cache under a block hash. The hash of a block is
the pair `(parent node, key)`: the node id of the previous block of its chain (`ROOT` for a prompt's first
block) and the caller's key for the block's own content (its token ids, or any key standing for them).
Every registration gets a fresh node id, so a hash names one content chain exactly, with no collisions:
vLLM's `H(hash(block i-1), tokens of block i)`, interned instead of digested.

Every free block (refcount 0) sits in one queue, as in vLLM V1's `BlockPool.free_block_queue`
(`FreeKVCacheBlockQueue`, vllm/v1/core/kv_cache_utils.py): allocation takes blocks from the head; a
released cached block joins the tail, so the cached blocks nearest the head are the least recently used;
a cached block taken again (revived) leaves from the middle; a cached block taken from the head is
evicted (its hash dropped). Unlike vLLM, a released block *without* a hash joins the head: it holds
nothing worth keeping, so it is taken before any cached block (LIFO, as the plain `BlockAllocator`).
The queue is a doubly linked list threaded through two arrays indexed by block id (`_next`, `_prev`, with
one sentinel), as vLLM's: O(1) at both ends and in the middle, no allocation. Free-block accounting is
the queue's length and nothing else.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Mapping, Sequence

from memory.block_allocator import BlockPool, NoFreeBlocksError
from memory.types import SeqBlocks

BlockHash = tuple[int, Hashable]  # (node id of the previous block of the chain or ROOT, block key)
ROOT = 0                          # the parent node of a prompt's first block; real node ids start at 1


class CachingBlockAllocator(BlockPool):
    """A `BlockPool` over one free queue that keeps released cached blocks for reuse.

    `match` and `acquire_many` find and take cached blocks (incref if live, revive if free); `allocate`
    and `allocate_many` take from the head, evicting cached blocks when no plain one is left.
    """

    __slots__ = ("_next", "_prev", "_num_free", "_hash_of", "_node_of", "_block_by_hash", "_next_node",
                 "_num_evictable", "num_evicted_blocks", "num_revived_blocks")

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        # Node `num_blocks` is the sentinel: _next[sentinel] is the head, _prev[sentinel] the tail. A
        # fresh pool hands out 0, 1, 2, ... like the plain allocator.
        n = num_blocks
        self._next: list[int] = list(range(1, n + 2))
        self._prev: list[int] = list(range(-1, n))
        self._next[n], self._prev[0] = 0, n
        if n:
            self._next[n - 1], self._prev[n] = n, n - 1
        self._num_free = n
        self._hash_of: list[BlockHash | None] = [None] * num_blocks
        self._node_of: list[int] = [ROOT] * num_blocks
        self._block_by_hash: dict[BlockHash, int] = {}
        self._next_node = ROOT + 1
        self._num_evictable = 0  # free blocks with a hash (the queue's tail part): a metric
        self.num_evicted_blocks = 0
        self.num_revived_blocks = 0

    @property
    def num_free_blocks(self) -> int:
        return self._num_free

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self._num_free

    # ---- read surface ------------------------------------------------------------------------------
    @property
    def num_cached_blocks(self) -> int:
        """Evictable blocks: free, still holding reusable content."""
        return self._num_evictable

    @property
    def num_registered_blocks(self) -> int:
        """Blocks with a hash, live or evictable."""
        return len(self._block_by_hash)

    def is_cached(self, block: int) -> bool:
        """Whether the block is registered in the prefix cache (live or evictable)."""
        return self._hash_of[self._check_id(block)] is not None

    def hash_of(self, block: int) -> BlockHash | None:
        return self._hash_of[self._check_id(block)]

    def node_of(self, block: int) -> int:
        """Node id of a cached block (`ROOT` if it has no hash)."""
        return self._node_of[self._check_id(block)]

    @property
    def next_node(self) -> int:
        """The node id the next registration gets (all ids in use are below it)."""
        return self._next_node

    def registered(self) -> dict[BlockHash, int]:
        """A copy of the registry, hash -> block (checks and debugging)."""
        return dict(self._block_by_hash)

    def free_block_ids(self) -> list[int]:
        """The free queue from the head: plain blocks (next to allocate first), then cached ones, least
        recently used first. Walks the links (at most `num_blocks` steps, so a broken list shows)."""
        nxt, sentinel, out = self._next, self.num_blocks, []
        block = nxt[sentinel]
        while block != sentinel and len(out) <= self.num_blocks:
            out.append(block)
            block = nxt[block]
        return out

    def evictable_blocks(self) -> list[int]:
        """Evictable blocks, next to be evicted first (O(free): tests and debugging)."""
        hash_of = self._hash_of
        return [b for b in self.free_block_ids() if hash_of[b] is not None]

    # ---- the registry ------------------------------------------------------------------------------
    def match(self, keys: Iterable[Hashable]) -> list[int]:
        """Blocks of the longest cached prefix of `keys`: walk the chain until the first miss."""
        lookup, node_of = self._block_by_hash.get, self._node_of
        parent, hits = ROOT, []
        for key in keys:
            block = lookup((parent, key))
            if block is None:
                break
            hits.append(block)
            parent = node_of[block]
        return hits

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
        """One more reference to each cached block: incref if live, revive from the free queue if not."""
        refcounts, nxt, prv = self._refcounts, self._next, self._prev
        revived = shared = 0
        for block in blocks:
            rc = refcounts[block]
            if rc == 0:  # unlink from the middle of the queue
                after, before = nxt[block], prv[block]
                nxt[before], prv[after] = after, before
                revived += 1
            elif rc == 1:
                shared += 1
            refcounts[block] = rc + 1
        self._num_free -= revived
        self._num_evictable -= revived
        self.num_revived_blocks += revived
        self._num_shared += shared

    # ---- allocation --------------------------------------------------------------------------------
    def allocate_many(self, count: int) -> list[int]:
        """Take `count` blocks from the head of the free queue (refcount 1 each), or none."""
        num_free = self._num_free
        if count > num_free:
            raise NoFreeBlocksError(
                f"{count} blocks requested, {num_free} free (pool of {self.num_blocks})"
            )
        if count <= 0:
            return []
        nxt, refcounts, sentinel = self._next, self._refcounts, self.num_blocks
        if count == 1 and num_free > self._num_evictable:  # one plain block: the decode step's case
            block = nxt[sentinel]
            head = nxt[block]
            nxt[sentinel], self._prev[head] = head, sentinel
            refcounts[block] = 1
            self._num_free = num_free - 1
            return [block]
        block = sentinel
        blocks = [block := nxt[block] for _ in range(count)]  # walk from the head
        for block in blocks:
            refcounts[block] = 1
        head = nxt[block]  # unlink the whole run at once
        nxt[sentinel], self._prev[head] = head, sentinel
        self._num_free = num_free - count
        plain = num_free - self._num_evictable
        if count > plain:
            blocks = self._evict(blocks, plain)
        return blocks

    def _evict(self, blocks: list[int], plain: int) -> list[int]:
        """`blocks[plain:]` came from the cached part of the queue: drop their hashes. They are handed out
        first, most recently used first, then the plain ones (the order of the former free stack, which
        took the evicted blocks on top of it; kept so that block ids stay the same)."""
        evicted = blocks[plain:]
        hash_of, node_of, block_by_hash = self._hash_of, self._node_of, self._block_by_hash
        for block in evicted:
            del block_by_hash[hash_of[block]]  # type: ignore[arg-type]
            hash_of[block] = None
            node_of[block] = ROOT
        self._num_evictable -= len(evicted)
        self.num_evicted_blocks += len(evicted)
        evicted.reverse()
        return evicted + blocks[:plain]

    # ---- release -----------------------------------------------------------------------------------
    def _release(self, block: int) -> None:
        """At the tail if cached (most recently used), at the head if not."""
        if self._hash_of[block] is None:
            self._push_head([block])
        else:
            self._push_tail([block])

    def _push_head(self, blocks: Sequence[int]) -> None:
        """Put plain blocks at the head, one after the other (the last one is taken first)."""
        nxt, prv, sentinel = self._next, self._prev, self.num_blocks
        first = nxt[sentinel]
        for block in blocks:
            nxt[block] = first
            prv[first] = first = block
        nxt[sentinel], prv[first] = first, sentinel
        self._num_free += len(blocks)

    def _push_tail(self, blocks: Sequence[int]) -> None:
        """Put cached blocks at the tail, one after the other (the last one is the most recently used)."""
        nxt, prv, sentinel = self._next, self._prev, self.num_blocks
        last = prv[sentinel]
        for block in blocks:
            prv[block] = last
            nxt[last] = last = block
        prv[sentinel], nxt[last] = last, sentinel
        self._num_free += len(blocks)
        self._num_evictable += len(blocks)

    def free_table(self, blocks: Sequence[int]) -> int:
        """Drop one reference from each block of a table. Uncached blocks are released in table order,
        cached ones (a prefix of the table: each follows its chain parent) tail first, so a chain's tail
        is evicted before its head and no cached block outlives its parent."""
        refcounts, hash_of = self._refcounts, self._hash_of
        if all(refcounts[block] == 1 for block in blocks):  # sole holder: the common case
            for block in blocks:
                refcounts[block] = 0
            num_cached = 0  # cached blocks lead the table: each follows its chain parent
            while num_cached < len(blocks) and hash_of[blocks[num_cached]] is not None:
                num_cached += 1
            if num_cached < len(blocks):
                self._push_head(blocks[num_cached:] if num_cached else blocks)
            if num_cached:
                self._push_tail(blocks[num_cached - 1::-1])
            return len(blocks)
        decref, released = self.decref, 0
        for block in blocks:
            if hash_of[block] is None and decref(block):
                released += 1
        for block in reversed(blocks):
            if hash_of[block] is not None and decref(block):
                released += 1
        return released

    def release_refs(self, refs: Mapping[int, int], holders: Iterable[SeqBlocks] = ()) -> None:
        """Drop `refs[block]` references from each block: uncached blocks in the mapping's order, then
        cached ones deepest first (their position in the tables of the `holders`), for the reason of
        `free_table`."""
        hash_of = self._hash_of
        depth: dict[int, int] = {}
        for seq in holders:
            for i, block in enumerate(seq.blocks):
                if hash_of[block] is not None:
                    depth[block] = i
        order = [b for b in refs if b not in depth]
        order += sorted((b for b in refs if b in depth), key=depth.__getitem__, reverse=True)
        decref = self.decref
        for block in order:
            for _ in range(refs[block]):
                decref(block)

    def __repr__(self) -> str:
        return (
            f"CachingBlockAllocator(num_blocks={self.num_blocks}, free={self._num_free} "
            f"({self._num_evictable} cached), registered={len(self._block_by_hash)})"
        )
