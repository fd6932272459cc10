"""The hash registry of a caching pool: which content chain each cached block holds, and lookups along chains.

The hash of a block is the pair `(parent node, key)`: the node id of the previous block of its chain
(`ROOT` for a prompt's first block) and the caller's key for the block's own content (its token ids, or
any key standing for them). Every registration gets a fresh node id, so a hash names one content chain
exactly, with no collisions: vLLM's `H(hash(block i-1), tokens of block i)`, interned instead of digested.

Private blocks (`memory.block_keys.ChainKeys`): content only one sequence has (its own prompt tail, its
output) is not keyed through the registry. Its blocks are listed, with their node ids, on the sequence's
`PrivateChain`, and each records `(parent node, chain, position)` as its hash: a lookup walks the chain
while each block still carries the node it was registered as. Same hits as registering
`("own", owner, position)` keys, with no dict entry per block. A block whose hash is `UNREACHABLE` is
cached (see `memory.evictor`) but can never be hit.

`ChainRegistry` is the registry half of `memory.evictor.CachingBlockAllocator`, which adds the free queue.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Sequence

from memory.block_allocator import BlockPool
from memory.block_keys import ChainKeys

BlockHash = tuple[int, Hashable]  # (node id of the previous block of the chain or ROOT, block key)
ROOT = 0                          # the parent node of a prompt's first block; real node ids start at 1
UNREACHABLE = (ROOT, None, -1)    # the hash of a cached block nobody can look up again
RUNS_PRUNE_AT = 1024              # the run index drops its stale entries when it grows past twice its live size


class ChainRegistry(BlockPool):
    """A `BlockPool` whose blocks may hold a registered hash: the registry, lookups and registrations.
    Where free blocks go is the subclass's (`memory.evictor.CachingBlockAllocator`)."""

    __slots__ = ("_hash_of", "_node_of", "_block_by_hash", "_next_node", "_num_private", "_runs", "_runs_limit")

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
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

    # ---- read surface ------------------------------------------------------------------------------
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
