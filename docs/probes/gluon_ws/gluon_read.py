"""Probe: Gluon read structures for the fp8 decode (loads only).

ring: one warp, a ring of NUM_SLOTS 16-token K/V slots, each slot refilled as soon as it is read into registers.
ws:   a producer warp keeps the ring full (cp.async + mbarrier), a consumer warp reads the slots.
"""
from __future__ import annotations

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as cp
from triton.experimental.gluon.language.nvidia.ampere import mbarrier

cp_load = getattr(cp, "async_load", None) or cp.async_copy_global_to_shared  # Triton 3.9 / 3.6
SLOT: gl.constexpr = 16
_cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier


@gluon.jit
def split_steps(lens_ptr, seq, split, num_splits, STEP: gl.constexpr):
    """This split's token range [start, end) and its number of STEP-token steps (the product decode's split rule)."""
    seq_len = gl.load(lens_ptr + seq)
    tokens_per_split = gl.cdiv(gl.cdiv(seq_len, num_splits), STEP) * STEP
    start = split * tokens_per_split
    end = gl.minimum(start + tokens_per_split, seq_len)
    return start, end, gl.cdiv(gl.maximum(end - start, 0), STEP)


@gluon.jit
def _whole_slots(lens_ptr, seq, split, num_splits):
    """The decode's 32-token split (its one-warp fp8 tile) in whole 16-token slots; a probe reads no tail."""
    start, end, _ = split_steps(lens_ptr, seq, split, num_splits, 32)
    return start, gl.maximum(end - start, 0) // 16


@gluon.jit
def _issue(k_ptr, v_ptr, k_dst, v_dst, bt_row, tok, ok, head_off, stride_kb, stride_kt,
           BLOCK_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr, layout: gl.constexpr):
    offs_t = gl.arange(0, 16, gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, layout))
    block = gl.load(bt_row + tok // BLOCK_SIZE, mask=ok, other=0).to(gl.int64)
    rows = block * stride_kb + (tok % BLOCK_SIZE + offs_t) * stride_kt + head_off
    ptrs = rows[:, None] + offs_d[None, :]
    mask = (offs_t < 16)[:, None] & ok
    cp_load(k_dst, k_ptr + ptrs, mask)
    cp_load(v_dst, v_ptr + ptrs, mask)


@gluon.jit
def _ring_read_kernel(k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, stride_kb, stride_kt, stride_kh, stride_bt, num_splits,
                      HEAD_DIM: gl.constexpr, BLOCK_SIZE: gl.constexpr, NUM_SLOTS: gl.constexpr,
                      STEP_SLOTS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [1, 1], [1, 0])
    smem_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    seq = gl.program_id(0)
    kv_head = gl.program_id(1)
    split = gl.program_id(2)
    start, n_slots = _whole_slots(lens_ptr, seq, split, num_splits)
    k_smem = gl.allocate_shared_memory(k_ptr.dtype.element_ty, [NUM_SLOTS, 16, HEAD_DIM], smem_layout)
    v_smem = gl.allocate_shared_memory(k_ptr.dtype.element_ty, [NUM_SLOTS, 16, HEAD_DIM], smem_layout)
    bt_row = bt_ptr + seq * stride_bt
    head_off = kv_head * stride_kh
    for p in gl.static_range(NUM_SLOTS):
        _issue(k_ptr, v_ptr, k_smem.index(p), v_smem.index(p), bt_row, start + p * 16, p < n_slots, head_off,
               stride_kb, stride_kt, BLOCK_SIZE, HEAD_DIM, layout)
        cp.commit_group()
    acc = gl.zeros([16, HEAD_DIM], gl.float32, layout)
    for j in range(n_slots // STEP_SLOTS):
        for h in gl.static_range(STEP_SLOTS):
            i = j * STEP_SLOTS + h
            s = i % NUM_SLOTS
            cp.wait_group(NUM_SLOTS - 1)
            k = k_smem.index(s).load(layout)
            v = v_smem.index(s).load(layout)
            _cta_barrier()
            nxt = i + NUM_SLOTS
            _issue(k_ptr, v_ptr, k_smem.index(s), v_smem.index(s), bt_row, start + nxt * 16, nxt < n_slots,
                   head_off, stride_kb, stride_kt, BLOCK_SIZE, HEAD_DIM, layout)
            cp.commit_group()
            acc += k.to(gl.float32) + v.to(gl.float32)
    cp.wait_group(0)
    total = gl.sum(gl.sum(acc, 1), 0)
    gl.store(out_ptr + (seq * gl.num_programs(1) + kv_head) * num_splits + split, total)


@gluon.jit
def _ws_consumer(k_smem, v_smem, ready, empty, n_slots, out_ptr, out_base, num_splits, HEAD_DIM: gl.constexpr,
                 NUM_SLOTS: gl.constexpr, UNITS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1, 1, 16], [1, 4, 8], [UNITS, 1, 1], [2, 1, 0])
    acc = gl.zeros([UNITS, 16, HEAD_DIM], gl.float32, layout)
    for i in range(n_slots):
        s = i % NUM_SLOTS
        mbarrier.wait(ready.index(s), (i // NUM_SLOTS) & 1)
        k = k_smem.index(s).load(layout)
        v = v_smem.index(s).load(layout)
        mbarrier.arrive(empty.index(s))
        acc += k.to(gl.float32) + v.to(gl.float32)
    total = gl.sum(gl.sum(acc, 2), 1)
    offs_u = gl.arange(0, UNITS, gl.SliceLayout(1, gl.SliceLayout(2, layout)))
    gl.store(out_ptr + out_base + offs_u * num_splits, total)


@gluon.jit
def _ws_producer(k_ptr, v_ptr, k_smem, v_smem, ready, empty, n_slots, start, bt_row, head_off, stride_kb, stride_kt,
                 stride_kh, HEAD_DIM: gl.constexpr, BLOCK_SIZE: gl.constexpr, NUM_SLOTS: gl.constexpr,
                 UNITS: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1, 1, 16], [1, 4, 8], [1, 1, 1], [2, 1, 0])
    offs_u = gl.arange(0, UNITS, gl.SliceLayout(1, gl.SliceLayout(2, layout)))
    offs_t = gl.arange(0, 16, gl.SliceLayout(0, gl.SliceLayout(2, layout)))
    offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, gl.SliceLayout(1, layout)))
    inner = (offs_u * stride_kh)[:, None, None] + (offs_t * stride_kt)[None, :, None] + offs_d[None, None, :]
    for i in range(n_slots):
        s = i % NUM_SLOTS
        mbarrier.wait(empty.index(s), ((i // NUM_SLOTS) & 1) ^ 1)
        tok = start + i * 16
        block = gl.load(bt_row + tok // BLOCK_SIZE).to(gl.int64)
        base = block * stride_kb + (tok % BLOCK_SIZE) * stride_kt + head_off
        cp_load(k_smem.index(s), k_ptr + base + inner)
        cp_load(v_smem.index(s), v_ptr + base + inner)
        cp.mbarrier_arrive(ready.index(s), increment_count=False)


@gluon.jit
def _ws_read_kernel(k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, stride_kb, stride_kt, stride_kh, stride_bt, num_splits,
                    HEAD_DIM: gl.constexpr, BLOCK_SIZE: gl.constexpr, NUM_SLOTS: gl.constexpr,
                    EMPTY_COUNT: gl.constexpr, PRODUCER_REGS: gl.constexpr, UNITS: gl.constexpr):
    smem_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [2, 1, 0])
    seq = gl.program_id(0)
    unit_group = gl.program_id(1)
    split = gl.program_id(2)
    start, n_slots = _whole_slots(lens_ptr, seq, split, num_splits)
    k_smem = gl.allocate_shared_memory(k_ptr.dtype.element_ty, [NUM_SLOTS, UNITS, 16, HEAD_DIM], smem_layout)
    v_smem = gl.allocate_shared_memory(k_ptr.dtype.element_ty, [NUM_SLOTS, UNITS, 16, HEAD_DIM], smem_layout)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_SLOTS, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_SLOTS, 1], mbarrier.MBarrierLayout())
    for p in gl.static_range(NUM_SLOTS):
        mbarrier.init(ready.index(p), count=32)
        mbarrier.init(empty.index(p), count=EMPTY_COUNT)
    bt_row = bt_ptr + seq * stride_bt
    head_off = unit_group * UNITS * stride_kh
    out_base = (seq * gl.num_programs(1) * UNITS + unit_group * UNITS) * num_splits + split
    gl.warp_specialize([
        (_ws_consumer, (k_smem, v_smem, ready, empty, n_slots, out_ptr, out_base, num_splits, HEAD_DIM, NUM_SLOTS,
                        UNITS)),
        (_ws_producer, (k_ptr, v_ptr, k_smem, v_smem, ready, empty, n_slots, start, bt_row, head_off, stride_kb,
                        stride_kt, stride_kh, HEAD_DIM, BLOCK_SIZE, NUM_SLOTS, UNITS)),
    ], [1], [PRODUCER_REGS])


def ring_read(k, v, bt, lens, num_splits, num_slots=8, step_slots=2):
    import torch
    out = torch.empty((bt.shape[0], k.shape[2], num_splits), dtype=torch.float32, device=k.device)
    sk = k.stride()
    _ring_read_kernel[(bt.shape[0], k.shape[2], num_splits)](
        k, v, bt, lens, out, sk[0], sk[1], sk[2], bt.stride(0), num_splits,
        HEAD_DIM=k.shape[3], BLOCK_SIZE=k.shape[1], NUM_SLOTS=num_slots, STEP_SLOTS=step_slots, num_warps=1)
    return out


def ws_read(k, v, bt, lens, num_splits, num_slots=6, empty_count=1, producer_regs=40, units=4, maxnreg=128):
    import torch
    out = torch.empty((bt.shape[0], k.shape[2], num_splits), dtype=torch.float32, device=k.device)
    sk = k.stride()
    _ws_read_kernel[(bt.shape[0], k.shape[2] // units, num_splits)](
        k, v, bt, lens, out, sk[0], sk[1], sk[2], bt.stride(0), num_splits,
        HEAD_DIM=k.shape[3], BLOCK_SIZE=k.shape[1], NUM_SLOTS=num_slots, EMPTY_COUNT=empty_count,
        PRODUCER_REGS=producer_regs, UNITS=units, num_warps=units, maxnreg=maxnreg)
    return out
