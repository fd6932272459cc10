"""Launch planning of the one-pass decode kernel: split-K count and tile (`decode_config`), merge chunk or tree,
workspace, arrival counters.

Everything here depends only on shapes, so `plan` is cached per shape and a call of `paged_decode` costs a
dictionary look-up. The constants come from the H200 sweeps in docs/kernels.md.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from kernels._common import dot_precision, next_pow2
from kernels.decode_config import (
    DecodeConfig, choose_launch, choose_num_splits, default_decode_config, nonempty_splits, widen_v_in_registers,
)

MERGE_TILE = 8192  # fp32 partials the merge loads at once at 4 warps (64 registers a thread), pro rata for fewer
MIN_MERGE_S = 4  # splits a merge load takes at least: MQA's 32 x 128 partials 4 at a time (H200: 25.6 -> 25.0 us)
# Split partial outputs in the (16-bit) output dtype, as vLLM's paged_attention_v2 keeps them (`tmp_output` in
# `output.dtype`, vllm/attention/ops/paged_attn.py:148-150 at 5da3a32), where the query group is this large: a
# split's partials are GROUP x head_dim values against its K/V tile bytes. H200, 2026-12-03: MQA (group 32) 23.8 vs
# 25.0 us, with an fp8 cache 20.5 vs 21.8; groups 8 and 16 0-9% faster on every split row, bf16 and fp8; group 4
# rows 2-6% slower (1 x 1024, 1 x 32768) (docs/kernels.md, "What was tried" 31, 33).
PARTIALS_16BIT_MIN_GROUP = 8
# Where the flat merge would take this many dependent chunk loads or more, the splits merge up a tree instead
# (`decode_merge._merge_tree`), of fan-in 8 where a multi-warp program's registers hold it (2x a flat chunk of
# fp32 partials, 4x of 16-bit ones: no spills in sm_90a builds), else a flat chunk. H200, graph us, flat / tree
# of 8: 1 x 32768 with 32 query heads a KV head (64 splits, 16 chunks) 33.0 / 25.2, 16 heads 30.3 / 25.3 (fan-in
# 16: 26.6), 1 x 16384 with 32 26.6 / 19.0, 8 x 4096 with 32 23.4 / 21.3; at 2-3 chunks (MQA 32 x 2048, 1 x 32768
# with 4) the tree's extra level is even or up to 7% slower (docs/kernels.md, "What was tried" 38).
MERGE_TREE_MIN_CHUNKS = 4
TREE_FAN_IN = 8
# A tree's counters a (sequence, KV head) pair, per split: its levels need ceil(S/F) + ceil(S/F^2) + ... < 2 S
# for any fan-in F >= 2 (`decode_merge._merge_tree` addresses them with the same constant)
TREE_COUNTERS_PER_SPLIT = 2


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def partials_in_16_bits(num_splits: int, group: int, q_dtype: torch.dtype) -> bool:
    """Whether a split launch stores its normalized partial outputs in the query's (= output's) 16-bit dtype rather
    than fp32: one more rounding to the output dtype (vLLM does the same), half the partials' traffic."""
    return num_splits > 1 and group >= PARTIALS_16BIT_MIN_GROUP and q_dtype.itemsize == 2


_COUNTERS: dict[torch.device, tuple[int, torch.Tensor]] = {}
_OUTGROWN_COUNTERS: list[torch.Tensor] = []  # kept alive: a CUDA graph captured earlier still addresses them


def split_counters(device: torch.device, needed: int) -> torch.Tensor:
    """Per-device int32 arrival counters of the fused split merge; each launch leaves them at zero again.

    Launches on one stream are ordered, so they can share the array; launches running concurrently on
    different streams must not both split (pass num_splits=1 on the second stream). An array outgrown by a
    larger batch is never freed, so graphs captured with it replay safely.
    """
    size, counters = _COUNTERS.get(device, (0, None))
    if size < needed:
        if counters is not None:
            _OUTGROWN_COUNTERS.append(counters)
        size = max(needed, 2 * size, 1 << 16)  # doubling: a batch that grows by steps keeps few outgrown arrays
        counters = torch.zeros(size, dtype=torch.int32, device=device)
        _COUNTERS[device] = (size, counters)
    return counters


class DecodePlan(NamedTuple):
    """Everything about a decode launch that depends only on shapes."""

    grid: tuple[int, int, int]  # (sequences, KV heads, splits)
    num_splits: int
    meta: dict  # the kernel's constexprs and launch options
    workspace: int  # fp32 elements of split partials and LSEs (0 unsplit)
    lse_offset: int  # fp32 elements before the LSEs in the workspace
    counters: int  # int32 arrival counters the merge needs (`split_counters`; 0 unsplit)


@functools.lru_cache(maxsize=4096)
def plan(num_seqs: int, num_q_heads: int, num_kv_heads: int, head_dim: int, block_size: int, max_context: int,
          q_dtype: torch.dtype, fp8: bool, elem_size: int, device: torch.device, num_splits: int | None,
          config: DecodeConfig | None) -> DecodePlan:
    """The launch of one decode call's shapes (cached: a call of `paged_decode` costs a dictionary look-up)."""
    on_gpu = device.type == "cuda"
    cfg = config or default_decode_config(head_dim, on_gpu, elem_size, q_elem_size=q_dtype.itemsize)
    if num_splits is None:
        if on_gpu:
            num_sms = _num_sms(device.index if device.index is not None else torch.cuda.current_device())
            num_splits, auto_cfg = choose_launch(num_seqs, num_kv_heads, max_context, head_dim, elem_size, num_sms,
                                                  num_q_heads // num_kv_heads, q_dtype.itemsize)
            cfg = config or auto_cfg
        else:
            num_splits = choose_num_splits(num_seqs, num_kv_heads, max_context, 4)
        # (again) with the tile launched; the cut is idempotent. An explicit count is the caller's.
        num_splits = nonempty_splits(max_context, num_splits, cfg.block_n)
    if not 1 <= num_splits <= 256:
        raise ValueError(f"num_splits: must be in [1, 256], got {num_splits}")
    group = num_q_heads // num_kv_heads
    merge_g = max(2, next_pow2(group))
    # the interpreter takes small merge chunks so that tests walk the multi-chunk loop too
    merge_tile = MERGE_TILE * cfg.num_warps // 4 if on_gpu else 512
    merge_s = min(next_pow2(num_splits),
                  max(MIN_MERGE_S if on_gpu else 1, merge_tile // (merge_g * next_pow2(head_dim))))
    # No padding of the query tile to the MMA's 16 rows: Triton (3.6+) pads a small dot itself, and the kernel
    # then holds fewer registers and softmax lanes (H200: 0.2-2.6% faster on every row, "What was tried" 33).
    partials_16bit = partials_in_16_bits(num_splits, group, q_dtype)
    merge_tree = num_splits > 1 and -(-num_splits // merge_s) >= MERGE_TREE_MIN_CHUNKS
    if merge_tree:  # fan-in: each node is one load, so it may take more registers than a chunk of the flat loop
        tree_tile = merge_tile * (4 if partials_16bit else 2) if on_gpu and cfg.num_warps >= 4 else merge_tile
        fan_in = min(TREE_FAN_IN, tree_tile // (merge_g * next_pow2(head_dim)))
        merge_s = max(2, min(next_pow2(num_splits), max(merge_s, fan_in)))
    meta = dict(GROUP=group, GROUP_PAD=next_pow2(group),
                HEAD_DIM=head_dim, HEAD_DIM_PAD=next_pow2(head_dim), BLOCK_SIZE=block_size, BLOCK_N=cfg.block_n,
                SPLIT=num_splits > 1, MERGE_G=merge_g, MERGE_S=merge_s, FP8=fp8,
                FP8_TO_F32=q_dtype == torch.float32,
                FP8_WIDEN_V=widen_v_in_registers(fp8 and on_gpu, q_dtype, cfg.num_warps, head_dim),
                PARTIALS_16BIT=partials_16bit, MERGE_TREE=merge_tree,
                DOT_PRECISION=dot_precision(q_dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    if on_gpu and cfg.max_registers is not None:
        meta["maxnreg"] = cfg.max_registers
    partials = num_seqs * num_q_heads * num_splits * head_dim
    lse_offset = -(-partials // 2) if partials_16bit else partials  # two 16-bit partials an fp32 slot
    workspace = lse_offset + num_seqs * num_q_heads * num_splits if num_splits > 1 else 0
    pairs = num_seqs * num_kv_heads
    counters = 0 if num_splits == 1 else pairs * TREE_COUNTERS_PER_SPLIT * num_splits if merge_tree else pairs
    return DecodePlan((num_seqs, num_kv_heads, num_splits), num_splits, meta, workspace, lse_offset, counters)
