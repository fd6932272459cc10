"""Stream-K one-warp decode (docs/kernels.md "What was tried" 61): a grid of exactly P programs (a whole number an
SM), the (sequence, KV head) pairs' tiles concatenated and cut into P ranges of equal tiles (+-1), each range walked
pair segment by pair segment with the product's tile loop (`_attend_range`); each segment's partial goes to a
workspace slot and the pair's last contributor merges. Equal sequence lengths only (the benchmark rows): a probe,
not product code. `ts` (int64 [P, 5]) takes each program's SM, start and end (%globaltimer) as `stamped.timeline`
reads them (no loop stamp, no cycles).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import default_scale, dot_precision, next_pow2
from kernels.decode import LOG2E, _attend_range


@triton.jit
def _program_of(t, P, T):
    """The program whose range [p*T//P, (p+1)*T//P) holds tile t."""
    return ((t + 1) * P - 1) // T


@triton.jit
def _segment(q_ptr, k_ptr, v_ptr, bt_ptr, out_ptr, ws_ptr, sem_ptr, ks_ptr, vs_ptr,
             stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_os, stride_oh,
             qk_scale, lse_offset, pair, t_lo, t_hi, seq_len, pid, P, T, tiles_per_pair, num_kv_heads,
             GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
             BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MAXC: tl.constexpr, MERGE_S: tl.constexpr,
             FP8: tl.constexpr, DOT_PRECISION: tl.constexpr):
    seq = pair // num_kv_heads
    kv_head = pair % num_kv_heads
    start = t_lo * BLOCK_N
    end = tl.minimum(t_hi * BLOCK_N, seq_len)
    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    g_mask = offs_g < GROUP
    heads = kv_head * GROUP + offs_g
    q = tl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if FP8:
        qk_scale = qk_scale * tl.load(ks_ptr)
        q = q.to(tl.float16)
    m_i, l_i, acc = _attend_range(q, k_ptr, v_ptr, bt_ptr, seq, kv_head, start, end, stride_bt, stride_kb, stride_kt,
                                  stride_kh, qk_scale, GROUP_PAD, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, FP8,
                                  False, DOT_PRECISION)
    has_tokens = l_i > 0
    acc = acc / tl.where(has_tokens, l_i, 1.0)[:, None]
    if FP8:
        acc = acc * tl.load(vs_ptr)
    first = _program_of(pair * tiles_per_pair, P, T)
    count = _program_of((pair + 1) * tiles_per_pair - 1, P, T) - first + 1
    slot = pid - first
    rows = (pair * GROUP + offs_g).to(tl.int64) * MAXC
    out_mask = g_mask[:, None] & d_mask[None, :]
    tl.store(ws_ptr + (rows + slot)[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=out_mask)
    lse = tl.where(has_tokens, m_i + tl.log2(tl.where(has_tokens, l_i, 1.0)), float("-inf"))
    tl.store(ws_ptr + lse_offset + rows + slot, lse, mask=g_mask)
    tl.debug_barrier()
    counter = sem_ptr + pair
    if tl.atomic_add(counter, 1, sem="acq_rel") == count - 1:
        offs_c = tl.arange(0, MERGE_S)
        m = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
        weight = tl.zeros([GROUP_PAD], dtype=tl.float32)
        total = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], dtype=tl.float32)
        for s0 in range(0, count, MERGE_S):
            s_idx = s0 + offs_c
            mask2 = g_mask[:, None] & (s_idx < count)[None, :]
            lses = tl.load(ws_ptr + lse_offset + rows[:, None] + s_idx[None, :], mask=mask2, other=float("-inf"),
                           cache_modifier=".cg")
            part_off = (rows[:, None] + s_idx[None, :]) * HEAD_DIM
            part = tl.load(ws_ptr + part_off[:, :, None] + offs_d[None, None, :],
                           mask=mask2[:, :, None] & d_mask[None, None, :], other=0.0, cache_modifier=".cg")
            m_new = tl.where(g_mask, tl.maximum(m, tl.max(lses, 1)), 0.0)
            m_new = tl.where(m_new > float("-inf"), m_new, 0.0)
            alpha = tl.exp2(m - m_new)
            w = tl.exp2(lses - m_new[:, None])
            weight = weight * alpha + tl.sum(w, 1)
            total = total * alpha[:, None] + tl.sum(part * w[:, :, None], 1)
            m = m_new
        total = total / tl.where(weight > 0, weight, 1.0)[:, None]
        out_ptrs = out_ptr + seq * stride_os + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=out_mask)
        tl.atomic_xchg(counter, 0)


@triton.jit
def _streamk_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, ws_ptr, sem_ptr, ks_ptr, vs_ptr,
                    stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_os, stride_oh,
                    qk_scale, lse_offset, num_pairs, num_kv_heads, tiles_per_pair,
                    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                    HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MAXC: tl.constexpr,
                    MERGE_S: tl.constexpr, FP8: tl.constexpr, DOT_PRECISION: tl.constexpr,
                    ts_ptr=None, STAMP: tl.constexpr = False):
    pid = tl.program_id(0)
    if STAMP:
        t0 = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [pid], dtype=tl.int64, is_pure=False,
                                       pack=1)
        sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [pid], dtype=tl.int32, is_pure=False, pack=1)
    P = tl.num_programs(0)
    T = num_pairs * tiles_per_pair
    lo = pid * T // P
    hi = (pid + 1) * T // P
    for pair in range(lo // tiles_per_pair, (hi - 1) // tiles_per_pair + 1):
        base = pair * tiles_per_pair
        t_lo = tl.maximum(lo, base) - base
        t_hi = tl.minimum(hi, base + tiles_per_pair) - base
        seq_len = tl.load(lens_ptr + pair // num_kv_heads)
        _segment(q_ptr, k_ptr, v_ptr, bt_ptr, out_ptr, ws_ptr, sem_ptr, ks_ptr, vs_ptr,
                 stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_os, stride_oh,
                 qk_scale, lse_offset, pair, t_lo, t_hi, seq_len, pid, P, T, tiles_per_pair, num_kv_heads,
                 GROUP, GROUP_PAD, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, MAXC, MERGE_S, FP8, DOT_PRECISION)
    if STAMP:
        tl.debug_barrier()
        t2 = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [pid], dtype=tl.int64, is_pure=False,
                                       pack=1)
        tl.store(ts_ptr + pid * 5 + 0, sm.to(tl.int64))
        tl.store(ts_ptr + pid * 5 + 1, t0)
        tl.store(ts_ptr + pid * 5 + 2, t2)
        tl.store(ts_ptr + pid * 5 + 3, t2)
        tl.store(ts_ptr + pid * 5 + 4, t2 - t2)


class StreamK:
    """Launch state of the probe for one shape (equal sequence lengths `context`)."""

    def __init__(self, num_seqs, num_q_heads, num_kv_heads, head_dim, block_size, context, programs, block_n,
                 num_warps, num_stages, fp8, device, q_dtype=torch.bfloat16):
        self.num_pairs = num_seqs * num_kv_heads
        self.tiles_per_pair = triton.cdiv(context, block_n)
        total = self.num_pairs * self.tiles_per_pair
        self.programs = min(programs, total)
        self.maxc = next_pow2(-(-self.tiles_per_pair * self.programs // total) + 2)
        group = num_q_heads // num_kv_heads
        self.rows = self.num_pairs * group * self.maxc
        self.ws = torch.empty(self.rows * head_dim + self.rows, dtype=torch.float32, device=device)
        self.sem = torch.zeros(self.num_pairs, dtype=torch.int32, device=device)
        self.meta = dict(GROUP=group, GROUP_PAD=next_pow2(group), HEAD_DIM=head_dim, HEAD_DIM_PAD=next_pow2(head_dim),
                         BLOCK_SIZE=block_size, BLOCK_N=block_n, MAXC=self.maxc,
                         # the product's merge chunk for a one-warp program (kernels.decode_launch.MERGE_TILE)
                         MERGE_S=min(self.maxc, max(2, 2048 * num_warps // (next_pow2(group) * next_pow2(head_dim)))),
                         FP8=fp8, DOT_PRECISION=dot_precision(q_dtype),
                         num_warps=num_warps, num_stages=num_stages)
        self.num_kv_heads, self.head_dim = num_kv_heads, head_dim

    def __call__(self, q, k_cache, v_cache, block_tables, seq_lens, k_scale=None, v_scale=None, ts=None):
        out = torch.empty_like(q)
        if k_scale is None:
            k_scale = v_scale = torch.ones(1, dtype=torch.float32, device=q.device)
        sq, sk, so = q.stride(), k_cache.stride(), out.stride()
        _streamk_kernel[(self.programs,)](
            q, k_cache, v_cache, block_tables, seq_lens, out, self.ws, self.sem, k_scale, v_scale,
            sq[0], sq[1], sk[0], sk[1], sk[2], block_tables.stride(0), so[0], so[1],
            default_scale(self.head_dim, None) * LOG2E, self.rows * self.head_dim, self.num_pairs, self.num_kv_heads,
            self.tiles_per_pair, ts_ptr=ts, STAMP=ts is not None, **self.meta)
        return out
