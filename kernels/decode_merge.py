"""The split-K merge of the one-pass decode: a split's program, once its partial output and LSE are in the
workspace, arrives at an atomic counter; the last to arrive merges.

`_merge_flat`: the last split of a (sequence, KV head) merges all its splits, MERGE_S a load. `_merge_tree`: where
that would be a long chain of dependent loads (many splits of a large query group), siblings of fan-in MERGE_S
merge level by level, the last arrival of each sibling set doing the work (docs/kernels.md, Design).
Workspace rows (seq, head) hold num_splits partial outputs [HEAD_DIM] (fp32, or the output dtype: `part_ptr`),
then (at lse_offset fp32 elements) their LSEs (log2 units). Each merge leaves its counters at zero.
"""
from __future__ import annotations

import triton
import triton.language as tl

from kernels.decode_launch import TREE_COUNTERS_PER_SPLIT

_TREE_COUNTERS_PER_SPLIT = tl.constexpr(TREE_COUNTERS_PER_SPLIT)


@triton.jit
def _load_splits(ws_ptr, part_ptr, lse_offset, mrows, slots, mask2, HEAD_DIM: tl.constexpr,
                 HEAD_DIM_PAD: tl.constexpr):
    """LSEs [MERGE_G, MERGE_S] and partials [MERGE_G, MERGE_S, HEAD_DIM_PAD] (fp32) of the heads' rows `mrows` at
    split slots `slots`; masked entries read -inf and 0. .cg loads bypass L1, which is not coherent across SMs."""
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    lses = tl.load(ws_ptr + lse_offset + mrows[:, None] + slots[None, :], mask=mask2, other=float("-inf"),
                   cache_modifier=".cg")
    part_off = (mrows[:, None] + slots[None, :]) * HEAD_DIM
    part = tl.load(part_ptr + part_off[:, :, None] + offs_d[None, None, :],
                   mask=mask2[:, :, None] & d_mask[None, None, :], other=0.0, cache_modifier=".cg")
    return lses, part.to(tl.float32)


@triton.jit
def _merge_flat(out_ptr, ws_ptr, part_ptr, sem_ptr, seq, kv_head, num_splits, lse_offset, stride_os, stride_oh,
                GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, MERGE_G: tl.constexpr,
                MERGE_S: tl.constexpr):
    """The last split of a (sequence, KV head) to arrive merges all its splits' partials into the output."""
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    counter = sem_ptr + seq * tl.num_programs(1) + kv_head
    if tl.atomic_add(counter, 1, sem="acq_rel") == num_splits - 1:
        # Last split of this (seq, KV head): merge its GROUP heads, MERGE_S splits per load, with a running
        # max (as the online softmax) so that no separate pass over the LSEs precedes the partials: each
        # chunk is one dependent round trip.
        offs_mg = tl.arange(0, MERGE_G)
        mg_mask = offs_mg < GROUP
        mrows = (seq * tl.num_programs(1) * GROUP + kv_head * GROUP + offs_mg).to(tl.int64) * num_splits
        offs_c = tl.arange(0, MERGE_S)
        m = tl.full([MERGE_G], float("-inf"), dtype=tl.float32)
        weight = tl.zeros([MERGE_G], dtype=tl.float32)
        total = tl.zeros([MERGE_G, HEAD_DIM_PAD], dtype=tl.float32)
        for s0 in range(0, num_splits, MERGE_S):
            s_idx = s0 + offs_c
            mask2 = mg_mask[:, None] & (s_idx < num_splits)[None, :]
            lses, part = _load_splits(ws_ptr, part_ptr, lse_offset, mrows, s_idx, mask2, HEAD_DIM, HEAD_DIM_PAD)
            # split 0 is never empty, so m is finite after the first chunk for every real head
            m_new = tl.where(mg_mask, tl.maximum(m, tl.max(lses, 1)), 0.0)
            alpha = tl.exp2(m - m_new)
            w = tl.exp2(lses - m_new[:, None])
            weight = weight * alpha + tl.sum(w, 1)
            total = total * alpha[:, None] + tl.sum(part * w[:, :, None], 1)
            m = m_new
        total = total / tl.where(mg_mask, weight, 1.0)[:, None]
        merged_ptrs = out_ptr + seq * stride_os + (kv_head * GROUP + offs_mg)[:, None] * stride_oh + offs_d[None, :]
        tl.store(merged_ptrs, total.to(out_ptr.dtype.element_ty), mask=mg_mask[:, None] & d_mask[None, :])
        tl.atomic_xchg(counter, 0)  # ready for the next launch


@triton.jit
def _merge_tree(out_ptr, ws_ptr, part_ptr, sem_ptr, seq, kv_head, split, num_splits, lse_offset, stride_os, stride_oh,
                GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, MERGE_G: tl.constexpr,
                MERGE_S: tl.constexpr):
    """Merge a (sequence, KV head)'s split partials up a tree of fan-in MERGE_S: the last of MERGE_S sibling
    nodes to arrive (an atomic counter a parent) merges them in one load into the first sibling's workspace slot
    and moves up, so a merge of many splits is a few dependent round trips, spread over programs, instead of
    one program's chain of splits / MERGE_S loads. The root writes the output.

    Level l's node i covers splits [i * MERGE_S^l, (i + 1) * MERGE_S^l) and keeps its partial and LSE in split
    slot i * MERGE_S^l. A pair's counters start at pair * TREE_COUNTERS_PER_SPLIT * num_splits (`plan` sizes them).
    """
    offs_mg = tl.arange(0, MERGE_G)
    offs_c = tl.arange(0, MERGE_S)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mg_mask = offs_mg < GROUP
    d_mask = offs_d < HEAD_DIM
    pair = seq * tl.num_programs(1) + kv_head
    mrows = (pair * GROUP + offs_mg).to(tl.int64) * num_splits
    node = split
    width = tl.full((), 1, tl.int32)  # splits a node of this level covers
    count = num_splits  # nodes at this level
    counters = sem_ptr + pair * _TREE_COUNTERS_PER_SPLIT * num_splits
    going = tl.full((), True, tl.int1)
    while going:
        parent = node // MERGE_S
        first = parent * MERGE_S
        counter = counters + parent
        last = tl.atomic_add(counter, 1, sem="acq_rel") == tl.minimum(count - first, MERGE_S) - 1
        if last:
            tl.atomic_xchg(counter, 0)  # every sibling has arrived: ready for the next launch
            slots = (first + offs_c) * width
            mask2 = mg_mask[:, None] & (first + offs_c < count)[None, :]
            lses, part = _load_splits(ws_ptr, part_ptr, lse_offset, mrows, slots, mask2, HEAD_DIM, HEAD_DIM_PAD)
            m = tl.max(lses, 1)
            m = tl.where(m > float("-inf"), m, 0.0)  # a node of empty (trailing) splits has no finite LSE
            w = tl.exp2(lses - m[:, None])
            weight = tl.sum(w, 1)
            total = tl.sum(part * w[:, :, None], 1) / tl.where(weight > 0, weight, 1.0)[:, None]
            if count <= MERGE_S:  # the root
                heads = kv_head * GROUP + offs_mg
                out_ptrs = out_ptr + seq * stride_os + heads[:, None] * stride_oh + offs_d[None, :]
                tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=mg_mask[:, None] & d_mask[None, :])
            else:
                slot = first * width
                tl.store(part_ptr + (mrows + slot)[:, None] * HEAD_DIM + offs_d[None, :],
                         total.to(part_ptr.dtype.element_ty), mask=mg_mask[:, None] & d_mask[None, :])
                lse = tl.where(weight > 0, m + tl.log2(tl.where(weight > 0, weight, 1.0)), float("-inf"))
                tl.store(ws_ptr + lse_offset + mrows + slot, lse, mask=mg_mask)
                tl.debug_barrier()  # the merged partial is written before the next level's release
        going = last & (count > MERGE_S)
        counters += tl.cdiv(count, MERGE_S)
        node = parent
        width *= MERGE_S
        count = tl.cdiv(count, MERGE_S)
