"""Probe: warp-specialized fp8 paged decode in Gluon (sm_90), consumers as independent one-warp partitions.

A program owns UNITS KV heads of one sequence and one split. The default partition (4 warps, one a KV head) copies
K/V, STEP tokens a buffer, into a ring of NUM_BUF buffers (cp.async; a `ready` mbarrier a buffer counts the 128
copying threads); each KV head's consumer is its own one-warp partition, so the consumers never wait on each other
except through the ring (an `empty` mbarrier a buffer counts the UNITS consumers).

EARLY (the unswapped consumer): 0 K/V read straight into the dot layouts; 2 widened to fp16 where read, the buffer
freed, then moved to the dot layouts (best, docs/kernels.md item 56); 3 as 2 with V held as fp8 until the scores are
done; 5 software-pipelined (the next step's wait and reads before this step's second dot; spills, item 58).
"""
from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as cp
from triton.experimental.gluon.language.nvidia.ampere import mbarrier, mma_v2

from gluon_decode import LOG2E
from gluon_read import cp_load, split_steps



@gluon.jit
def _softmax_step(q, k_t, scale, m_i, l_i, tok, end, a_op: gl.constexpr, mma: gl.constexpr, STEP: gl.constexpr):
    scores = mma_v2(q, k_t, gl.zeros([16, STEP], gl.float32, mma)) * scale
    scores = gl.where((tok < end)[None, :], scores, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(scores, 1))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(scores - m_new[:, None])
    l_i = l_i * alpha + gl.sum(p, 1)
    return gl.convert_layout(p.to(gl.float16), a_op), alpha, m_new, l_i


@gluon.jit
def _consumer_rows(q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty,
                   seq, kv_head0, split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh,
                   stride_os, stride_oh, stride_scale, num_q_heads, UNIT: gl.constexpr,
                   GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, STEP: gl.constexpr, NUM_BUF: gl.constexpr,
                   SPLIT: gl.constexpr, EARLY: gl.constexpr):
    blk: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [1, 1], [1, 0])
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 1], instr_shape=[16, 8])
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    b_op: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=4)
    row_l: gl.constexpr = gl.SliceLayout(1, mma)
    kv_head = kv_head0 + UNIT
    offs_g = gl.arange(0, 16, row_l)
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, mma))
    offs_n = gl.arange(0, STEP, gl.SliceLayout(0, mma))
    heads = kv_head * GROUP + offs_g
    g_ok = offs_g < GROUP
    q = gl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + offs_d[None, :], mask=g_ok[:, None], other=0.0)
    q = gl.convert_layout(q.to(gl.float16), a_op)
    scale = qk_scale * gl.load(ks_ptr + kv_head * stride_scale)
    m_i = gl.full([16], float("-inf"), gl.float32, row_l)
    l_i = gl.zeros([16], gl.float32, row_l)
    acc = gl.zeros([16, HEAD_DIM], gl.float32, mma)
    if EARLY == 5:  # software-pipelined: the next step's wait and fp8 reads issued before this step's second dot
        mbarrier.wait(ready.index(0), 0, pred=n_steps > 0)
        k_nx = k_smem.index(UNIT).load(blk)
        v_nx = v_smem.index(UNIT).load(blk)
        mbarrier.arrive(empty.index(0), pred=n_steps > 0)
        for i in range(n_steps):
            k_t = gl.convert_layout(gl.permute(k_nx.to(gl.float16), (1, 0)), b_op)
            v8 = v_nx
            p16, alpha, m_i, l_i = _softmax_step(q, k_t, scale, m_i, l_i, start + i * STEP + offs_n, end, a_op, mma,
                                                 STEP)
            nxt = i + 1
            s1 = nxt % NUM_BUF
            mbarrier.wait(ready.index(s1), (nxt // NUM_BUF) & 1, pred=nxt < n_steps)
            k_nx = k_smem.index(s1 * 4 + UNIT).load(blk)
            v_nx = v_smem.index(s1 * 4 + UNIT).load(blk)
            mbarrier.arrive(empty.index(s1), pred=nxt < n_steps)
            v = gl.convert_layout(v8.to(gl.float16), b_op)
            acc = mma_v2(p16, v, acc * alpha[:, None])
    for i in range(n_steps if EARLY != 5 else 0):
        s = i % NUM_BUF
        mbarrier.wait(ready.index(s), (i // NUM_BUF) & 1)
        k_buf = k_smem.index(s * 4 + UNIT)
        v_buf = v_smem.index(s * 4 + UNIT)
        if EARLY == 0:
            k_t = k_buf.permute((1, 0)).load(b_op).to(gl.float16)
            v = v_buf.load(b_op).to(gl.float16)
            mbarrier.arrive(empty.index(s))
            p16, alpha, m_i, l_i = _softmax_step(q, k_t, scale, m_i, l_i, start + i * STEP + offs_n, end, a_op, mma,
                                                 STEP)
        elif EARLY == 2:  # widened to fp16 where read, the buffer freed, then moved to the dot layouts
            k_bl = k_buf.load(blk).to(gl.float16)
            v_bl = v_buf.load(blk).to(gl.float16)
            mbarrier.arrive(empty.index(s))
            k_t = gl.convert_layout(gl.permute(k_bl, (1, 0)), b_op)
            v = gl.convert_layout(v_bl, b_op)
            p16, alpha, m_i, l_i = _softmax_step(q, k_t, scale, m_i, l_i, start + i * STEP + offs_n, end, a_op, mma,
                                                 STEP)
        else:  # as 2, but V kept as fp8 in registers until the scores are done (fewer registers live)
            k_bl = k_buf.load(blk).to(gl.float16)
            v_fp8 = v_buf.load(blk)
            mbarrier.arrive(empty.index(s))
            k_t = gl.convert_layout(gl.permute(k_bl, (1, 0)), b_op)
            p16, alpha, m_i, l_i = _softmax_step(q, k_t, scale, m_i, l_i, start + i * STEP + offs_n, end, a_op, mma,
                                                 STEP)
            v = gl.convert_layout(v_fp8.to(gl.float16), b_op)
        acc = mma_v2(p16, v, acc * alpha[:, None])
    has_tokens = l_i > 0
    acc = acc / gl.where(has_tokens, l_i, 1.0)[:, None]
    acc = acc * gl.load(vs_ptr + kv_head * stride_scale)
    if SPLIT:
        rows = (seq * num_q_heads + heads) * num_splits + split
        gl.store(ws_ptr + rows[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=g_ok[:, None])
        lse = gl.where(has_tokens, m_i + gl.log2(gl.where(has_tokens, l_i, 1.0)), float("-inf"))
        gl.store(lse_ptr + rows, lse, mask=g_ok)
    else:
        out_off = seq * stride_os + heads[:, None] * stride_oh + offs_d[None, :]
        gl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=g_ok[:, None])


@gluon.jit
def _consumer_swapped(q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty,
                      seq, kv_head0, split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh,
                      stride_os, stride_oh, stride_scale, num_q_heads, UNIT: gl.constexpr,
                      GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, STEP: gl.constexpr, NUM_BUF: gl.constexpr,
                      SPLIT: gl.constexpr, GROUP_N: gl.constexpr):
    """Tokens and head dims on the MMA's 16-row side, the group's query heads (padded to GROUP_N >= 8) on its
    8-column side: S^T = K q^T, O^T = V^T P^T; accumulator [HEAD_DIM, GROUP_N]."""
    blk: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [1, 1], [1, 0])
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 1], instr_shape=[16, 8])
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    b_op: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=4)
    col_l: gl.constexpr = gl.SliceLayout(0, mma)   # [GROUP_N]: one value a query head
    kv_head = kv_head0 + UNIT
    offs_g = gl.arange(0, GROUP_N, col_l)
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(1, mma))
    offs_n = gl.arange(0, STEP, gl.SliceLayout(1, mma))
    heads = kv_head * GROUP + offs_g
    g_ok = offs_g < GROUP
    q_t = gl.load(q_ptr + seq * stride_qs + heads[None, :] * stride_qh + offs_d[:, None], mask=g_ok[None, :],
                  other=0.0)                                           # [HEAD_DIM, GROUP_N]
    q_t = gl.convert_layout(q_t.to(gl.float16), b_op)
    scale = qk_scale * gl.load(ks_ptr + kv_head * stride_scale)
    m_i = gl.full([GROUP_N], float("-inf"), gl.float32, col_l)
    l_i = gl.zeros([GROUP_N], gl.float32, col_l)
    acc = gl.zeros([HEAD_DIM, GROUP_N], gl.float32, mma)
    for i in range(n_steps):
        s = i % NUM_BUF
        mbarrier.wait(ready.index(s), (i // NUM_BUF) & 1)
        k8 = k_smem.index(s * 4 + UNIT).load(blk)    # [STEP, HEAD_DIM], fp8 until needed (fewer registers live)
        v8 = v_smem.index(s * 4 + UNIT).load(blk)
        mbarrier.arrive(empty.index(s))
        k_a = gl.convert_layout(k8.to(gl.float16), a_op)
        scores = mma_v2(k_a, q_t, gl.zeros([STEP, GROUP_N], gl.float32, mma)) * scale   # [STEP, GROUP_N]
        tok = start + i * STEP + offs_n
        scores = gl.where((tok < end)[:, None], scores, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(scores, 0))
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(scores - m_new[None, :])
        l_i = l_i * alpha + gl.sum(p, 0)
        p_b = gl.convert_layout(p.to(gl.float16), b_op)                 # [STEP, GROUP_N] as the K x N operand
        v_a = gl.convert_layout(gl.permute(v8.to(gl.float16), (1, 0)), a_op)   # [HEAD_DIM, STEP]
        acc = mma_v2(v_a, p_b, acc * alpha[None, :])
        m_i = m_new
    has_tokens = l_i > 0
    acc = acc / gl.where(has_tokens, l_i, 1.0)[None, :]
    acc = acc * gl.load(vs_ptr + kv_head * stride_scale)
    if SPLIT:
        rows = (seq * num_q_heads + heads) * num_splits + split
        gl.store(ws_ptr + rows[None, :] * HEAD_DIM + offs_d[:, None], acc, mask=g_ok[None, :])
        lse = gl.where(has_tokens, m_i + gl.log2(gl.where(has_tokens, l_i, 1.0)), float("-inf"))
        gl.store(lse_ptr + rows, lse, mask=g_ok)
    else:
        out_off = seq * stride_os + heads[None, :] * stride_oh + offs_d[:, None]
        gl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=g_ok[None, :])


@gluon.jit
def _consumer(q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty,
              seq, kv_head0, split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh,
              stride_os, stride_oh, stride_scale, num_q_heads, UNIT: gl.constexpr,
              GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, STEP: gl.constexpr, NUM_BUF: gl.constexpr,
              SPLIT: gl.constexpr, EARLY: gl.constexpr, SWAP: gl.constexpr, GROUP_N: gl.constexpr):
    """One KV head's consumer: the query heads on the MMA's rows, or with SWAP the tokens and head dims."""
    if SWAP:
        _consumer_swapped(q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty, seq,
                          kv_head0, split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh, stride_os,
                          stride_oh, stride_scale, num_q_heads, UNIT, GROUP, HEAD_DIM, STEP, NUM_BUF, SPLIT, GROUP_N)
    else:
        _consumer_rows(q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty, seq, kv_head0,
                       split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh, stride_os, stride_oh,
                       stride_scale, num_q_heads, UNIT, GROUP, HEAD_DIM, STEP, NUM_BUF, SPLIT, EARLY)


@gluon.jit
def _producer(k_ptr, v_ptr, bt_row, k_smem, v_smem, ready, empty, start, end, n_steps, head_off,
              stride_kb, stride_kt, stride_kh, HEAD_DIM: gl.constexpr, BLOCK_SIZE: gl.constexpr, STEP: gl.constexpr,
              NUM_BUF: gl.constexpr, UNITS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [4, 1], [1, 0])  # 16 tokens x 128 bytes a pass
    offs_t = gl.arange(0, STEP, gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, layout))
    for i in range(n_steps):
        s = i % NUM_BUF
        mbarrier.wait(empty.index(s), ((i // NUM_BUF) & 1) ^ 1)
        for b in gl.static_range(1):
            tok = start + i * STEP + offs_t
            ok = tok < end
            block = gl.load(bt_row + tok // BLOCK_SIZE, mask=ok, other=0).to(gl.int64)
            rows = block * stride_kb + (tok % BLOCK_SIZE) * stride_kt + head_off
            mask = ok[:, None]
            for u in gl.static_range(UNITS):
                ptrs = (rows + u * stride_kh)[:, None] + offs_d[None, :]
                cp_load(k_smem.index(s * UNITS + u), k_ptr + ptrs, mask)
                cp_load(v_smem.index(s * UNITS + u), v_ptr + ptrs, mask)
        cp.mbarrier_arrive(ready.index(s), increment_count=False)


@gluon.jit
def _ws_decode_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr,
                      stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_os, stride_oh,
                      stride_scale, qk_scale, num_splits, num_q_heads,
                      GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_SIZE: gl.constexpr, STEP: gl.constexpr,
                      NUM_BUF: gl.constexpr, UNITS: gl.constexpr, SPLIT: gl.constexpr, EARLY: gl.constexpr,
                      CONSUMER_REGS: gl.constexpr, SWAP: gl.constexpr, GROUP_N: gl.constexpr):
    smem_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    seq = gl.program_id(0)
    kv_head0 = gl.program_id(1) * UNITS
    split = gl.program_id(2)
    start, end, n_steps = split_steps(lens_ptr, seq, split, num_splits, STEP)
    # buffer s, KV head u at row s * UNITS + u
    k_smem = gl.allocate_shared_memory(k_ptr.dtype.element_ty, [NUM_BUF * UNITS, STEP, HEAD_DIM], smem_layout)
    v_smem = gl.allocate_shared_memory(k_ptr.dtype.element_ty, [NUM_BUF * UNITS, STEP, HEAD_DIM], smem_layout)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    for p in gl.static_range(NUM_BUF):
        mbarrier.init(ready.index(p), count=32 * UNITS)
        mbarrier.init(empty.index(p), count=UNITS)
    bt_row = bt_ptr + seq * stride_bt
    # one consumer partition a KV head (the unit index must be a literal: a constexpr a partition)
    gl.warp_specialize([
        (_producer, (k_ptr, v_ptr, bt_row, k_smem, v_smem, ready, empty, start, end, n_steps, kv_head0 * stride_kh,
                     stride_kb, stride_kt, stride_kh, HEAD_DIM, BLOCK_SIZE, STEP, NUM_BUF, UNITS)),
        (_consumer, (q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty, seq, kv_head0,
                     split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh, stride_os, stride_oh,
                     stride_scale, num_q_heads, 0, GROUP, HEAD_DIM, STEP, NUM_BUF, SPLIT, EARLY, SWAP, GROUP_N)),
        (_consumer, (q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty, seq, kv_head0,
                     split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh, stride_os, stride_oh,
                     stride_scale, num_q_heads, 1, GROUP, HEAD_DIM, STEP, NUM_BUF, SPLIT, EARLY, SWAP, GROUP_N)),
        (_consumer, (q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty, seq, kv_head0,
                     split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh, stride_os, stride_oh,
                     stride_scale, num_q_heads, 2, GROUP, HEAD_DIM, STEP, NUM_BUF, SPLIT, EARLY, SWAP, GROUP_N)),
        (_consumer, (q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty, seq, kv_head0,
                     split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh, stride_os, stride_oh,
                     stride_scale, num_q_heads, 3, GROUP, HEAD_DIM, STEP, NUM_BUF, SPLIT, EARLY, SWAP, GROUP_N)),
    ], [1, 1, 1, 1], [CONSUMER_REGS] * 4)


def ws_decode(q, k, v, bt, lens, k_scale, v_scale, num_splits, step=16, num_buf=4, maxnreg=128, early=2,
              consumer_regs=216, scale=None, swap=False):
    """Returns (out, workspace partials, LSEs); where split, merge with `gluon_decode.merge_ref` (a probe wrapper)."""
    units = 4
    num_seqs, hq, d = q.shape
    hkv = k.shape[2]
    scale = scale or d ** -0.5
    out = torch.empty_like(q)
    ws = torch.empty((num_seqs, hq, num_splits, d), dtype=torch.float32, device=q.device)
    lse = torch.empty((num_seqs, hq, num_splits), dtype=torch.float32, device=q.device)
    sk = k.stride()
    _ws_decode_kernel[(num_seqs, hkv // units, num_splits)](
        q, k, v, bt, lens, out, ws, lse, k_scale, v_scale, q.stride(0), q.stride(1), sk[0], sk[1], sk[2],
        bt.stride(0), out.stride(0), out.stride(1), 1 if k_scale.numel() > 1 else 0, scale * LOG2E, num_splits, hq,
        GROUP=hq // hkv, HEAD_DIM=d, BLOCK_SIZE=k.shape[1], STEP=step, NUM_BUF=num_buf, UNITS=units,
        SPLIT=num_splits > 1, EARLY=early, CONSUMER_REGS=consumer_regs, SWAP=swap,
        GROUP_N=max(8, 1 << (hq // hkv - 1).bit_length()), num_warps=units, maxnreg=maxnreg)
    return out, ws, lse

