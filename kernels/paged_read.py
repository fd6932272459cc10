"""The decode's reads without its attention: a read-speed ceiling for a launch configuration.

`paged_read` walks a paged K/V cache exactly as `paged_decode` would at the same split count and `DecodeConfig`
(grid of (sequence, KV head, split) programs, whole BLOCK_N tiles gathered through the block table, the tail
tile masked) and runs the decode's two dots against constant operands instead of its softmax: Triton stages a
load through shared memory with pipelined `cp.async` copies only when it feeds a dot, so the copies are the
decode's. What it returns, each program's sum of the K and V elements it read, only proves the reads happened.
Its time against the decode's says whether a decode launch waits on its reads or on its math
(docs/kernels.md, "What was tried" 51; `python -m kernels.bench_read`).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels._common import FP8_DTYPE, check_cache, check_index, gather_sequence, next_pow2
from kernels._paged import load_kv_tile, tile_kv_offsets
from kernels.decode_config import DecodeConfig


@triton.jit
def _read_tile(k_ptr, v_ptr, bt_row, tile_start, end, head_off, stride_kb, stride_kt, acc_k, acc_v,
               HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
               MASKED: tl.constexpr, FP8: tl.constexpr):
    n_mask = tile_start + tl.arange(0, BLOCK_N) < end
    kv_off = tile_kv_offsets(bt_row, tile_start, n_mask, head_off, stride_kb, stride_kt, BLOCK_SIZE, BLOCK_N, MASKED)
    k, v = load_kv_tile(k_ptr, v_ptr, kv_off, n_mask, HEAD_DIM, HEAD_DIM_PAD, MASKED)
    if FP8:  # e4m3 widened to fp16 (exact) as the one-warp decode does (its 4-warp fp8 launches widen V as loaded)
        k = k.to(tl.float16)
        v = v.to(tl.float16)
    ones_q = tl.full([16, HEAD_DIM_PAD], 1.0, k.dtype)
    ones_p = tl.full([16, BLOCK_N], 1.0, v.dtype)
    acc_k += tl.dot(ones_q, tl.trans(k))  # every row: each token's sum over the head dim
    acc_v += tl.dot(ones_p, v)  # every row: each head dim's sum over the tokens
    return acc_k, acc_v


@triton.jit
def _paged_read_kernel(k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, stride_kb, stride_kt, stride_kh, stride_bt, num_splits,
                       HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                       BLOCK_N: tl.constexpr, FP8: tl.constexpr):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(lens_ptr + seq)
    tokens_per_split = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N  # the decode's split rule
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, seq_len)
    acc_k = tl.zeros([16, BLOCK_N], dtype=tl.float32)
    acc_v = tl.zeros([16, HEAD_DIM_PAD], dtype=tl.float32)
    bt_row = bt_ptr + seq * stride_bt
    head_off = kv_head * stride_kh
    full_end = start + tl.maximum(end - start, 0) // BLOCK_N * BLOCK_N
    for tile_start in range(start, full_end, BLOCK_N):
        acc_k, acc_v = _read_tile(k_ptr, v_ptr, bt_row, tile_start, end, head_off, stride_kb, stride_kt, acc_k, acc_v,
                                  HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, False, FP8)
    if full_end < end:
        acc_k, acc_v = _read_tile(k_ptr, v_ptr, bt_row, full_end, end, head_off, stride_kb, stride_kt, acc_k, acc_v,
                                  HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, True, FP8)
    total = (tl.sum(acc_k) + tl.sum(acc_v)) / 16
    tl.store(out_ptr + (seq * tl.num_programs(1) + kv_head) * num_splits + split, total)


def paged_read(k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor, *,
               num_splits: int = 1, config: DecodeConfig | None = None) -> torch.Tensor:
    """Read what `paged_decode` reads at `num_splits` and `config`; returns float32 [num_seqs, num_kv_heads,
    num_splits], each program's sum of its K and V elements. 16-bit and fp8 (e4m3) caches."""
    _, block_size, num_kv_heads, head_dim = check_cache(k_cache, v_cache)
    if k_cache.dtype not in (torch.float16, torch.bfloat16, FP8_DTYPE):
        raise ValueError(f"k_cache: paged_read takes a 16-bit or fp8 cache, got {k_cache.dtype}")
    check_index(block_tables, "block_tables", 2, None, k_cache.device)
    num_seqs = block_tables.shape[0]
    check_index(seq_lens, "seq_lens", 1, num_seqs, k_cache.device)
    if not 1 <= num_splits <= 256:
        raise ValueError(f"num_splits: must be in [1, 256], got {num_splits}")
    config = config or DecodeConfig(32, 1, 1)
    out = torch.empty((num_seqs, num_kv_heads, num_splits), dtype=torch.float32, device=k_cache.device)
    if num_seqs == 0:
        return out
    sk = k_cache.stride()
    extra = {} if config.max_registers is None or k_cache.device.type != "cuda" else {"maxnreg": config.max_registers}
    _paged_read_kernel[(num_seqs, num_kv_heads, num_splits)](
        k_cache, v_cache, block_tables, seq_lens, out, sk[0], sk[1], sk[2], block_tables.stride(0), num_splits,
        HEAD_DIM=head_dim, HEAD_DIM_PAD=next_pow2(head_dim), BLOCK_SIZE=block_size, BLOCK_N=config.block_n,
        FP8=k_cache.dtype == FP8_DTYPE, num_warps=config.num_warps, num_stages=config.num_stages, **extra)
    return out


def paged_read_ref(k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                   *, num_splits: int = 1, block_n: int = 32) -> torch.Tensor:
    """float64 reference of `paged_read`: each (sequence, KV head, split)'s sum of its tokens' K and V elements,
    the splits cut as the kernel cuts them (whole `block_n` tiles)."""
    num_seqs, num_kv_heads = block_tables.shape[0], k_cache.shape[2]
    out = torch.zeros((num_seqs, num_kv_heads, num_splits), dtype=torch.float64, device=k_cache.device)
    k_cache, v_cache = k_cache.to(torch.float64), v_cache.to(torch.float64)
    for i, length in enumerate(seq_lens.tolist()):
        k = gather_sequence(k_cache, block_tables[i], length)  # [length, heads, dim]
        v = gather_sequence(v_cache, block_tables[i], length)
        per_token = (k + v).sum(-1)  # [length, heads]
        tokens_per_split = math.ceil(math.ceil(length / num_splits) / block_n) * block_n
        for split in range(num_splits):
            out[i, :, split] = per_token[split * tokens_per_split:(split + 1) * tokens_per_split].sum(0)
    return out
