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
The queue is kept in its two parts: the plain blocks as a stack (its top is the head) and the cached
ones as an insertion-ordered map (`OrderedDict`, least recently used first): O(1) at both ends and in
the middle, as vLLM's doubly linked list, with whole tables pushed and taken by C loops. Free-block
accounting is the two parts' lengths and nothing else.

Private blocks (`memory.block_keys.ChainKeys`): content only one sequence has (its own prompt tail, its
output) is not keyed through the registry. Its blocks are listed, with their node ids, on the sequence's
`PrivateChain`, and each records `(parent node, chain, position)` as its hash: a lookup walks the chain
while each block still carries the node it was registered as. Same hits, same free queue, same
evictions as registering `("own", owner, position)` keys, with no dict entry per block. A block marked
`UNREACHABLE` is cached (it joins the queue's tail and is evicted in turn, as vLLM V1 keeps every hashed
block) but can never be hit: the full blocks of a finished request. Metrics (`num_cached_blocks`,
`num_evicted_blocks`) count only blocks a lookup could find.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import repeat
from typing import Hashable, Iterable, Mapping, Sequence

from memory.block_allocator import BlockPool, NoFreeBlocksError
from memory.block_keys import ChainKeys
from memory.types import SeqBlocks

BlockHash = tuple[int, Hashable]  # (node id of the previous block of the chain or ROOT, block key)
ROOT = 0                          # the parent node of a prompt's first block; real node ids start at 1
UNREACHABLE = (ROOT, None, -1)    # the hash of a cached block nobody can look up again
RUNS_PRUNE_AT = 1024              # the run index drops its stale entries when it grows past twice its live size


class CachingBlockAllocator(BlockPool):
    """A `BlockPool` over one free queue that keeps released cached blocks for reuse.

    `match` and `acquire_many` find and take cached blocks (incref if live, revive if free); `allocate`
    and `allocate_many` take from the head, evicting cached blocks when no plain one is left.
    """

    __slots__ = ("_plain", "_lru", "_num_unreachable_free", "_hash_of", "_node_of", "_block_by_hash",
                 "_next_node", "_num_private", "num_evicted_blocks", "num_revived_blocks",
                 "unreachable_plain", "_runs", "_runs_limit")

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        # The free queue in two parts: plain blocks (a stack whose top is the queue's head; a fresh pool
        # hands out 0, 1, 2, ... like the plain allocator), then the cached ones in LRU order (an
        # insertion-ordered map: O(1) at both ends and in the middle, bulk pushes in C).
        self._plain: list[int] = list(range(num_blocks - 1, -1, -1))
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._num_unreachable_free = 0  # unreachable blocks in the LRU part
        # A registry hash (parent, key), a private one (parent, chain, position), UNREACHABLE, or None.
        self._hash_of: list[tuple | None] = [None] * num_blocks
        self._node_of: list[int] = [ROOT] * num_blocks
        self._block_by_hash: dict[BlockHash, int] = {}
        self._next_node = ROOT + 1
        # Runs of one key over consecutive blocks (a Mooncake hash id names 32 blocks of 16 tokens), by
        # the node of their first block: a lookup that hits a run's first block takes the blocks after it
        # that still hold their nodes (`_walk`) instead of a registry lookup each. An index only: every
        # block is still registered; an entry whose first block was evicted since is stale and ignored.
        self._runs: dict[int, list[int]] = {}
        self._runs_limit = RUNS_PRUNE_AT
        self._num_private = 0    # blocks with a private or unreachable hash
        self.num_evicted_blocks = 0  # reachable cached blocks evicted
        self.unreachable_plain = True  # see `mark_unreachable` (False: always mark; tests compare)
        self.num_revived_blocks = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._plain) + len(self._lru)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._plain) - len(self._lru)

    # ---- read surface ------------------------------------------------------------------------------
    @property
    def num_cached_blocks(self) -> int:
        """Evictable blocks that a lookup could still find: free, holding reusable content."""
        return len(self._lru) - self._num_unreachable_free

    @property
    def num_registered_blocks(self) -> int:
        """Blocks with a hash, live or evictable."""
        return len(self._block_by_hash) + self._num_private

    def is_cached(self, block: int) -> bool:
        """Whether the block is registered in the prefix cache (live or evictable)."""
        return self._hash_of[self._check_id(block)] is not None

    def hash_of(self, block: int) -> BlockHash | None:
        """The block's hash; a private block's as its listed key `("own", owner, position)`; None for
        a plain block and for an unreachable one's `(ROOT, None)`."""
        h = self._hash_of[self._check_id(block)]
        if h is None or len(h) == 2:
            return h  # type: ignore[return-value]
        if h is UNREACHABLE:
            return (ROOT, None)
        return (h[0], ("own", h[1].owner, h[2]))

    def node_of(self, block: int) -> int:
        """Node id of a cached block (`ROOT` if it has no hash)."""
        return self._node_of[self._check_id(block)]

    @property
    def next_node(self) -> int:
        """The node id the next registration gets (all ids in use are below it)."""
        return self._next_node

    def registered(self) -> dict[BlockHash, int]:
        """A copy of the registry, hash -> block, private blocks listed as `hash_of` names them and
        unreachable ones left out (checks and debugging)."""
        out = dict(self._block_by_hash)
        if self._num_private:
            for block, h in enumerate(self._hash_of):
                if h is not None and len(h) == 3 and h is not UNREACHABLE:
                    out[self.hash_of(block)] = block  # type: ignore[index]
        return out

    def free_block_ids(self) -> list[int]:
        """The free queue from the head: plain blocks (next to allocate first), then cached ones, least
        recently used first (O(free): checks and debugging)."""
        return self._plain[::-1] + list(self._lru)

    def evictable_blocks(self) -> list[int]:
        """Evictable blocks a lookup could find, next to be evicted first (O(free): tests and debugging)."""
        hash_of = self._hash_of
        return [b for b in self._lru if hash_of[b] is not UNREACHABLE]

    # ---- the registry ------------------------------------------------------------------------------
    def match(self, keys: Iterable[Hashable]) -> list[int]:
        """Blocks of the longest cached prefix of `keys`: walk the chain until the first miss."""
        return self._walk(keys if isinstance(keys, (list, tuple)) else list(keys), 0, ROOT, [])

    def _walk(self, keys: Sequence[Hashable], start: int, parent: int, hits: list[int]) -> list[int]:
        """Extend `hits` (the cached blocks of `keys[:start]`, the last one at node `parent`) along
        `keys[start:]` until the first miss. A hit that heads a registered run of its key takes the run's
        next blocks the keys ask for at once, as far as each still carries its node (what looking each up
        would find: block j of a run was registered as `(node of block j - 1, key)`, under the next node).
        A cached block never outlives its chain parent (`memory.prefix_invariants`), so if the last block
        asked for still carries its node, all before it do."""
        lookup, node_of, runs = self._block_by_hash.get, self._node_of, self._runs
        i, n = start, len(keys)
        while i < n:
            key = keys[i]
            block = lookup((parent, key))
            if block is None:
                break
            hits.append(block)
            parent = node_of[block]
            i += 1
            run = runs.get(parent) if runs else None
            if run is None or i == n:
                continue
            count = min(len(run) - 1, n - i)  # the run's blocks after this one that the keys could ask for
            ahead = keys[i:i + count]
            if ahead.count(key) != count:  # the keys leave the run's key early: the leading equal ones
                count = 0
                while ahead[count] == key:
                    count += 1
            if not count:
                continue
            more = run[1:count + 1]
            if node_of[more[-1]] != parent + count:  # else all hold their nodes: none outlives its parent
                count = 0
                while node_of[more[count]] == parent + count + 1:
                    count += 1
                del more[count:]
            hits += more
            parent += count
            i += count
        return hits

    def match_chain(self, keys: ChainKeys) -> list[int]:
        """`match` for compact keys: the shared keys through the registry, then, if all of them hit
        and more blocks are keyed, the private chain while its blocks are still the ones registered.

        The shared part's last answer is kept on the chain (`PrivateChain.memo`: a waiting request asks
        every step, and again when it is allocated): its blocks that still carry the node they had are
        still hits (node ids are never reused, and a block's hash changes only with its node), and the
        walk goes on from the first that does not. A cached block never outlives its chain parent
        (`memory.prefix_invariants`), so those blocks are a prefix of the answer: if its last block still
        carries its node, all do, else the first that does not is found by bisection."""
        chain, shared, num_shared = keys.chain, keys.shared, keys.num_shared
        node_of = self._node_of
        memo = chain.memo
        if memo is not None and memo[0] is shared:
            old, nodes = memo[1], memo[2]
            valid = len(old)
            if valid and node_of[old[-1]] != nodes[-1]:
                valid -= 1  # old[valid] no longer holds its node; old[lo - 1] still does
                lo = 0
                while lo < valid:
                    mid = (lo + valid) // 2
                    if node_of[old[mid]] == nodes[mid]:
                        lo = mid + 1
                    else:
                        valid = mid
            take = min(valid, num_shared)
            hits = list(old[:take]) if take < len(old) else list(old)
            if take < num_shared:
                keyed = shared[:num_shared] if num_shared < len(shared) else shared
                hits = self._walk(keyed, take, nodes[take - 1] if take else ROOT, hits)
            if take < len(old) or len(hits) > take:  # the answer changed: remember the new one
                chain.memo = (shared, tuple(hits), nodes[:take] + list(map(node_of.__getitem__, hits[take:])))
        else:
            hits = self._walk(shared[:num_shared] if num_shared < len(shared) else shared, 0, ROOT, [])
            chain.memo = (shared, tuple(hits), list(map(node_of.__getitem__, hits)))
        limit = keys.num_blocks - len(shared)
        if limit <= 0 or len(hits) < len(shared) or not chain.blocks:
            return hits
        if chain.parent != (node_of[hits[-1]] if hits else ROOT):
            return hits
        nodes = chain.nodes
        for i, block in enumerate(chain.blocks):
            if i >= limit or node_of[block] != nodes[i]:
                break
            hits.append(block)
        return hits


    def register_keys(self, blocks: Sequence[int], position: int, parent_node: int, keys: ChainKeys) -> None:
        """Register live, hashless `blocks` as positions `position`, `position + 1`, ... of `keys` (up to
        its `num_blocks`), the first after `parent_node`: shared positions in the registry (the caller
        has checked that the first is not taken), private ones on the chain, which forgets its blocks
        from that position on."""
        shared = keys.shared
        n_shared = max(min(len(shared), keys.num_blocks) - position, 0)
        if n_shared:
            self.register_chain(blocks[:n_shared], parent_node, shared[position:position + n_shared])
            parent_node = self._node_of[blocks[n_shared - 1]]
            position += n_shared
        count = min(len(blocks) - n_shared, keys.num_blocks - position)
        if count <= 0:
            return
        chain, hash_of, node_of = keys.chain, self._hash_of, self._node_of
        i = position - len(shared)  # the chain's index of `position`
        if i == 0:
            chain.parent = parent_node
        else:
            assert chain.nodes[i - 1] == parent_node, "a private chain grows only behind its own last block"
        del chain.blocks[i:], chain.nodes[i:]
        private = blocks[n_shared:n_shared + count]
        node = first = self._next_node
        for block in private:
            hash_of[block] = (parent_node, chain, position)
            node_of[block] = parent_node = node
            node += 1
            position += 1
        chain.blocks += private
        chain.nodes += range(first, node)
        self._next_node = node
        self._num_private += count

    def mark_unreachable(self, blocks: Sequence[int]) -> bool:
        """Cache live, hashless blocks that no lookup will ask for again, so that they join the queue's
        tail when released and are evicted in turn. Only while some reachable cached block is free: with
        none, they are left plain - released to the head, they are taken before every cached block
        released later, as they would be from the tail (older than those), and what they are taken
        before or after among plain and unreachable blocks changes nothing a lookup can see. True if
        marked. The caller releases them before any other block becomes free."""
        if self.unreachable_plain and len(self._lru) == self._num_unreachable_free:
            return False
        hash_of = self._hash_of
        for block in blocks:
            hash_of[block] = UNREACHABLE
        self._num_private += len(blocks)
        return True

    def register_chain(self, blocks: Sequence[int], parent_node: int, keys: Sequence[Hashable]) -> None:
        """Register live, hashless `blocks[i]` under `keys[i]`, each chained after the one before it and
        the first after `parent_node`. The caller has checked that the first hash is not taken (later
        ones cannot be: their parents are new nodes)."""
        block_by_hash, hash_of, node_of = self._block_by_hash, self._hash_of, self._node_of
        node = first = self._next_node
        for block, key in zip(blocks, keys):
            h = (parent_node, key)
            block_by_hash[h] = block
            hash_of[block] = h
            node_of[block] = parent_node = node
            node += 1
        self._next_node = node
        if node - first > 1:
            self._index_runs(blocks, keys, first, node - first)

    def _index_runs(self, blocks: Sequence[int], keys: Sequence[Hashable], first: int, count: int) -> None:
        """Index the runs of one key among `count` blocks just registered from node `first` on. A run's
        end is found by bisection (a position whose key differs after one whose key is equal), then
        checked by one C count; a run with another key inside is cut there."""
        runs, i = self._runs, 0
        while i < count - 1:
            key = keys[i]
            lo, hi = i, count  # keys[lo] == key; keys[hi] differs, or hi is the end
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if keys[mid] == key:
                    lo = mid
                else:
                    hi = mid
            if keys[i:hi].count(key) != hi - i:  # another key inside: the run ends at the first one
                hi = i + 1
                while keys[hi] == key:
                    hi += 1
            if hi - i > 1:
                runs[first + i] = list(blocks[i:hi])
            i = hi
        if len(runs) > self._runs_limit:
            node_of = self._node_of
            self._runs = runs = {node: run for node, run in runs.items() if node_of[run[0]] == node}
            self._runs_limit = max(RUNS_PRUNE_AT, 2 * len(runs))

    def acquire_many(self, blocks: Sequence[int]) -> None:
        """One more reference to each cached block: incref if live, revive from the free queue if not."""
        refcounts, lru = self._refcounts, self._lru
        revived = shared = 0
        for block in blocks:
            rc = refcounts[block]
            if rc == 0:  # out of the middle of the queue
                del lru[block]
                revived += 1
            elif rc == 1:
                shared += 1
            refcounts[block] = rc + 1
        self.num_revived_blocks += revived
        self._num_shared += shared

    # ---- allocation --------------------------------------------------------------------------------
    def allocate_many(self, count: int) -> list[int]:
        """Take `count` blocks from the head of the free queue (refcount 1 each), or none."""
        plain, refcounts = self._plain, self._refcounts
        if count == 1 and plain:  # one plain block: the decode step's case
            block = plain.pop()
            refcounts[block] = 1
            return [block]
        num_plain = len(plain)
        if count > num_plain + len(self._lru):
            raise NoFreeBlocksError(
                f"{count} blocks requested, {self.num_free_blocks} free (pool of {self.num_blocks})"
            )
        if count <= 0:
            return []
        if count <= num_plain:
            blocks = plain[-count:]
            del plain[-count:]
            blocks.reverse()
        else:
            blocks = self._evict(count - num_plain)
            if num_plain:
                taken = plain[::-1]
                plain.clear()
                blocks += taken
        for block in blocks:
            refcounts[block] = 1
        return blocks

    def _evict(self, count: int) -> list[int]:
        """Take `count` blocks from the front of the LRU part and drop their hashes. They are handed out
        before the plain ones, most recently used first (the order of the former free stack, which took
        the evicted blocks on top of it; kept so that block ids stay the same)."""
        popitem = self._lru.popitem
        evicted: list[int] = []
        take = evicted.append
        hash_of, node_of, block_by_hash = self._hash_of, self._node_of, self._block_by_hash
        private = unreachable = 0
        for _ in range(count):
            block = popitem(False)[0]
            take(block)
            h = hash_of[block]
            hash_of[block] = None
            if h is UNREACHABLE:  # no node, no registry entry: a finished request's block
                unreachable += 1
            elif len(h) == 2:  # type: ignore[arg-type]
                del block_by_hash[h]  # type: ignore[arg-type]
                node_of[block] = ROOT
            else:
                private += 1
                node_of[block] = ROOT
        self._num_private -= private + unreachable
        self._num_unreachable_free -= unreachable
        self.num_evicted_blocks += count - unreachable
        evicted.reverse()
        return evicted

    # ---- release -----------------------------------------------------------------------------------
    def _release(self, block: int) -> None:
        """At the tail if cached (most recently used), at the head if not."""
        h = self._hash_of[block]
        if h is None:
            self._plain.append(block)
        else:
            self._lru[block] = None
            if h is UNREACHABLE:
                self._num_unreachable_free += 1

    def _push_tail(self, blocks: Sequence[int], hashes: Sequence[tuple | None]) -> None:
        """Put cached blocks at the tail, one after the other (the last one is the most recently used);
        `hashes`: theirs."""
        self._lru.update(zip(blocks, repeat(None)))  # from pairs: twice as fast as from a dict
        if self._num_private:
            self._num_unreachable_free += hashes.count(UNREACHABLE)

    def free_table(self, blocks: Sequence[int]) -> int:
        """Drop one reference from each block of a table. Uncached blocks are released in table order,
        cached ones (a prefix of the table: each follows its chain parent) tail first, so a chain's tail
        is evicted before its head and no cached block outlives its parent."""
        refcounts, hash_of = self._refcounts, self._hash_of
        if not blocks:
            return 0
        if max(map(refcounts.__getitem__, blocks)) == 1:  # sole holder: the common case
            for block in blocks:
                refcounts[block] = 0
            hashes = list(map(hash_of.__getitem__, blocks))
            # Cached blocks lead the table (each follows its chain parent): count the plain ones.
            num_cached = len(blocks) - hashes.count(None)
            if num_cached < len(blocks):
                self._plain.extend(blocks[num_cached:] if num_cached else blocks)
            if num_cached:
                self._push_tail(blocks[num_cached - 1::-1], hashes[:num_cached])
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
            f"CachingBlockAllocator(num_blocks={self.num_blocks}, free={self.num_free_blocks} "
            f"({self.num_cached_blocks} cached), registered={self.num_registered_blocks})"
        )
