"""The free queue of a caching pool, held in segments: vLLM V1's `FreeKVCacheBlockQueue` order at the cost of
a few Python operations per segment of blocks instead of per block.

V1's queue (vllm/v1/core/kv_cache_utils.py, `FreeKVCacheBlockQueue`; vllm/v1/core/block_pool.py,
`BlockPool.free_blocks` and `get_new_blocks`) is a doubly linked list: allocation pops from the head,
a released block is appended to the tail, a cached block hit again leaves from the middle. Here the
queue is kept in two parts:

- the plain blocks (no hash) as a stack whose top is the queue's head (`memory.evictor` says why plain
  blocks go to the head);
- the cached blocks as *segments*, in queue order: each segment is blocks released together (a table's
  cached blocks, tail first), the segments in an insertion-ordered map (least recently released first).
  A segment's list holds its blocks from its last to its first: the next block to go is at the list's
  end, so that taking it (an eviction for a decode step) moves no other entry.

Blocks released together are one chain's consecutive blocks, deepest first, so a lookup's hit, a prefix
of a chain, takes from each segment it touches a stretch at the segment's *end* (its least deep blocks, at
the start of its list): `revive` finds that segment by its last block (`tail_of`) and cuts it there with
list slices. Eviction takes whole segments from the front and cuts the last one it reaches. The order of
blocks is exactly the per-block queue's; a block that is not at a segment's end (never, for a pool used
as `memory.evictor` uses it) is still found, by a scan.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import chain
from typing import Sequence


class FreeQueue:
    """Free blocks in eviction order: `plain` (a stack, its top first), then the cached `segments`."""

    __slots__ = ("plain", "segments", "tail_of", "num_cached", "_next_segment")

    def __init__(self, num_blocks: int) -> None:
        # A fresh pool hands out 0, 1, 2, ... like the plain allocator.
        self.plain: list[int] = list(range(num_blocks - 1, -1, -1))
        self.segments: OrderedDict[int, list[int]] = OrderedDict()  # segment id -> its blocks, last first
        self.tail_of: dict[int, int] = {}  # the last block of each segment -> its id
        self.num_cached = 0                # blocks in all segments
        self._next_segment = 0

    def __len__(self) -> int:
        return len(self.plain) + self.num_cached

    def block_ids(self) -> list[int]:
        """The whole queue from the head (O(free): checks and debugging)."""
        return self.plain[::-1] + self.cached_ids()

    def cached_ids(self) -> list[int]:
        """The cached part from the head, least recently used first (O(free))."""
        return list(chain.from_iterable(map(reversed, self.segments.values())))

    def segments_in_order(self) -> list[list[int]]:
        """Each segment's blocks in queue order, least recently released segment first (checks)."""
        return [blocks[::-1] for blocks in self.segments.values()]

    # ---- the tail ----------------------------------------------------------------------------------
    def push(self, blocks: list[int]) -> None:
        """Append cached `blocks` (a new list the queue keeps, and reverses) at the tail, the first one first."""
        if not blocks:
            return
        segment = self._next_segment
        self._next_segment = segment + 1
        blocks.reverse()
        self.segments[segment] = blocks
        self.tail_of[blocks[0]] = segment
        self.num_cached += len(blocks)

    # ---- the head ----------------------------------------------------------------------------------
    def take_cached(self, count: int) -> list[int]:
        """Remove the first `count` cached blocks (<= `num_cached`) and return them in queue order."""
        segments, taken = self.segments, []
        self.num_cached -= count
        while count:
            segment, blocks = next(iter(segments.items()))
            if len(blocks) <= count:
                segments.popitem(False)
                del self.tail_of[blocks[0]]
                blocks.reverse()
                taken += blocks
                count -= len(blocks)
            else:
                taken += blocks[:-count - 1:-1]
                del blocks[-count:]
                count = 0
        return taken

    def take_first(self) -> int:
        """Remove the first cached block (there is one) and return it."""
        segments = self.segments
        blocks = next(iter(segments.values()))
        block = blocks.pop()
        if not blocks:
            segments.popitem(False)
            del self.tail_of[block]
        self.num_cached -= 1
        return block

    # ---- the middle --------------------------------------------------------------------------------
    def revive(self, blocks: Sequence[int]) -> None:
        """Remove cached `blocks` from wherever they are. Fast when they are a chain's blocks from the
        least deep on (a lookup's hits): each stretch is the end of one segment (the start of its list)."""
        segments, tail_of = self.segments, self.tail_of
        i, n = 0, len(blocks)
        while i < n:
            segment = tail_of.pop(blocks[i], None)
            if segment is None:
                self._remove_one(blocks[i])
                i += 1
                continue
            members = segments[segment]  # its end first: the stretch is at the start of the list
            k = min(len(members), n - i)
            if members[:k] != blocks[i:i + k]:
                lo, hi = 1, k  # members[0] == blocks[i]: the longest matching stretch by bisection
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if members[lo:mid] == blocks[i + lo:i + mid]:  # only the part not yet compared
                        lo = mid
                    else:
                        hi = mid - 1
                k = lo
            del members[:k]
            if members:
                tail_of[members[0]] = segment
            else:
                del segments[segment]
            i += k
        self.num_cached -= n

    def _remove_one(self, block: int) -> None:
        """Remove a cached block that ends no segment (O(free); the caller counts it)."""
        for members in self.segments.values():
            if block in members:
                members.remove(block)
                return
        raise ValueError(f"block {block} is not among the free cached blocks")
