"""The seed's two-pass paged decode, kept as the comparison point for the one-pass kernel.

Pass 1: one program per (sequence, query head, BLOCK_N tokens) reads K and writes every score to a
float32 buffer of context length in device memory. Pass 2: one program per (sequence, query head) reads
the scores back twice (max, then softmax weights) together with V. Query heads that share a KV head each
read that K/V again, so GQA gets no reuse.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import FP8_DTYPE, default_scale, next_pow2
from kernels.decode import check_decode_args, paged_decode_ref

__all__ = ["paged_decode_two_pass", "paged_decode_two_pass_ref"]

paged_decode_two_pass_ref = paged_decode_ref  # same function, computed two ways


@triton.jit
def _scores_kernel(
    q_ptr, k_ptr, bt_ptr, lens_ptr, scores_ptr,
    stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_ss, stride_sh, scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    tokens = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    seq_len = tl.load(lens_ptr + seq)
    n_mask = tokens < seq_len
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    q = tl.load(q_ptr + seq * stride_qs + head * stride_qh + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    block = tl.load(bt_ptr + seq * stride_bt + tokens // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
    kv_off = block * stride_kb + (tokens % BLOCK_SIZE) * stride_kt + (head // GROUP) * stride_kh
    k = tl.load(k_ptr + kv_off[:, None] + offs_d[None, :], mask=n_mask[:, None] & d_mask[None, :], other=0.0)
    s = tl.sum(k.to(tl.float32) * q[None, :], 1) * scale
    tl.store(scores_ptr + seq * stride_ss + head * stride_sh + tokens, s, mask=n_mask)


@triton.jit
def _softmax_v_kernel(
    scores_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr,
    stride_ss, stride_sh, stride_vb, stride_vt, stride_vh, stride_bt, stride_os, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    seq_len = tl.load(lens_ptr + seq)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    row = scores_ptr + seq * stride_ss + head * stride_sh
    m_vec = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    for start in range(0, seq_len, BLOCK_N):
        s = tl.load(row + start + offs_n, mask=start + offs_n < seq_len, other=float("-inf"))
        m_vec = tl.maximum(m_vec, s)
    m = tl.max(m_vec, 0)
    l_vec = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc = tl.zeros([HEAD_DIM_PAD], dtype=tl.float32)
    for start in range(0, seq_len, BLOCK_N):
        tokens = start + offs_n
        n_mask = tokens < seq_len
        p = tl.exp(tl.load(row + tokens, mask=n_mask, other=float("-inf")) - m)
        block = tl.load(bt_ptr + seq * stride_bt + tokens // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        kv_off = block * stride_vb + (tokens % BLOCK_SIZE) * stride_vt + (head // GROUP) * stride_vh
        v = tl.load(v_ptr + kv_off[:, None] + offs_d[None, :], mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        l_vec += p
        acc += tl.sum(v.to(tl.float32) * p[:, None], 0)
    out = acc / tl.sum(l_vec, 0)
    tl.store(out_ptr + seq * stride_os + head * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty), mask=d_mask)


def paged_decode_two_pass(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, *, scale: float | None = None, num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as `paged_decode`; `num_splits` is accepted for signature parity and ignored."""
    block_size, num_kv_heads, head_dim, num_seqs, num_q_heads, out = check_decode_args(
        q, k_cache, v_cache, block_tables, seq_lens, out)
    if k_cache.dtype == FP8_DTYPE:
        raise ValueError("dtype: the two-pass kernel does not take an fp8 cache; use paged_decode")
    if num_seqs == 0:
        return out
    scale = default_scale(head_dim, scale)
    max_context = block_tables.shape[1] * block_size
    scores = torch.empty((num_seqs, num_q_heads, max_context), dtype=torch.float32, device=q.device)
    on_gpu = q.is_cuda
    block_n = 64  # in the interpreter, fewer bigger programs are faster too
    meta = dict(GROUP=num_q_heads // num_kv_heads, HEAD_DIM=head_dim, HEAD_DIM_PAD=next_pow2(head_dim),
                BLOCK_SIZE=block_size, BLOCK_N=block_n, num_warps=4 if on_gpu else 1)
    _scores_kernel[(num_seqs, num_q_heads, triton.cdiv(max_context, block_n))](
        q, k_cache, block_tables, seq_lens, scores,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        scores.stride(0), scores.stride(1), scale, **meta)
    _softmax_v_kernel[(num_seqs, num_q_heads)](
        scores, v_cache, block_tables, seq_lens, out,
        scores.stride(0), scores.stride(1), v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1), **meta)
    return out
