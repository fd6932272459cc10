"""One-pass paged decode attention (FlashAttention-style online softmax, flash-decoding split-K).

One program owns (sequence, KV head, split): it loads the query heads that share the KV head as one
[GROUP, head_dim] tile, then streams that sequence's K/V through the block table BLOCK_N tokens at a time.
Each K/V tile is read from device memory exactly once; scores stay in registers; a running max `m` and
sum `l` rescale the partial output. With few sequences and long contexts the context is cut into
`num_splits` ranges whose normalized partial outputs and log-sum-exps are merged by a second small kernel.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from kernels._common import (
    attention_ref, check_cache, check_index, check_out, check_query, default_scale, dot_precision,
    gather_sequence, next_pow2,
)

LOG2E = 1.4426950408889634
MAX_SPLITS = 64
MIN_TOKENS_PER_SPLIT = 128  # below this a split's fixed cost (q load, merge traffic) outweighs its parallelism
TARGET_PROGRAMS_PER_SM = 4  # two full waves at two resident programs per SM (H200 sweep, docs/kernels.md)
SMEM_BUDGET = 160 * 1024  # bytes of pipelined K/V tiles per program; leaves room below the 227 KB limit


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, lse_ptr,
    stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt,
    stride_os, stride_oh, stride_osplit, stride_ls, stride_lh,
    qk_scale, num_splits,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(lens_ptr + seq)
    # Each split gets a whole number of BLOCK_N tiles; trailing splits may be empty.
    tokens_per_split = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, seq_len)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    d_mask = offs_d < HEAD_DIM
    g_mask = offs_g < GROUP
    heads = kv_head * GROUP + offs_g
    q = tl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)

    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], dtype=tl.float32)
    bt_row = bt_ptr + seq * stride_bt
    head_off = kv_head * stride_kh
    for tile_start in range(start, end, BLOCK_N):
        tokens = tile_start + offs_n
        n_mask = tokens < end
        block = tl.load(bt_row + tokens // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        kv_off = block * stride_kb + (tokens % BLOCK_SIZE) * stride_kt + head_off
        tile_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_ptr + kv_off[:, None] + offs_d[None, :], mask=tile_mask, other=0.0)
        v = tl.load(v_ptr + kv_off[:, None] + offs_d[None, :], mask=tile_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    has_tokens = l_i > 0  # false only for an empty split
    acc = acc / tl.where(has_tokens, l_i, 1.0)[:, None]
    out_mask = g_mask[:, None] & d_mask[None, :]
    out_ptrs = out_ptr + seq * stride_os + heads[:, None] * stride_oh + split * stride_osplit + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    if SPLIT:
        lse = tl.where(has_tokens, m_i + tl.log2(tl.where(has_tokens, l_i, 1.0)), float("-inf"))
        tl.store(lse_ptr + seq * stride_ls + heads * stride_lh + split, lse, mask=g_mask)


@triton.jit
def _merge_kernel(
    part_ptr, lse_ptr, out_ptr,
    stride_ps, stride_ph, stride_psplit, stride_ls, stride_lh, stride_os, stride_oh, num_splits,
    SPLITS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    s_mask = offs_s < num_splits
    lse = tl.load(lse_ptr + seq * stride_ls + head * stride_lh + offs_s, mask=s_mask, other=float("-inf"))
    weight = tl.exp2(lse - tl.max(lse, 0))  # split 0 is never empty, so the max is finite
    part = tl.load(part_ptr + seq * stride_ps + head * stride_ph + offs_s[:, None] * stride_psplit + offs_d[None, :],
                   mask=s_mask[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    out = tl.sum(part * weight[:, None], 0) / tl.sum(weight, 0)
    tl.store(out_ptr + seq * stride_os + head * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty),
             mask=offs_d < HEAD_DIM)


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_context: int, num_sms: int) -> int:
    """Split the context so (seq, kv head, split) programs fill about TARGET_PROGRAMS_PER_SM per SM.

    Rounded down: a partial extra wave costs more than slightly fewer programs (seen at 16 x 16384: 5 splits
    took 324 us, 4 took 255 us on an H200).
    """
    programs = num_seqs * num_kv_heads
    target = TARGET_PROGRAMS_PER_SM * num_sms
    splits = min(target // programs, max_context // MIN_TOKENS_PER_SPLIT, MAX_SPLITS)
    return max(1, splits)


def _launch_config(head_dim: int, on_gpu: bool, elem_size: int = 2) -> tuple[int, int, int]:
    """(BLOCK_N, num_warps, num_stages); small tiles in the interpreter, where size is time."""
    if not on_gpu:
        return 32, 1, 1
    block_n, stages = (32, 2) if head_dim > 128 else (64, 3)
    stage_bytes = 2 * block_n * next_pow2(head_dim) * elem_size  # one K and one V tile
    return block_n, 4, max(1, min(stages, SMEM_BUDGET // stage_bytes))


def check_decode_args(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, out: torch.Tensor | None,
) -> tuple[int, int, int, int, int, torch.Tensor]:
    """Validate a decode call's arguments (shared by `paged_decode` and `paged_decode_two_pass`).

    Returns (block_size, num_kv_heads, head_dim, num_seqs, num_q_heads, out), `out` allocated if None.
    """
    _, block_size, num_kv_heads, head_dim = check_cache(k_cache, v_cache)
    num_seqs, num_q_heads = check_query(q, k_cache, rank=3)
    check_index(block_tables, "block_tables", 2, num_seqs, k_cache.device)
    check_index(seq_lens, "seq_lens", 1, num_seqs, k_cache.device)
    return block_size, num_kv_heads, head_dim, num_seqs, num_q_heads, check_out(out, q)


def paged_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, *, scale: float | None = None, num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one new token per sequence over its paged context; q, out: [num_seqs, num_q_heads, head_dim].

    `seq_lens[i]` (>= 1) counts the tokens of sequence i in the cache, the current one included;
    `block_tables[i]` must cover them. `num_splits` overrides the split-K heuristic.
    """
    block_size, num_kv_heads, head_dim, num_seqs, num_q_heads, out = check_decode_args(
        q, k_cache, v_cache, block_tables, seq_lens, out)
    if num_seqs == 0:
        return out
    scale = default_scale(head_dim, scale)
    on_gpu = q.is_cuda
    max_context = block_tables.shape[1] * block_size
    if num_splits is None:
        num_sms = _num_sms(q.device.index if q.device.index is not None else torch.cuda.current_device()) if on_gpu else 4
        num_splits = choose_num_splits(num_seqs, num_kv_heads, max_context, num_sms)
    if not 1 <= num_splits <= 256:
        raise ValueError(f"num_splits: must be in [1, 256], got {num_splits}")
    group = num_q_heads // num_kv_heads
    group_pad = max(next_pow2(group), 16 if on_gpu else 1)  # tl.dot needs M >= 16 on the GPU
    block_n, num_warps, num_stages = _launch_config(head_dim, on_gpu, q.element_size())
    head_dim_pad = next_pow2(head_dim)
    meta = dict(GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad,
                BLOCK_SIZE=block_size, BLOCK_N=block_n, DOT_PRECISION=dot_precision(q.dtype),
                num_warps=num_warps, num_stages=num_stages)
    grid = (num_seqs, num_kv_heads, num_splits)
    qk_scale = scale * LOG2E
    if num_splits == 1:
        _decode_kernel[grid](
            q, k_cache, v_cache, block_tables, seq_lens, out, out,
            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
            out.stride(0), out.stride(1), 0, 0, 0, qk_scale, 1, SPLIT=False, **meta)
        return out
    part = torch.empty((num_seqs, num_q_heads, num_splits, head_dim), dtype=torch.float32, device=q.device)
    lse = torch.empty((num_seqs, num_q_heads, num_splits), dtype=torch.float32, device=q.device)
    _decode_kernel[grid](
        q, k_cache, v_cache, block_tables, seq_lens, part, lse,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        part.stride(0), part.stride(1), part.stride(2), lse.stride(0), lse.stride(1), qk_scale, num_splits,
        SPLIT=True, **meta)
    _merge_kernel[(num_seqs, num_q_heads)](
        part, lse, out, part.stride(0), part.stride(1), part.stride(2), lse.stride(0), lse.stride(1),
        out.stride(0), out.stride(1), num_splits, SPLITS_PAD=next_pow2(num_splits),
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, num_warps=4 if on_gpu else 1)
    return out


def paged_decode_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, *, scale: float | None = None,
) -> torch.Tensor:
    """float64 reference: gather each sequence's K/V contiguously, then plain softmax attention."""
    scale = default_scale(q.shape[-1], scale)
    outs = []
    for i, length in enumerate(seq_lens.tolist()):
        k = gather_sequence(k_cache, block_tables[i], length)
        v = gather_sequence(v_cache, block_tables[i], length)
        outs.append(attention_ref(q[i : i + 1], k, v, scale, causal_offset=None))
    return torch.cat(outs) if outs else torch.empty(q.shape, dtype=torch.float64, device=q.device)
