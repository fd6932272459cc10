"""The CPU swap pool's memory, allocated in chunks on first use (pinned on a GPU machine).

The simulator sizes the CPU pool from `swap_space_gib` (4 GiB by default, i.e. hundreds of thousands of
blocks for a small model); the block manager hands out low block ids first, so only the chunks a run
touches are ever allocated."""
from __future__ import annotations

import torch

CHUNK_BLOCKS = 256


class HostPool:
    def __init__(self, block_shape: tuple[int, ...], dtype: torch.dtype, pinned: bool, poison: bool) -> None:
        # block_shape: (2, layers, block_size, kv_heads, head_dim): K and V of one block, all layers
        self.block_shape, self.dtype, self.pinned, self.poison = block_shape, dtype, pinned, poison
        self.chunks: dict[int, torch.Tensor] = {}

    def _chunk(self, index: int) -> torch.Tensor:
        chunk = self.chunks.get(index)
        if chunk is None:
            two, layers, *rest = self.block_shape
            chunk = torch.zeros((two, layers, CHUNK_BLOCKS, *rest), dtype=self.dtype, pin_memory=self.pinned)
            if self.poison:
                chunk.fill_(float("nan"))
            self.chunks[index] = chunk
        return chunk

    def gather(self, blocks: list[int]) -> torch.Tensor:
        """[2, layers, len(blocks), ...] copy of these blocks (pinned when the pool is)."""
        two, layers, *rest = self.block_shape
        out = torch.empty((two, layers, len(blocks), *rest), dtype=self.dtype, pin_memory=self.pinned)
        for i, block in enumerate(blocks):
            out[:, :, i] = self._chunk(block // CHUNK_BLOCKS)[:, :, block % CHUNK_BLOCKS]
        return out

    def scatter(self, blocks: list[int], data: torch.Tensor) -> None:
        for i, block in enumerate(blocks):
            self._chunk(block // CHUNK_BLOCKS)[:, :, block % CHUNK_BLOCKS] = data[:, :, i]
