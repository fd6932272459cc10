"""Pieces: the unit in which a caching pool registers, looks up and evicts blocks.

A piece is the blocks one registration chained one after the other: `blocks[i]` holds node `first + i`
and the hash `(first + i - 1, keys[i])` (`(parent, keys[0])` for the first). One registry entry, under
the first block's hash, stands for the whole piece: a lookup that reaches a piece's first block compares
the keys it asks for with the piece's keys (one C comparison of two slices) and takes the blocks that
agree, instead of one registry lookup per block. A cached block never outlives its chain parent, so a
piece loses blocks from its end only: its first `n` blocks are the ones still registered. A chain may
branch off inside a piece: the branch is a piece whose parent is a node in the middle of another.

Kinds: *keyed* (`keys`, looked up through the registry), *private* (`chain`: positions `position`, ...
of one sequence's `memory.block_keys.PrivateChain`, looked up through the chain) and *unreachable*
(neither, and no nodes: cached blocks nobody looks up again, see `memory.evictor`).
"""
from __future__ import annotations

from itertools import groupby
from typing import Hashable, Sequence

from memory.block_keys import PrivateChain

ROOT = 0  # the parent node of a prompt's first block; real node ids start at 1


class Piece:
    """Blocks registered together as one chain: see the module's docstring."""

    __slots__ = ("blocks", "keys", "chain", "position", "parent", "first", "n", "reachable", "_index")

    def __init__(self, blocks: list[int], keys: Sequence[Hashable] | None, chain: PrivateChain | None,
                 position: int, parent: int, first: int) -> None:
        self.blocks = blocks      # never changed: the first `n` are still registered
        self.keys = keys          # keyed pieces: one key per block
        self.chain = chain        # private pieces: the chain they extend, from its `position`
        self.position = position
        self.parent = parent      # the node the first block follows (ROOT for a chain's first block)
        self.first = first        # the node of the first block (ROOT for an unreachable piece)
        self.n = len(blocks)
        self.reachable = first != ROOT  # a lookup could find its blocks
        self._index: dict[int, int] | None = None

    def offset(self, block: int) -> int:
        """Where a block of this piece sits in it (an index built on first use: O(1) afterwards)."""
        blocks = self.blocks
        if blocks[-1] == block:  # a chain's last block so far: no index needed
            return len(blocks) - 1
        index = self._index
        if index is None:
            index = self._index = dict(zip(blocks, range(len(blocks))))
        return index[block]

    def hash_at(self, i: int) -> tuple:
        """The hash of block i: `(parent node, key)`; a private block's key as its listed form
        `("own", owner, position)`; `(ROOT, None)` in an unreachable piece."""
        if not self.reachable:
            return (ROOT, None)
        parent = self.first + i - 1 if i else self.parent
        if self.keys is not None:
            return (parent, self.keys[i])
        return (parent, ("own", self.chain.owner, self.position + i))  # type: ignore[union-attr]


def agreeing(keys: Sequence[Hashable], start: int, piece_keys: Sequence[Hashable], offset: int, count: int) -> int:
    """How many of `keys[start:start + count]` equal `piece_keys[offset:offset + count]` before the first
    that does not: one C comparison when all do, else a bisection of slice comparisons."""
    if keys[start] != piece_keys[offset]:  # a lookup resumed where the keys left the piece: no copies
        return 0
    asked, known = keys[start:start + count], piece_keys[offset:offset + count]
    if type(asked) is not type(known):  # a list never equals a tuple
        asked, known = tuple(asked), tuple(known)
    if asked == known:
        return count
    lo, hi = 0, count - 1  # they agree on the first lo, not on all count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if asked[lo:mid] == known[lo:mid]:  # only the part not yet compared
            lo = mid
        else:
            hi = mid - 1
    return lo


def walk(registry: dict, keys: Sequence[Hashable], start: int, parent: int, hits: list[int],
         spans: list[tuple[Piece, int, int]], piece: Piece | None = None, offset: int = 0) -> int:
    """Extend `hits` (the cached blocks of `keys[:start]`, the last one at node `parent`) along
    `keys[start:]` until the first miss, piece by piece: a lookup enters a piece at its first block and
    takes the blocks whose keys agree. `piece`, `offset`: go on inside that piece first, from its block
    `offset` (`parent` is the node of the block before). Each stretch taken is appended to `spans` as
    `(piece, offset, count)`. Returns the node of the last hit (`parent` if none)."""
    i, n = start, len(keys)
    lookup = registry.get
    while i < n:
        if piece is None:
            piece, offset = lookup((parent, keys[i])), 0
            if piece is None:
                break
            count = min(piece.n, n - i)  # its first key is the one looked up
            if count > 1:
                count = 1 + agreeing(keys, i + 1, piece.keys, 1, count - 1)  # type: ignore[arg-type]
        else:
            count = min(piece.n - offset, n - i)
            if count > 0 and piece.keys is not None:
                count = agreeing(keys, i, piece.keys, offset, count)
            if count <= 0:
                piece = None
                continue
        hits += piece.blocks[offset:offset + count]
        spans.append((piece, offset, count))
        parent = piece.first + offset + count - 1  # where the keys leave the piece, a branch may go on
        i += count
        piece = None
    return parent


def count_unreachable(piece_of: Sequence[Piece | None], blocks: Sequence[int]) -> int:
    """How many of the cached `blocks` (released together, tail first) are unreachable. A table's
    unreachable blocks end its cached ones, all of one piece (`CachingBlockAllocator.mark_unreachable`),
    so they lead: a few steps; else piece by piece."""
    piece = piece_of[blocks[0]]
    if piece.reachable:  # type: ignore[union-attr]
        return 0
    k = min(piece.n, len(blocks))  # type: ignore[union-attr]
    if (list(map(piece_of.__getitem__, blocks[:k])).count(piece) == k
            and (k == len(blocks) or piece_of[blocks[k]].reachable)):  # type: ignore[union-attr]
        return k
    return sum(len(list(stretch)) for piece, stretch in groupby(map(piece_of.__getitem__, blocks))
               if not piece.reachable)  # type: ignore[union-attr]
