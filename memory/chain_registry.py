"""The hash registry of a caching pool: which content chain each cached block holds, and lookups along chains.

The hash of a block is the pair `(parent node, key)`: the node id of the previous block of its chain
(`ROOT` for a prompt's first block) and the caller's key for the block's own content (its token ids, or
any key standing for them). Every registration gets fresh node ids, so a hash names one content chain
exactly, with no collisions: vLLM's `H(hash(block i-1), tokens of block i)`, interned instead of digested.

Blocks are registered, looked up and evicted in pieces (`memory.pieces`): the blocks of one registration
share one registry entry and one record, and a block's own state is only which piece holds it. A lookup
compares key slices with a piece's keys instead of looking each block up; registering a block costs one
list store, evicting one another.

Private blocks (`memory.block_keys.ChainKeys`): content only one sequence has (its own prompt tail, its
output) is not keyed through the registry. Its blocks are listed, with their node ids, on the sequence's
`PrivateChain`: a lookup walks the chain while each block still carries the node it was registered as.
Same hits as registering `("own", owner, position)` keys, with no registry entry.

`ChainRegistry` is the registry half of `memory.evictor.CachingBlockAllocator`, which adds the free queue.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Sequence

from memory.block_allocator import BlockPool
from memory.block_keys import ChainKeys, PrivateChain
from memory.pieces import ROOT, Piece, walk

BlockHash = tuple[int, Hashable]  # (node id of the previous block of the chain or ROOT, block key)


class ChainRegistry(BlockPool):
    """A `BlockPool` whose blocks may hold a registered hash: the registry, lookups and registrations.
    Where free blocks go is the subclass's (`memory.evictor.CachingBlockAllocator`)."""

    __slots__ = ("_piece_of", "_heads", "_pieces", "_next_node", "_num_registered", "_num_unreachable",
                 "num_evicted_blocks")

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self._piece_of: list[Piece | None] = [None] * num_blocks  # the piece holding each cached block
        self._heads: dict[BlockHash, Piece] = {}  # keyed pieces by the hash of their first block
        self._pieces: set[Piece] = set()          # every piece with a block still registered
        self._next_node = ROOT + 1
        self._num_registered = 0    # blocks with a hash
        self._num_unreachable = 0   # ... of which unreachable
        self.num_evicted_blocks = 0  # reachable registered blocks evicted (the subclass evicts)

    # ---- read surface ------------------------------------------------------------------------------
    @property
    def num_registered_blocks(self) -> int:
        """Blocks with a hash, live or evictable."""
        return self._num_registered

    def is_cached(self, block: int) -> bool:
        """Whether the block is registered in the prefix cache (live or evictable)."""
        return self._piece_of[self._check_id(block)] is not None

    def hash_of(self, block: int) -> BlockHash | None:
        """The block's hash; a private block's as its listed key `("own", owner, position)`; None for
        a plain block and `(ROOT, None)` for an unreachable one."""
        piece = self._piece_of[self._check_id(block)]
        return None if piece is None else piece.hash_at(piece.offset(block))  # type: ignore[return-value]

    def node_of(self, block: int) -> int:
        """Node id of a cached block (`ROOT` if it has no hash or an unreachable one)."""
        piece = self._piece_of[self._check_id(block)]
        if piece is None or not piece.reachable:
            return ROOT
        return piece.first + piece.offset(block)

    @property
    def next_node(self) -> int:
        """The node id the next registration gets (all ids in use are below it)."""
        return self._next_node

    def registered(self) -> dict[BlockHash, int]:
        """The registry block by block, hash -> block, private blocks listed as `hash_of` names them and
        unreachable ones left out (O(cached): checks and debugging)."""
        keyed = list(self._heads.values())  # what lookups reach
        private = [piece for piece in self._pieces if piece.chain is not None]
        return {piece.hash_at(i): piece.blocks[i] for piece in keyed + private for i in range(piece.n)}

    def num_cached_leading(self, blocks: Sequence[int], end: int) -> int:
        """How many of `blocks[:end]` (a table, whose cached blocks lead) are cached: by bisection."""
        piece_of, start = self._piece_of, 0
        while start < end:
            mid = (start + end) // 2
            if piece_of[blocks[mid]] is None:
                end = mid
            else:
                start = mid + 1
        return start

    def child_registered(self, parent_block: int | None, key: Hashable) -> bool:
        """Whether the hash `(node of parent_block, key)` (`(ROOT, key)` for None) is taken: by the next
        block of the parent's piece or by another piece's first block."""
        if parent_block is None:
            return (ROOT, key) in self._heads
        piece = self._piece_of[parent_block]
        if piece is None or not piece.reachable:
            return (ROOT, key) in self._heads
        i = piece.offset(parent_block)
        if piece.keys is not None and i + 1 < piece.n and piece.keys[i + 1] == key:
            return True
        return (piece.first + i, key) in self._heads

    # ---- lookups -----------------------------------------------------------------------------------
    def match(self, keys: Iterable[Hashable]) -> list[int]:
        """Blocks of the longest cached prefix of `keys`: walk the chain until the first miss."""
        hits: list[int] = []
        walk(self._heads, keys if isinstance(keys, (list, tuple)) else list(keys), 0, ROOT, hits, [])
        return hits

    def match_chain(self, keys: ChainKeys) -> list[int]:
        """`match` for compact keys: the shared keys through the registry, then, if all of them hit
        and more blocks are keyed, the private chain while its blocks are still the ones registered.
        The list returned is read only (it may be the chain's memo).

        The shared part's last answer is kept on the chain (`PrivateChain.memo`: a waiting request asks
        every step and again when it is allocated; beam-search rounds ask with the same keys), with the
        stretches of pieces it took and `num_evicted_blocks` then. A registered block leaves the registry
        only when evicted, and a registration only adds past an answer's end: with no eviction since,
        the memo's blocks all still hit (O(1)); after one, a piece still registers its first blocks (it
        loses blocks from its end only), so the walk goes on from the first stretch that lost some. Past
        the memo's end it looks again: a registration since may have extended the answer."""
        chain, shared, num_shared = keys.chain, keys.shared, keys.num_shared
        memo, evicted = chain.memo, self.num_evicted_blocks
        if memo is not None and memo[0] is shared:
            old, spans = memo[1], memo[2]
            if memo[3] != evicted:  # keep the stretches still registered, the first to lose some cut
                kept, take = [], 0
                for piece, offset, count in spans:
                    valid = min(count, piece.n - offset)
                    if valid <= 0:
                        break
                    kept.append((piece, offset, valid))
                    take += valid
                    if valid < count:
                        break
                if take < len(old):
                    old = old[:take]
                spans = kept
                chain.memo = (shared, old, spans, evicted)
            hits = old[:num_shared] if num_shared < len(old) else old
            if num_shared > len(old):  # go on past the memo's end (inside its last piece first)
                keyed = shared[:num_shared] if num_shared < len(shared) else shared
                more: list[int] = []
                stretches: list = []
                if spans:
                    piece, offset, count = spans[-1]
                    walk(self._heads, keyed, len(old), piece.first + offset + count - 1, more, stretches,
                         piece, offset + count)
                else:
                    walk(self._heads, keyed, 0, ROOT, more, stretches)
                if more:
                    hits = old + more
                    spans = spans + stretches
                    chain.memo = (shared, hits, spans, evicted)
        else:
            hits, spans = [], []
            walk(self._heads, shared[:num_shared] if num_shared < len(shared) else shared, 0, ROOT, hits, spans)
            chain.memo = (shared, hits, spans, evicted)
        limit = keys.num_blocks - len(shared)
        if limit <= 0 or len(hits) < len(shared) or not chain.blocks:
            return hits
        if chain.parent != (spans[-1][0].first + spans[-1][1] + spans[-1][2] - 1 if spans else ROOT):
            return hits
        nodes, node_of, hits = chain.nodes, self.node_of, list(hits)  # the memo's list stays as it is
        for i, block in enumerate(chain.blocks):
            if i >= limit or node_of(block) != nodes[i]:
                break
            hits.append(block)
        return hits

    # ---- registrations -----------------------------------------------------------------------------
    def _adopt(self, piece: Piece) -> None:
        piece_of = self._piece_of
        for block in piece.blocks:
            piece_of[block] = piece
        self._pieces.add(piece)
        self._num_registered += piece.n

    def _drop(self, piece: Piece) -> None:
        """Forget a piece that lost its last block."""
        self._pieces.discard(piece)
        if piece.keys is not None:
            del self._heads[(piece.parent, piece.keys[0])]

    def _lose(self, piece: Piece, taken: int) -> int:
        """A piece lost its last `taken` blocks (evicted: a piece loses blocks from its end only); returns
        how many of them were unreachable."""
        piece.n -= taken
        if not piece.n:
            self._drop(piece)
        return 0 if piece.reachable else taken

    def register_keys(self, blocks: Sequence[int], position: int, parent_node: int, keys: ChainKeys) -> None:
        """Register live, hashless `blocks` as positions `position`, `position + 1`, ... of `keys` (up to
        its `num_blocks`), the first after `parent_node`: shared positions in the registry (the caller
        has checked that the first is not taken), private ones on the chain, which forgets its blocks
        from that position on."""
        shared = keys.shared
        n_shared = max(min(len(shared), keys.num_blocks) - position, 0)
        if n_shared:
            self.register_chain(blocks[:n_shared], parent_node, shared[position:position + n_shared])
            parent_node = self._next_node - 1
            position += n_shared
        count = min(len(blocks) - n_shared, keys.num_blocks - position)
        if count <= 0:
            return
        chain: PrivateChain = keys.chain
        i = position - len(shared)  # the chain's index of `position`
        if i == 0:
            chain.parent = parent_node
        else:
            assert chain.nodes[i - 1] == parent_node, "a private chain grows only behind its own last block"
        del chain.blocks[i:], chain.nodes[i:]
        private = list(blocks[n_shared:n_shared + count])
        first = self._next_node
        self._next_node = first + count
        self._adopt(Piece(private, None, chain, position, parent_node, first))
        chain.blocks += private
        chain.nodes += range(first, first + count)

    def register_chain(self, blocks: Sequence[int], parent_node: int, keys: Sequence[Hashable]) -> None:
        """Register live, hashless `blocks[i]` under `keys[i]`, each chained after the one before it and
        the first after `parent_node`: one piece. The caller has checked that the first hash is not
        taken (later ones cannot be: their parents are new nodes)."""
        count = min(len(blocks), len(keys))
        if not count:
            return
        first = self._next_node
        self._next_node = first + count
        piece = Piece(list(blocks[:count]), keys[:count], None, 0, parent_node, first)
        self._heads[(parent_node, piece.keys[0])] = piece  # type: ignore[index]
        self._adopt(piece)

    def register_unreachable(self, blocks: Sequence[int]) -> None:
        """Cache live, hashless blocks that no lookup will find (no node, no registry entry)."""
        self._adopt(Piece(list(blocks), None, None, 0, ROOT, ROOT))
        self._num_unreachable += len(blocks)
