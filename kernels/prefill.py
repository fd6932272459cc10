"""Chunked-prefill paged attention: causal attention of new tokens over each sequence's whole cached context.

The new tokens' K/V are already in the cache (`write_kv` runs first), so a chunk of `q_len` queries of a
sequence with `seq_len` cached tokens sits at positions seq_len - q_len ... seq_len - 1 and query i sees
keys 0 ... seq_len - q_len + i. One program owns BLOCK_M queries of one (sequence, query head); keys left
of the chunk's first position are visible to every row and skip the causal mask, the rest are masked.
An fp8 cache is dequantized in the kernel as in `paged_decode` (tiles converted to q's dtype, K scale in
the softmax scale, V scale on the output).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._common import (
    FP8_DTYPE, attention_ref, check_cache, check_index, check_kv_scales, check_out, check_query, default_scale,
    dequantize_cache, dot_precision, gather_sequence, next_pow2,
)
from kernels._launch import FastLauncher
from kernels._paged import tile_kv_offsets
from kernels.decode import LOG2E


@triton.jit
def _attend_tile(acc, l_i, m_i, q, k_ptr, v_ptr, bt_row, head_off, tile_start, rows_pos, key_end,
                 offs_n, offs_d, d_mask, stride_kb, stride_kt, qk_scale,
                 BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, FP8: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, WHOLE: tl.constexpr):
    """One K/V tile into the online softmax state. WHOLE: every token of the tile exists and every head-dim
    column is real, so loads take no masks (unpredicated copies); CAUSAL: scores right of a row are masked."""
    tokens = tile_start + offs_n
    n_mask = tokens < key_end
    kv_ptrs = tile_kv_offsets(bt_row, tile_start, n_mask, head_off, stride_kb, stride_kt, BLOCK_SIZE, BLOCK_N,
                              not WHOLE)[:, None] + offs_d[None, :]
    tile_mask = n_mask[:, None] & d_mask[None, :]
    if WHOLE:
        k = tl.load(k_ptr + kv_ptrs)
    else:
        k = tl.load(k_ptr + kv_ptrs, mask=tile_mask, other=0.0)
    if FP8:  # e4m3 -> q's dtype (fp16 or fp32 here) is exact
        k = k.to(q.dtype)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    if CAUSAL:
        s = tl.where((tokens[None, :] <= rows_pos[:, None]) & n_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    if WHOLE:
        v = tl.load(v_ptr + kv_ptrs)
    else:
        v = tl.load(v_ptr + kv_ptrs, mask=tile_mask, other=0.0)
    if FP8:
        v = v.to(q.dtype)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, l_i * alpha + tl.sum(p, 1), m_new


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, qstart_ptr, out_ptr, ks_ptr, vs_ptr,
    stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_ot, stride_oh, stride_scale, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FP8: tl.constexpr, FP8_TO_F32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)
    q_begin = tl.load(qstart_ptr + seq)
    q_len = tl.load(qstart_ptr + seq + 1) - q_begin
    if tile * BLOCK_M < q_len:
        seq_len = tl.load(lens_ptr + seq)
        first_pos = seq_len - q_len  # absolute position of the chunk's first query
        offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM_PAD)
        d_mask = offs_d < HEAD_DIM
        m_mask = offs_m < q_len
        rows_pos = first_pos + offs_m
        q_ptrs = q_ptr + (q_begin + offs_m)[:, None] * stride_qt + head * stride_qh + offs_d[None, :]
        q = tl.load(q_ptrs, mask=m_mask[:, None] & d_mask[None, :], other=0.0)
        if FP8 and not FP8_TO_F32:
            q = q.to(tl.float16)  # e4m3 widens to fp16 in one instruction a pair; bf16 would take three
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
        bt_row = bt_ptr + seq * stride_bt
        head_off = (head // GROUP) * stride_kh
        if FP8:
            qk_scale = qk_scale * tl.load(ks_ptr + (head // GROUP) * stride_scale)
        # Keys before the tile's first query position are visible to all its rows and all exist: no masks.
        full_end = (first_pos + tile * BLOCK_M) // BLOCK_N * BLOCK_N
        for tile_start in range(0, full_end, BLOCK_N):
            acc, l_i, m_i = _attend_tile(acc, l_i, m_i, q, k_ptr, v_ptr, bt_row, head_off, tile_start, rows_pos,
                                         seq_len, offs_n, offs_d, d_mask, stride_kb, stride_kt, qk_scale,
                                         BLOCK_SIZE, BLOCK_N, False, FP8, DOT_PRECISION, HEAD_DIM == HEAD_DIM_PAD)
        key_end = tl.minimum(seq_len, first_pos + tile * BLOCK_M + BLOCK_M)
        for tile_start in range(full_end, key_end, BLOCK_N):
            acc, l_i, m_i = _attend_tile(acc, l_i, m_i, q, k_ptr, v_ptr, bt_row, head_off, tile_start, rows_pos,
                                         key_end, offs_n, offs_d, d_mask, stride_kb, stride_kt, qk_scale,
                                         BLOCK_SIZE, BLOCK_N, True, FP8, DOT_PRECISION, False)
        acc = acc / tl.where(m_mask, l_i, 1.0)[:, None]
        if FP8:
            acc = acc * tl.load(vs_ptr + (head // GROUP) * stride_scale)
        out_ptrs = out_ptr + (q_begin + offs_m)[:, None] * stride_ot + head * stride_oh + offs_d[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


@dataclass(frozen=True)
class PrefillConfig:
    """Launch configuration of the prefill kernel: `block_m` queries x `block_n` keys, warps, stages."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise ValueError(f"{name}: must be a power of two >= 16, got {v}")
        if self.num_warps not in (1, 2, 4, 8, 16) or self.num_stages < 1:
            raise ValueError(f"num_warps/num_stages: got {self.num_warps}/{self.num_stages}")


def default_prefill_config(head_dim: int, on_gpu: bool, elem_size: int = 2) -> PrefillConfig:
    """Tiny tiles in the interpreter, where size is time. On the GPU shared memory holds q plus
    `kernels.decode_config.kv_buffers(num_stages)` K/V tiles, which must fit in 227 KB per program."""
    if not on_gpu:
        return PrefillConfig(32, 32, 1, 1)
    if head_dim > 128 or elem_size > 2:
        return PrefillConfig(64, 32, 4, 2)
    # H200: 128x128 tiles beat 128x64 (297 vs 238 TFLOP/s, 512-token chunk over 4096); 5 stages give K/V two
    # buffers (`kv_buffers`): bf16 336 vs 299 TFLOP/s (1 x 512), fp8 255 vs 239 (docs/kernels.md)
    return PrefillConfig(128, 128, 8, 5)


_launch_prefill = FastLauncher(_prefill_kernel)


@functools.lru_cache(maxsize=4096)
def _meta(num_q_heads: int, num_kv_heads: int, head_dim: int, block_size: int, q_dtype: torch.dtype, fp8: bool,
          elem_size: int, on_gpu: bool, config: PrefillConfig | None) -> tuple[int, dict]:
    cfg = config or default_prefill_config(head_dim, on_gpu, elem_size)
    return cfg.block_m, dict(
        GROUP=num_q_heads // num_kv_heads, HEAD_DIM=head_dim, HEAD_DIM_PAD=next_pow2(head_dim),
        BLOCK_SIZE=block_size, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, FP8=fp8, FP8_TO_F32=q_dtype == torch.float32,
        DOT_PRECISION=dot_precision(q_dtype),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def paged_prefill(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, query_start_loc: torch.Tensor, *, scale: float | None = None,
    max_query_len: int | None = None, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
    config: PrefillConfig | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal paged attention for chunks of new tokens; q, out: [num_tokens, num_q_heads, head_dim].

    Sequence i's queries are q[query_start_loc[i]:query_start_loc[i+1]] (int32, num_seqs + 1 entries);
    `seq_lens[i]` counts its cached tokens including the chunk. Pass `max_query_len` to avoid a host sync.
    An fp8 cache takes `k_scale`/`v_scale` as `paged_decode` does; `config` overrides the launch configuration.
    """
    _, block_size, num_kv_heads, head_dim = check_cache(k_cache, v_cache)
    num_tokens, num_q_heads = check_query(q, k_cache, rank=3)
    num_seqs = seq_lens.shape[0] if seq_lens.dim() == 1 else -1
    check_index(seq_lens, "seq_lens", 1, None, k_cache.device)
    check_index(block_tables, "block_tables", 2, num_seqs, k_cache.device)
    check_index(query_start_loc, "query_start_loc", 1, num_seqs + 1, k_cache.device)
    out = check_out(out, q)
    k_scale, v_scale, stride_scale = check_kv_scales(k_cache, k_scale, v_scale)
    if num_tokens == 0 or num_seqs == 0:
        return out
    if max_query_len is None:
        max_query_len = int(torch.diff(query_start_loc).max().item())
    if max_query_len <= 0:
        return out
    scale = default_scale(head_dim, scale)
    block_m, meta = _meta(num_q_heads, num_kv_heads, head_dim, block_size, q.dtype, k_cache.dtype == FP8_DTYPE,
                          q.element_size(), q.is_cuda, config)
    grid = (triton.cdiv(max_query_len, block_m), num_q_heads, num_seqs)
    tensors = (q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out, k_scale, v_scale)
    ints = (q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            block_tables.stride(0), out.stride(0), out.stride(1), stride_scale)
    key = (num_q_heads, num_kv_heads, head_dim, block_size, q.dtype, k_cache.dtype, config, ints)
    _launch_prefill(key, grid, (*tensors, *ints, scale * LOG2E), tensors, meta)
    return out


def paged_prefill_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, query_start_loc: torch.Tensor, *, scale: float | None = None,
    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """float64 reference over each sequence's contiguous K/V (an fp8 cache dequantized as the kernel does)
    with a bottom-right-aligned causal mask."""
    scale = default_scale(q.shape[-1], scale)
    k_cache, v_cache = dequantize_cache(k_cache, k_scale), dequantize_cache(v_cache, v_scale)
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    starts = query_start_loc.tolist()
    for i, length in enumerate(seq_lens.tolist()):
        lo, hi = starts[i], starts[i + 1]
        if hi == lo:
            continue
        k = gather_sequence(k_cache, block_tables[i], length)
        v = gather_sequence(v_cache, block_tables[i], length)
        out[lo:hi] = attention_ref(q[lo:hi], k, v, scale, causal_offset=length - (hi - lo))
    return out
