"""The product's decode with another end for split launches (docs/kernels.md "What was tried" 63): each split takes a
ticket first; the last to take one keeps its own partial in registers, waits until the others have published theirs
(a second counter) and merges, so its own store, release fence and re-load leave the critical path. Built from
`kernels/decode.py`'s source like `stamped.py` (the flat merge only: launches with `MERGE_TREE` are refused).
"""
from __future__ import annotations

import inspect
import os
import sys

import torch

import kernels.decode
from kernels._common import default_scale

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamped import anchored, decode_kernel_from  # noqa: E402

_HELPERS = '''

from kernels.decode_merge import _load_splits


@triton.jit
def _split_end_fast(acc, m_i, l_i, has_tokens, out_ptr, ws_ptr, sem_ptr, seq, kv_head, split, num_splits, lse_offset,
                    stride_os, stride_oh, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                    HEAD_DIM_PAD: tl.constexpr, MERGE_S: tl.constexpr, PARTIALS_16BIT: tl.constexpr):
    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    g_mask = offs_g < GROUP
    d_mask = offs_d < HEAD_DIM
    heads = kv_head * GROUP + offs_g
    rows = (seq * tl.num_programs(1) * GROUP + heads).to(tl.int64) * num_splits
    part_ptr = ws_ptr.to(tl.pointer_type(out_ptr.dtype.element_ty)) if PARTIALS_16BIT else ws_ptr
    lse = tl.where(has_tokens, m_i + tl.log2(tl.where(has_tokens, l_i, 1.0)), float("-inf"))
    pair = seq * tl.num_programs(1) + kv_head
    arrive = sem_ptr + pair
    ready = sem_ptr + tl.num_programs(0) * tl.num_programs(1) + pair
    if tl.atomic_add(arrive, 1, sem="relaxed") == num_splits - 1:
        while tl.atomic_add(ready, 0, sem="acquire") < num_splits - 1:
            pass
        # own partial first (split 0, never empty, is in the first chunk when it is not this one)
        m = lse
        weight = tl.where(lse > float("-inf"), 1.0, 0.0)
        total = acc
        offs_c = tl.arange(0, MERGE_S)
        for s0 in range(0, num_splits, MERGE_S):
            s_idx = s0 + offs_c
            mask2 = g_mask[:, None] & ((s_idx < num_splits) & (s_idx != split))[None, :]
            lses, part = _load_splits(ws_ptr, part_ptr, lse_offset, rows, s_idx, mask2, HEAD_DIM, HEAD_DIM_PAD)
            m_new = tl.where(g_mask, tl.maximum(m, tl.max(lses, 1)), 0.0)
            alpha = tl.exp2(m - m_new)
            w = tl.exp2(lses - m_new[:, None])
            weight = weight * alpha + tl.sum(w, 1)
            total = total * alpha[:, None] + tl.sum(part * w[:, :, None], 1)
            m = m_new
        total = total / tl.where(g_mask, weight, 1.0)[:, None]
        out_ptrs = out_ptr + seq * stride_os + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])
        tl.atomic_xchg(arrive, 0)
        tl.atomic_xchg(ready, 0)
    else:
        tl.store(part_ptr + (rows + split)[:, None] * HEAD_DIM + offs_d[None, :],
                 acc.to(part_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])
        tl.store(ws_ptr + lse_offset + rows + split, lse, mask=g_mask)
        tl.debug_barrier()  # every thread's partial is written before the release below
        tl.atomic_add(ready, 1, sem="release")
'''
_SPLIT_START = "    else:\n        # Workspace rows (seq, head)"
_SPLIT_END = "                        GROUP, HEAD_DIM, HEAD_DIM_PAD, MERGE_G, MERGE_S)\n\n"
_FAST_END = ("    else:\n        _split_end_fast(acc, m_i, l_i, has_tokens, out_ptr, ws_ptr, sem_ptr, seq, kv_head, split,"
             " num_splits, lse_offset,\n                        stride_os, stride_oh, GROUP, GROUP_PAD, HEAD_DIM,"
             " HEAD_DIM_PAD, MERGE_S, PARTIALS_16BIT)\n\n")


def _build_kernel():
    source = inspect.getsource(kernels.decode)
    start = anchored(source, _SPLIT_START)
    end = anchored(source, _SPLIT_END) + len(_SPLIT_END)
    return decode_kernel_from(source[:start] + _FAST_END + source[end:], _HELPERS, "fast_merge_decode_kernel")


class FastMergeDecode:
    """`paged_decode` at a given plan (`kernels.decode_launch.plan`) with the ticket-first split end."""

    _kernel = None

    def __init__(self, p, device: torch.device) -> None:
        if p.num_splits < 2 or p.meta["MERGE_TREE"]:
            raise ValueError("fast_merge: a split launch with the flat merge only")
        if FastMergeDecode._kernel is None:
            FastMergeDecode._kernel = _build_kernel()
        self.p = p
        self.ws = torch.empty(p.workspace, dtype=torch.float32, device=device)
        self.counters = torch.zeros(2 * p.grid[0] * p.grid[1], dtype=torch.int32, device=device)

    def __call__(self, q, k_cache, v_cache, block_tables, seq_lens, k_scale=None, v_scale=None) -> torch.Tensor:
        out = torch.empty_like(q)
        if k_scale is None:
            k_scale = v_scale = torch.ones(1, dtype=torch.float32, device=q.device)
        sq, sk, so = q.stride(), k_cache.stride(), out.stride()
        p = self.p
        self._kernel[p.grid](q, k_cache, v_cache, block_tables, seq_lens, out, self.ws, self.counters, k_scale,
                             v_scale,
                             sq[0], sq[1], sk[0], sk[1], sk[2], block_tables.stride(0), so[0], so[1],
                             1 if k_scale.numel() > 1 else 0, default_scale(q.shape[-1], None) * kernels.decode.LOG2E,
                             p.num_splits, p.lse_offset, **p.meta)
        return out
