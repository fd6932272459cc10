"""Bookkeeping shared by both KV layouts: decoding sequences are lazy (see `state.Seq`), and O(1) sums over
them give a decode step's summed context and its KV token count without touching any sequence."""
from __future__ import annotations

from memory import BlockManager

from sim.config import EngineConfig
from sim.state import Seq

NEVER = 1 << 62  # a step count no run reaches


class LazyDecode:
    """Sums over lazy sequences that make a step's context and token count O(1)."""

    def __init__(self, config: EngineConfig, num_cpu_blocks: int, watermark: float,
                 block_manager_cls: type[BlockManager] = BlockManager) -> None:
        self.bs = config.block_size
        # The execute backend passes a subclass that logs copies, swaps and forks for the real cache.
        self.bm = block_manager_cls(config.kv_blocks, config.block_size, num_cpu_blocks, watermark)
        self.lazy_b = 0              # lazy sequences
        self.lazy_len_minus_g = 0    # sum of (length - synced_g): context at step G = this + lazy_b * G
        self.lazy_synced = 0         # sum of synced_g: tokens not yet told = lazy_b * G - this
        self._next_sid = 0

    def new_sid(self) -> int:
        self._next_sid += 1
        return self._next_sid

    def lazy_context(self, g: int) -> int:
        return self.lazy_len_minus_g + self.lazy_b * g

    def join(self, seq: Seq, g: int) -> None:
        """`seq` (holding `seq.length` tokens as of step g) decodes lazily from step g + 1 on."""
        seq.synced_g = g
        self.lazy_b += 1
        self.lazy_len_minus_g += seq.length - g
        self.lazy_synced += g
        seq.phase = 0

    def leave(self, seq: Seq, g: int) -> None:
        """Stop decoding lazily at step g; `seq.length` becomes its real length (the block manager's
        only if `sync` was done by the caller)."""
        self.lazy_b -= 1
        self.lazy_len_minus_g -= seq.length - seq.synced_g
        self.lazy_synced -= seq.synced_g
        seq.length += g - seq.synced_g
        seq.synced_g = g
        seq.phase = -1
