"""Triton helpers shared by the paged kernels."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_kv_offsets(bt_row, tile_start, n_mask, head_off, stride_kb, stride_kt,
                    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    """Element offsets [BLOCK_N] (int64, `head_off` included) of the tokens tile_start .. tile_start + BLOCK_N - 1
    in a paged cache whose rows for this sequence start at `bt_row`; MASKED loads only the table entries of
    tokens where `n_mask` holds.

    Tiles start at multiples of BLOCK_N and both sizes are powers of two, so a token's table index and its slot
    in the block split into a per-tile scalar and a loop-invariant vector: no per-token signed division or
    modulo inside the caller's loop (sm_90a build, Triton 3.6: 22% fewer instructions in the one-warp fp8
    decode loop).
    """
    offs_n = tl.arange(0, BLOCK_N)
    if BLOCK_N >= BLOCK_SIZE:
        table_idx = tile_start // BLOCK_SIZE + offs_n // BLOCK_SIZE
        if MASKED:
            block = tl.load(bt_row + table_idx, mask=n_mask, other=0).to(tl.int64)
        else:
            block = tl.load(bt_row + table_idx).to(tl.int64)
        offsets = block * stride_kb + ((offs_n % BLOCK_SIZE) * stride_kt + head_off)
    else:  # the whole tile lies in one block, which exists: the tile's first token is always real
        block = tl.load(bt_row + tile_start // BLOCK_SIZE).to(tl.int64)
        offsets = block * stride_kb + ((tile_start % BLOCK_SIZE + offs_n) * stride_kt + head_off)
    return offsets
