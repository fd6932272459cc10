"""Plain types shared by the block manager, swap, prefix caching and the invariant checks.

Kept apart so that helper modules (`memory.swap`, `memory.invariants`, ...) need not import the block
manager for them: nothing in `memory/` imports a module that imports it back.
"""
from __future__ import annotations

from typing import Hashable, Sequence

SeqId = Hashable                      # any hashable value names a sequence
Copies = Sequence[tuple[int, int]]    # (src block, dst block) copy-on-write copies to perform
BlockMapping = dict[int, int]         # swap: source block -> its twin in the other pool

# Returned by every append that needs no copy: shared and immutable, so the hot path allocates nothing.
NO_COPIES: tuple[tuple[int, int], ...] = ()


class SeqBlocks:
    """One sequence's block table and token count; its tokens fill the blocks in order.

    `num_cached_tokens`: prompt tokens a prefix-caching allocation found cached (0 otherwise).
    """

    __slots__ = ("blocks", "num_tokens", "num_cached_tokens")

    def __init__(self, blocks: list[int], num_tokens: int, num_cached_tokens: int = 0) -> None:
        self.blocks = blocks
        self.num_tokens = num_tokens
        self.num_cached_tokens = num_cached_tokens

    def block_fills(self, block_size: int) -> list[int]:
        """Tokens held in each block: full blocks, then a possibly partial last one."""
        n = len(self.blocks)
        if n == 0:
            return []
        return [block_size] * (n - 1) + [self.num_tokens - (n - 1) * block_size]

    def __repr__(self) -> str:
        return f"SeqBlocks(blocks={self.blocks}, num_tokens={self.num_tokens})"
