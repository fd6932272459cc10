"""Probe: warp-specialized fp8 paged decode in Gluon (sm_90).

A program owns UNITS KV heads of one sequence and one split. One producer warp copies K/V of every unit, STEP
tokens a buffer, into a ring of NUM_BUF buffers (cp.async; an mbarrier a buffer says it landed); the 4 consumer
warps (the default partition, one warp a KV head) score, softmax and accumulate.

EARLY picks where a consumer frees its buffer: 0 K and V read straight into their dot layouts (the compiled code
frees the buffer only at the step's end); 1 fp8 read into registers, freed, then moved to the dot layouts; 2 the
same widened to fp16 first (best: 0.64x of bf16); 3 the next step read in the middle of this one (spills); 4 K
straight to its dot layout, V as in 2.
"""
from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as cp
from triton.experimental.gluon.language.nvidia.ampere import mbarrier, mma_v2

from gluon_read import cp_load, split_steps


@gluon.jit
def _softmax_step(q, k_t, scale, m_i, l_i, tok, end, a_op: gl.constexpr, mma: gl.constexpr, UNITS: gl.constexpr,
                  STEP: gl.constexpr):
    """One step's scores and online-softmax update; p as the second dot's A operand."""
    scores = mma_v2(q, k_t, gl.zeros([UNITS, 16, STEP], gl.float32, mma)) * scale
    scores = gl.where((tok < end)[None, None, :], scores, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(scores, 2))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(scores - m_new[:, :, None])
    l_i = l_i * alpha + gl.sum(p, 2)
    return gl.convert_layout(p.to(gl.float16), a_op), alpha, m_new, l_i


@gluon.jit
def _consumer(q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty,
              seq, kv_head0, split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh,
              stride_os, stride_oh, stride_scale, num_q_heads,
              GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, STEP: gl.constexpr, NUM_BUF: gl.constexpr,
              UNITS: gl.constexpr, SPLIT: gl.constexpr, EARLY: gl.constexpr):
    blk3: gl.constexpr = gl.BlockedLayout([1, 1, 16], [1, 4, 8], [UNITS, 1, 1], [2, 1, 0])
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[UNITS, 1, 1], instr_shape=[1, 16, 8])
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    b_op: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=4)
    row_l: gl.constexpr = gl.SliceLayout(2, mma)                       # [UNITS, 16]
    unit_l: gl.constexpr = gl.SliceLayout(1, row_l)                    # [UNITS]
    offs_u = gl.arange(0, UNITS, unit_l)
    offs_g = gl.arange(0, 16, gl.SliceLayout(0, row_l))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, gl.SliceLayout(1, mma)))
    offs_n = gl.arange(0, STEP, gl.SliceLayout(0, gl.SliceLayout(1, mma)))
    heads = (kv_head0 + offs_u)[:, None] * GROUP + offs_g[None, :]       # [UNITS, 16]
    g_ok = (offs_g < GROUP)[None, :]
    io_off = heads[:, :, None] * stride_qh + offs_d[None, None, :]
    q = gl.load(q_ptr + seq * stride_qs + io_off, mask=g_ok[:, :, None], other=0.0)
    q = gl.convert_layout(q.to(gl.float16), a_op)
    k_scale = gl.load(ks_ptr + (kv_head0 + offs_u) * stride_scale)
    scale = (qk_scale * k_scale)[:, None, None]
    m_i = gl.full([UNITS, 16], float("-inf"), gl.float32, row_l)
    l_i = gl.zeros([UNITS, 16], gl.float32, row_l)
    acc = gl.zeros([UNITS, 16, HEAD_DIM], gl.float32, mma)
    if EARLY == 3:  # next step's fp8 K/V loaded (and its buffer freed) before this step's math
        mbarrier.wait(ready.index(0), 0, pred=n_steps > 0)
        k_nx = k_smem.index(0).load(blk3)
        v_nx = v_smem.index(0).load(blk3)
        mbarrier.arrive(empty.index(0), pred=n_steps > 0)
        for i in range(n_steps):
            k_t = gl.convert_layout(gl.permute(k_nx.to(gl.float16), (0, 2, 1)), b_op)
            v = gl.convert_layout(v_nx.to(gl.float16), b_op)
            p16, alpha, m_new, l_i = _softmax_step(q, k_t, scale, m_i, l_i, start + i * STEP + offs_n, end, a_op, mma,
                                                   UNITS, STEP)
            nxt = i + 1
            s1 = nxt % NUM_BUF
            mbarrier.wait(ready.index(s1), (nxt // NUM_BUF) & 1, pred=nxt < n_steps)
            k_nx = k_smem.index(s1).load(blk3)
            v_nx = v_smem.index(s1).load(blk3)
            mbarrier.arrive(empty.index(s1), pred=nxt < n_steps)
            acc = mma_v2(p16, v, acc * alpha[:, :, None])
            m_i = m_new
    else:
        for i in range(n_steps):
            s = i % NUM_BUF
            mbarrier.wait(ready.index(s), (i // NUM_BUF) & 1)
            if EARLY == 0:
                k_t = k_smem.index(s).permute((0, 2, 1)).load(b_op).to(gl.float16)
                v = v_smem.index(s).load(b_op).to(gl.float16)
                mbarrier.arrive(empty.index(s))
            elif EARLY == 1:  # fp8 into registers, buffer freed, then into the dot layouts
                k_bl = k_smem.index(s).load(blk3)
                v_bl = v_smem.index(s).load(blk3)
                mbarrier.arrive(empty.index(s))
                k_t = gl.convert_layout(gl.permute(k_bl, (0, 2, 1)), b_op).to(gl.float16)
                v = gl.convert_layout(v_bl, b_op).to(gl.float16)
            elif EARLY == 4:  # K read straight into its dot layout (ldmatrix), V widened where loaded
                k_t = k_smem.index(s).permute((0, 2, 1)).load(b_op)
                v_bl = v_smem.index(s).load(blk3).to(gl.float16)
                mbarrier.arrive(empty.index(s))
                k_t = k_t.to(gl.float16)
                v = gl.convert_layout(v_bl, b_op)
            else:  # widened to fp16 where loaded
                k_bl = k_smem.index(s).load(blk3).to(gl.float16)
                v_bl = v_smem.index(s).load(blk3).to(gl.float16)
                mbarrier.arrive(empty.index(s))
                k_t = gl.convert_layout(gl.permute(k_bl, (0, 2, 1)), b_op)
                v = gl.convert_layout(v_bl, b_op)
            p16, alpha, m_new, l_i = _softmax_step(q, k_t, scale, m_i, l_i, start + i * STEP + offs_n, end, a_op, mma,
                                                   UNITS, STEP)
            acc = mma_v2(p16, v, acc * alpha[:, :, None])
            m_i = m_new
    has_tokens = l_i > 0
    acc = acc / gl.where(has_tokens, l_i, 1.0)[:, :, None]
    v_scale = gl.load(vs_ptr + (kv_head0 + offs_u) * stride_scale)
    acc = acc * v_scale[:, None, None]
    if SPLIT:
        rows = (seq * num_q_heads + heads) * num_splits + split
        gl.store(ws_ptr + rows[:, :, None] * HEAD_DIM + offs_d[None, None, :], acc, mask=g_ok[:, :, None])
        lse = gl.where(has_tokens, m_i + gl.log2(gl.where(has_tokens, l_i, 1.0)), float("-inf"))
        gl.store(lse_ptr + rows, lse, mask=g_ok)
    else:
        out_off = heads[:, :, None] * stride_oh + offs_d[None, None, :]
        gl.store(out_ptr + seq * stride_os + out_off, acc.to(out_ptr.dtype.element_ty), mask=g_ok[:, :, None])


@gluon.jit
def _producer(k_ptr, v_ptr, bt_row, k_smem, v_smem, ready, empty, start, end, n_steps, head_off,
              stride_kb, stride_kt, stride_kh, HEAD_DIM: gl.constexpr, BLOCK_SIZE: gl.constexpr, STEP: gl.constexpr,
              NUM_BUF: gl.constexpr, UNITS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1, 1, 16], [1, 4, 8], [1, 1, 1], [2, 1, 0])
    offs_u = gl.arange(0, UNITS, gl.SliceLayout(1, gl.SliceLayout(2, layout)))
    offs_t = gl.arange(0, 16, gl.SliceLayout(0, gl.SliceLayout(2, layout)))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, gl.SliceLayout(1, layout)))
    inner = (offs_u * stride_kh)[:, None, None] + offs_d[None, None, :] + head_off
    for i in range(n_steps):
        s = i % NUM_BUF
        mbarrier.wait(empty.index(s), ((i // NUM_BUF) & 1) ^ 1)
        for b in gl.static_range(STEP // 16):
            tok = start + i * STEP + b * 16 + offs_t
            ok = tok < end
            block = gl.load(bt_row + tok // BLOCK_SIZE, mask=ok, other=0).to(gl.int64)
            rows = block * stride_kb + (tok % BLOCK_SIZE) * stride_kt
            ptrs = rows[None, :, None] + inner
            mask = ok[None, :, None]
            cp_load(k_smem.index(s).slice(b * 16, 16, dim=1), k_ptr + ptrs, mask)
            cp_load(v_smem.index(s).slice(b * 16, 16, dim=1), v_ptr + ptrs, mask)
        cp.mbarrier_arrive(ready.index(s), increment_count=False)


@gluon.jit
def _ws_decode_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr,
                      stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_os, stride_oh,
                      stride_scale, qk_scale, num_splits, num_q_heads,
                      GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_SIZE: gl.constexpr, STEP: gl.constexpr,
                      NUM_BUF: gl.constexpr, UNITS: gl.constexpr, SPLIT: gl.constexpr, SMEM_VEC: gl.constexpr,
                      EARLY: gl.constexpr):
    smem_layout: gl.constexpr = gl.SwizzledSharedLayout(SMEM_VEC, 1, 1, [2, 1, 0])
    seq = gl.program_id(0)
    kv_head0 = gl.program_id(1) * UNITS
    split = gl.program_id(2)
    start, end, n_steps = split_steps(lens_ptr, seq, split, num_splits, STEP)
    k_smem = gl.allocate_shared_memory(k_ptr.dtype.element_ty, [NUM_BUF, UNITS, STEP, HEAD_DIM], smem_layout)
    v_smem = gl.allocate_shared_memory(k_ptr.dtype.element_ty, [NUM_BUF, UNITS, STEP, HEAD_DIM], smem_layout)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    for p in gl.static_range(NUM_BUF):
        mbarrier.init(ready.index(p), count=32)
        mbarrier.init(empty.index(p), count=1)
    bt_row = bt_ptr + seq * stride_bt
    gl.warp_specialize([
        (_consumer, (q_ptr, out_ptr, ws_ptr, lse_ptr, ks_ptr, vs_ptr, k_smem, v_smem, ready, empty,
                     seq, kv_head0, split, num_splits, start, end, n_steps, qk_scale, stride_qs, stride_qh,
                     stride_os, stride_oh, stride_scale, num_q_heads, GROUP, HEAD_DIM, STEP, NUM_BUF, UNITS, SPLIT, EARLY)),
        (_producer, (k_ptr, v_ptr, bt_row, k_smem, v_smem, ready, empty, start, end, n_steps, kv_head0 * stride_kh,
                     stride_kb, stride_kt, stride_kh, HEAD_DIM, BLOCK_SIZE, STEP, NUM_BUF, UNITS)),
    ], [1], [40])


LOG2E = 1.4426950408889634


def ws_decode(q, k, v, bt, lens, k_scale, v_scale, num_splits, step=32, num_buf=4, maxnreg=128, smem_vec=1,
              units=4, scale=None, early=0):
    """Returns out (merged in torch where split) — a probe wrapper."""
    num_seqs, hq, d = q.shape
    hkv = k.shape[2]
    group = hq // hkv
    scale = scale or d ** -0.5
    out = torch.empty_like(q)
    split = num_splits > 1
    ws = torch.empty((num_seqs, hq, num_splits, d), dtype=torch.float32, device=q.device)
    lse = torch.empty((num_seqs, hq, num_splits), dtype=torch.float32, device=q.device)
    stride_scale = 1 if k_scale.numel() > 1 else 0
    sk = k.stride()
    _ws_decode_kernel[(num_seqs, hkv // units, num_splits)](
        q, k, v, bt, lens, out, ws, lse, k_scale, v_scale, q.stride(0), q.stride(1), sk[0], sk[1], sk[2],
        bt.stride(0), out.stride(0), out.stride(1), stride_scale, scale * LOG2E, num_splits, hq,
        GROUP=group, HEAD_DIM=d, BLOCK_SIZE=k.shape[1], STEP=step, NUM_BUF=num_buf, UNITS=units, SPLIT=split,
        SMEM_VEC=smem_vec, EARLY=early, num_warps=units, maxnreg=maxnreg)
    return out, ws, lse


def merge_ref(ws, lse, out_dtype):
    m = lse.max(-1, keepdim=True).values
    w = torch.exp2(lse - m)
    return ((ws * w[..., None]).sum(-2) / w.sum(-1)[..., None]).to(out_dtype)
