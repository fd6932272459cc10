"""One-pass paged decode attention (FlashAttention-style online softmax, flash-decoding split-K).

One program owns (sequence, KV head, split): it loads the query heads that share the KV head as one
[GROUP, head_dim] tile, then streams that sequence's K/V through the block table BLOCK_N tokens at a time.
Each K/V tile is read from device memory exactly once; scores stay in registers; a running max `m` and
sum `l` rescale the partial output. Whole tiles are loaded and scored without token masks; only the last,
partial tile of a split is masked. With few sequences and long contexts the context is cut into
`num_splits` ranges whose normalized partial outputs (fp32; the 16-bit output dtype for groups of 8+ query
heads, as vLLM's paged_attention_v2) and log-sum-exps go to a workspace; the last split
of each (sequence, KV head) to finish (an atomic counter says which) merges them, or with many splits of a large
query group the splits merge up a tree (`kernels.decode_merge`), so a call is one launch.
An fp8 (e4m3) cache is dequantized in the kernel: K/V tiles are converted to q's dtype (exact), the K
scale is folded into the softmax scale and the V scale applied to the output.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import (
    FP8_DTYPE, attention_ref, check_cache, check_index, check_kv_scales, check_out, check_query, default_scale,
    dequantize_cache, gather_sequence,
)
from kernels._launch import FastLauncher
from kernels._paged import load_kv_tile, tile_kv_offsets, widen_e4m3
from kernels.decode_config import DecodeConfig
from kernels.decode_launch import plan, split_counters
from kernels.decode_merge import _merge_flat, _merge_tree

LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(q, k_ptr, v_ptr, bt_row, tile_start, end, head_off, stride_kb, stride_kt, qk_scale, m_i, l_i, acc,
                 HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                 BLOCK_N: tl.constexpr, MASKED: tl.constexpr, FP8: tl.constexpr, FP8_WIDEN_V: tl.constexpr,
                 DOT_PRECISION: tl.constexpr):
    """One K/V tile of BLOCK_N tokens from `tile_start` into the online softmax state (m_i, l_i, acc)."""
    n_mask = tile_start + tl.arange(0, BLOCK_N) < end
    kv_off = tile_kv_offsets(bt_row, tile_start, n_mask, head_off, stride_kb, stride_kt, BLOCK_SIZE, BLOCK_N, MASKED)
    k, v = load_kv_tile(k_ptr, v_ptr, kv_off, n_mask, HEAD_DIM, HEAD_DIM_PAD, MASKED)
    if FP8:  # e4m3 -> fp16/fp32 is exact
        k = k.to(q.dtype)
        if FP8_WIDEN_V:  # V read with ldmatrix rather than byte by byte (see widen_e4m3)
            v = widen_e4m3(v)
        else:
            v = v.to(q.dtype)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    if MASKED:
        s = tl.where(n_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def _attend_range(q, k_ptr, v_ptr, bt_ptr, seq, kv_head, start, end, stride_bt, stride_kb, stride_kt, stride_kh,
                  qk_scale, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                  BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, FP8: tl.constexpr, FP8_WIDEN_V: tl.constexpr,
                  DOT_PRECISION: tl.constexpr):
    """The online softmax state (m, l, acc) of the query tile `q` over tokens [start, end) of sequence `seq`, KV head
    `kv_head` (`start` a multiple of BLOCK_N). Whole tiles load and score without token masks (fewer predicate ops
    per load); the tail tile is masked."""
    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], dtype=tl.float32)
    bt_row = bt_ptr + seq * stride_bt
    head_off = kv_head * stride_kh
    full_end = start + tl.maximum(end - start, 0) // BLOCK_N * BLOCK_N
    for tile_start in range(start, full_end, BLOCK_N):
        m_i, l_i, acc = _attend_tile(q, k_ptr, v_ptr, bt_row, tile_start, end, head_off, stride_kb, stride_kt,
                                     qk_scale, m_i, l_i, acc, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N,
                                     False, FP8, FP8_WIDEN_V, DOT_PRECISION)
    if full_end < end:
        m_i, l_i, acc = _attend_tile(q, k_ptr, v_ptr, bt_row, full_end, end, head_off, stride_kb, stride_kt,
                                     qk_scale, m_i, l_i, acc, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N,
                                     True, FP8, FP8_WIDEN_V, DOT_PRECISION)
    return m_i, l_i, acc


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, ws_ptr, sem_ptr, ks_ptr, vs_ptr,
    stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_os, stride_oh, stride_scale,
    qk_scale, num_splits, lse_offset,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
    MERGE_G: tl.constexpr, MERGE_S: tl.constexpr, FP8: tl.constexpr, FP8_TO_F32: tl.constexpr,
    FP8_WIDEN_V: tl.constexpr, PARTIALS_16BIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    MERGE_TREE: tl.constexpr,
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
    d_mask = offs_d < HEAD_DIM
    g_mask = offs_g < GROUP
    heads = kv_head * GROUP + offs_g
    q = tl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if FP8:
        qk_scale = qk_scale * tl.load(ks_ptr + kv_head * stride_scale)
        if not FP8_TO_F32:
            q = q.to(tl.float16)  # e4m3 widens to fp16 in one instruction a pair; bf16 would take three

    m_i, l_i, acc = _attend_range(q, k_ptr, v_ptr, bt_ptr, seq, kv_head, start, end, stride_bt, stride_kb, stride_kt,
                                  stride_kh, qk_scale, GROUP_PAD, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, FP8,
                                  FP8_WIDEN_V, DOT_PRECISION)

    has_tokens = l_i > 0  # false only for an empty split
    acc = acc / tl.where(has_tokens, l_i, 1.0)[:, None]
    if FP8:
        acc = acc * tl.load(vs_ptr + kv_head * stride_scale)
    out_mask = g_mask[:, None] & d_mask[None, :]
    out_ptrs = out_ptr + seq * stride_os + heads[:, None] * stride_oh + offs_d[None, :]
    if not SPLIT:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        # Workspace rows (seq, head) hold num_splits partial outputs [HEAD_DIM] (fp32, or the output dtype with
        # PARTIALS_16BIT), then (at lse_offset fp32 elements) their LSEs.
        rows = (seq * tl.num_programs(1) * GROUP + heads).to(tl.int64) * num_splits
        part_ptr = ws_ptr.to(tl.pointer_type(out_ptr.dtype.element_ty)) if PARTIALS_16BIT else ws_ptr
        tl.store(part_ptr + (rows + split)[:, None] * HEAD_DIM + offs_d[None, :], acc.to(part_ptr.dtype.element_ty),
                 mask=out_mask)
        lse = tl.where(has_tokens, m_i + tl.log2(tl.where(has_tokens, l_i, 1.0)), float("-inf"))
        tl.store(ws_ptr + lse_offset + rows + split, lse, mask=g_mask)
        tl.debug_barrier()  # every thread's partial is written before the release below
        if MERGE_TREE:
            _merge_tree(out_ptr, ws_ptr, part_ptr, sem_ptr, seq, kv_head, split, num_splits, lse_offset,
                        stride_os, stride_oh, GROUP, HEAD_DIM, HEAD_DIM_PAD, MERGE_G, MERGE_S)
        else:
            _merge_flat(out_ptr, ws_ptr, part_ptr, sem_ptr, seq, kv_head, num_splits, lse_offset, stride_os, stride_oh,
                        GROUP, HEAD_DIM, HEAD_DIM_PAD, MERGE_G, MERGE_S)


_launch_decode = FastLauncher(_decode_kernel)


def check_decode_args(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, out: torch.Tensor | None,
) -> tuple[int, int, int, int, int, torch.Tensor]:
    """Validate a decode call's arguments (shared by `paged_decode` and `paged_decode_two_pass`).

    Returns (block_size, num_kv_heads, head_dim, num_seqs, num_q_heads, out), `out` allocated if None.
    """
    _, block_size, num_kv_heads, head_dim = check_cache(k_cache, v_cache)
    num_seqs, num_q_heads = check_query(q, k_cache, rank=3)
    device = k_cache.device
    check_index(block_tables, "block_tables", 2, num_seqs, device)
    check_index(seq_lens, "seq_lens", 1, num_seqs, device)
    return block_size, num_kv_heads, head_dim, num_seqs, num_q_heads, check_out(out, q)


def paged_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, *, scale: float | None = None, num_splits: int | None = None,
    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
    config: DecodeConfig | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one new token per sequence over its paged context; q, out: [num_seqs, num_q_heads, head_dim].

    `seq_lens[i]` (>= 1) counts the tokens of sequence i in the cache, the current one included;
    `block_tables[i]` must cover them. `num_splits` overrides the split-K heuristic, `config` the launch
    configuration. An fp8 cache takes float32 `k_scale`/`v_scale` of 1 or num_kv_heads elements (None: 1.0).
    """
    block_size, num_kv_heads, head_dim, num_seqs, num_q_heads, out = check_decode_args(
        q, k_cache, v_cache, block_tables, seq_lens, out)
    k_scale, v_scale, stride_scale = check_kv_scales(k_cache, k_scale, v_scale)
    if num_seqs == 0:
        return out
    scale = default_scale(head_dim, scale)
    plan_key = (num_seqs, num_q_heads, num_kv_heads, head_dim, block_size, block_tables.shape[1] * block_size,
                q.dtype, k_cache.dtype == FP8_DTYPE, k_cache.element_size(), q.device, num_splits, config)
    grid, num_splits, meta, workspace, lse_offset, num_counters = plan(*plan_key)
    if num_splits > 1:
        ws = torch.empty(workspace, dtype=torch.float32, device=q.device)
        counters = split_counters(q.device, num_counters)
    else:
        ws = counters = out  # unused
    sq, sk, so = q.stride(), k_cache.stride(), out.stride()
    ints = (sq[0], sq[1], sk[0], sk[1], sk[2], block_tables.stride(0), so[0], so[1], stride_scale)
    tensors = (q, k_cache, v_cache, block_tables, seq_lens, out, ws, counters, k_scale, v_scale)
    # the key fixes every constexpr (through the plan) and every int Triton specializes on
    _launch_decode((plan_key, ints), grid, (*tensors, *ints, scale * LOG2E, num_splits, lse_offset), tensors, meta)
    return out


def paged_decode_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, *, scale: float | None = None, k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """float64 reference: gather each sequence's K/V contiguously (an fp8 cache dequantized as the kernel
    does), then plain softmax attention."""
    scale = default_scale(q.shape[-1], scale)
    k_cache, v_cache = dequantize_cache(k_cache, k_scale), dequantize_cache(v_cache, v_scale)
    outs = []
    for i, length in enumerate(seq_lens.tolist()):
        k = gather_sequence(k_cache, block_tables[i], length)
        v = gather_sequence(v_cache, block_tables[i], length)
        outs.append(attention_ref(q[i : i + 1], k, v, scale, causal_offset=None))
    return torch.cat(outs) if outs else torch.empty(q.shape, dtype=torch.float64, device=q.device)
