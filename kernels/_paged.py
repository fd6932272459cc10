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


@triton.jit
def load_kv_tile(k_ptr, v_ptr, kv_off, n_mask, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                 MASKED: tl.constexpr):
    """K and V tiles [BLOCK_N, HEAD_DIM_PAD] at element offsets `kv_off` (`tile_kv_offsets`); padded head dims
    read 0. Predicated only where it must be: a MASKED tile on its tokens (`n_mask`), an unmasked one only on a
    padded head dim (fewer predicate ops a load in the decode loop, docs/kernels.md "What was tried" 8)."""
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    kv_ptrs = kv_off[:, None] + offs_d[None, :]
    if MASKED:
        tile_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_ptr + kv_ptrs, mask=tile_mask, other=0.0)
        v = tl.load(v_ptr + kv_ptrs, mask=tile_mask, other=0.0)
    elif HEAD_DIM == HEAD_DIM_PAD:
        k = tl.load(k_ptr + kv_ptrs)
        v = tl.load(v_ptr + kv_ptrs)
    else:
        k = tl.load(k_ptr + kv_ptrs, mask=d_mask[None, :], other=0.0)
        v = tl.load(v_ptr + kv_ptrs, mask=d_mask[None, :], other=0.0)
    return k, v


@triton.jit
def widen_e4m3(x):
    """e4m3 -> fp16 (exact), two `cvt.rn.f16x2.e4m3x2` a 32-bit word (sm_89 and later).

    Marked impure so that Triton keeps the conversion where the tile was loaded: its own `.to(tl.float16)` is
    moved past the shared-memory read of a dot operand, and the B operand of `p @ v` (reduced over the token
    axis, 128 bytes apart in a [tokens, 128] fp8 tile; sm_90 has no 8-bit transposing ldmatrix) is then
    gathered one byte a load. Widened first, V is staged as fp16 and read with ldmatrix (sm_90a build,
    Triton 3.6: no LDS.U8 left in the decode loop; where it pays is `widen_v_in_registers`' call).
    """
    return tl.inline_asm_elementwise(
        "{ .reg .b16 lo, hi; mov.b32 {lo, hi}, $2; cvt.rn.f16x2.e4m3x2 $0, lo; cvt.rn.f16x2.e4m3x2 $1, hi; }",
        "=r,=r,r", [x], dtype=tl.float16, is_pure=False, pack=4)
