"""KV-cache writes and copy-on-write block copies, each one launch.

`write_kv` scatters the new tokens' K/V into their slots (slot = block * block_size + offset; -1 = skip,
e.g. padding). `copy_blocks` performs the (src, dst) copies that `BlockManager.append_slots` returns when a
shared last block must be copied before a write. Into an fp8 (e4m3) cache `write_kv` stores
x / scale clamped to +-448 (vLLM's scaled fp8 conversion), per tensor or per KV head.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from kernels._common import (
    FP8_DTYPE, FP8_MAX, SUPPORTED_DTYPES, check_cache, check_kv_scales, next_pow2, quantize_fp8,
)
from kernels._launch import FastLauncher

CopyPairs = Sequence[tuple[int, int]] | torch.Tensor


@triton.jit
def _write_kv_kernel(
    k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, ks_ptr, vs_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh, stride_cb, stride_ct, stride_ch, stride_scale,
    NUM_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, FP8: tl.constexpr, FP8_MAX: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    offs_h = tl.arange(0, HEADS_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    valid = (offs_h < NUM_HEADS) & (tl.zeros([HEADS_PAD], dtype=tl.int64) + slot >= 0)  # block mask, not scalar
    mask = valid[:, None] & (offs_d < HEAD_DIM)[None, :]
    src = offs_h[:, None] * stride_kh + offs_d[None, :]
    dst = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_ct + offs_h[:, None] * stride_ch + offs_d[None, :]
    k = tl.load(k_ptr + token * stride_kt + src, mask=mask)
    v = tl.load(v_ptr + token * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask)
    if FP8:
        h_mask = offs_h < NUM_HEADS
        k_scale = tl.load(ks_ptr + offs_h * stride_scale, mask=h_mask, other=1.0)
        v_scale = tl.load(vs_ptr + offs_h * stride_scale, mask=h_mask, other=1.0)
        k = tl.clamp(k.to(tl.float32) / k_scale[:, None], -FP8_MAX, FP8_MAX)
        v = tl.clamp(v.to(tl.float32) / v_scale[:, None], -FP8_MAX, FP8_MAX)
    tl.store(kc_ptr + dst, k.to(kc_ptr.dtype.element_ty), mask=mask)
    tl.store(vc_ptr + dst, v.to(vc_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _copy_blocks_kernel(kc_ptr, vc_ptr, pairs_ptr, BLOCK_NUMEL: tl.constexpr, CHUNK: tl.constexpr):
    pair = tl.program_id(0)
    offs = tl.program_id(1) * CHUNK + tl.arange(0, CHUNK)
    mask = offs < BLOCK_NUMEL
    src = tl.load(pairs_ptr + 2 * pair).to(tl.int64) * BLOCK_NUMEL + offs
    dst = tl.load(pairs_ptr + 2 * pair + 1).to(tl.int64) * BLOCK_NUMEL + offs
    tl.store(kc_ptr + dst, tl.load(kc_ptr + src, mask=mask), mask=mask)
    tl.store(vc_ptr + dst, tl.load(vc_ptr + src, mask=mask), mask=mask)


_launch_write_kv = FastLauncher(_write_kv_kernel)
_launch_copy_blocks = FastLauncher(_copy_blocks_kernel)


def write_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
    *, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> None:
    """Store k, v [num_tokens, num_kv_heads, head_dim] at `slot_mapping` (int32/int64 [num_tokens]; -1 skips).

    An fp8 cache stores k / k_scale and v / v_scale (float32 tensors of 1 or num_kv_heads elements; None:
    1.0) clamped to +-448; k and v then come in the model's dtype (fp16/bf16/fp32).
    """
    _, block_size, num_kv_heads, head_dim = check_cache(k_cache, v_cache)
    k_scale, v_scale, stride_scale = check_kv_scales(k_cache, k_scale, v_scale)
    fp8 = k_cache.dtype == FP8_DTYPE
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache/v_cache: must be contiguous")
    expected = (slot_mapping.shape[0] if slot_mapping.dim() == 1 else -1, num_kv_heads, head_dim)
    for name, t in (("k", k), ("v", v)):
        if tuple(t.shape) != expected:
            raise ValueError(f"{name}: expected shape {expected} (tokens, num_kv_heads, head_dim), got {tuple(t.shape)}")
        if (t.dtype not in SUPPORTED_DTYPES if fp8 else t.dtype != k_cache.dtype) or t.device != k_cache.device:
            raise ValueError(f"{name}: dtype/device {t.dtype}/{t.device} do not fit the cache's {k_cache.dtype}")
        if t.stride(2) != 1:
            raise ValueError(f"{name}: the head_dim axis must be contiguous")
    if slot_mapping.dtype not in (torch.int32, torch.int64) or slot_mapping.device != k_cache.device:
        raise ValueError("slot_mapping: must be an int32/int64 tensor on the cache's device")
    if k.shape[0] == 0:
        return
    tensors = (k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    ints = (k.stride(0), k.stride(1), v.stride(0), v.stride(1), k_cache.stride(0), k_cache.stride(1),
            k_cache.stride(2), stride_scale)
    key = (k.dtype, v.dtype, k_cache.dtype, slot_mapping.dtype, num_kv_heads, head_dim, block_size, ints)
    _launch_write_kv(key, (k.shape[0], 1, 1), (*tensors, *ints), tensors, dict(
        NUM_HEADS=num_kv_heads, HEADS_PAD=next_pow2(num_kv_heads), HEAD_DIM=head_dim,
        HEAD_DIM_PAD=next_pow2(head_dim), BLOCK_SIZE=block_size, FP8=fp8, FP8_MAX=FP8_MAX,
        num_warps=4 if k.is_cuda else 1))


def _pairs_tensor(pairs: CopyPairs, num_blocks: int, device: torch.device) -> torch.Tensor:
    if isinstance(pairs, torch.Tensor):
        if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"pairs: expected an int tensor [n, 2], got {tuple(pairs.shape)} {pairs.dtype}")
        return pairs.to(device=device, dtype=torch.int64).contiguous()
    rows = [tuple(p) for p in pairs]
    for src, dst in rows:
        if not (0 <= src < num_blocks and 0 <= dst < num_blocks):
            raise ValueError(f"pairs: ({src}, {dst}) outside blocks [0, {num_blocks})")
        if src == dst:
            raise ValueError(f"pairs: ({src}, {dst}) copies a block onto itself")
    dsts = [dst for _, dst in rows]
    # One launch copies all pairs at once: a block written and read in the same launch would race.
    if len(set(dsts)) != len(dsts) or set(dsts) & {src for src, _ in rows}:
        raise ValueError("pairs: destinations must be distinct and must not also be sources")
    return torch.tensor(rows, dtype=torch.int64, device=device).reshape(-1, 2)


def copy_blocks(k_cache: torch.Tensor, v_cache: torch.Tensor, pairs: CopyPairs) -> None:
    """Copy whole blocks src -> dst in both caches, one launch for all pairs. Destinations must be distinct
    and not also sources (true for copy-on-write, whose destinations are freshly allocated)."""
    num_blocks, block_size, num_kv_heads, head_dim = check_cache(k_cache, v_cache)
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache/v_cache: must be contiguous")
    pairs_t = _pairs_tensor(pairs, num_blocks, k_cache.device)
    if pairs_t.shape[0] == 0:
        return
    block_numel = block_size * num_kv_heads * head_dim
    chunk = min(next_pow2(block_numel), 4096 if k_cache.is_cuda else 1 << 16)
    tensors = (k_cache, v_cache, pairs_t)
    _launch_copy_blocks((k_cache.dtype, block_numel, chunk), (pairs_t.shape[0], triton.cdiv(block_numel, chunk), 1),
                        tensors, tensors, dict(BLOCK_NUMEL=block_numel, CHUNK=chunk,
                                               num_warps=4 if k_cache.is_cuda else 1))


def write_kv_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
    *, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> None:
    """torch reference of `write_kv` (in place)."""
    block_size = k_cache.shape[1]
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    if k_cache.dtype == FP8_DTYPE:
        k, v = quantize_fp8(k, k_scale), quantize_fp8(v, v_scale)
    k_cache[slots // block_size, slots % block_size] = k[keep]
    v_cache[slots // block_size, slots % block_size] = v[keep]


def copy_blocks_ref(k_cache: torch.Tensor, v_cache: torch.Tensor, pairs: CopyPairs) -> None:
    """torch reference of `copy_blocks` (in place)."""
    pairs_t = _pairs_tensor(pairs, k_cache.shape[0], k_cache.device)
    src, dst = pairs_t[:, 0], pairs_t[:, 1]
    k_cache[dst] = k_cache[src]
    v_cache[dst] = v_cache[src]
