"""The decode kernel's launch configuration and its automatic choice: split count, K/V tile, warps, stages.

The rules and constants come from the H200 sweeps in docs/kernels.md ("What was tried"); `decode_launch.plan`
applies them once per shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from kernels._common import next_pow2

MAX_SPLITS = 64
MIN_TOKENS_PER_SPLIT = 128  # below this a split's fixed cost (q load, merge traffic) outweighs its parallelism
TARGET_PROGRAMS_PER_SM = 4  # two full waves at two resident programs per SM (H200 sweep, docs/kernels.md)
REGISTERS_PER_SM = 64 * 1024  # 32-bit registers of an SM (sm_80 and sm_90 alike)
SMEM_BUDGET = 160 * 1024  # bytes of pipelined K/V tiles per program; leaves room below the 227 KB limit
TWO_BUFFER_STAGES = 5  # the stages at which a paged kernel's K/V loads get two shared-memory buffers (`kv_buffers`)
# fp8 4-warp programs take them where they walk this many tiles (3-7% faster on the H200); below it the longer
# pipeline prologue costs more than the overlap gives
FP8_DEEP_MIN_TILES = 8
# fp8 with many (sequence, KV head) pairs: one-warp programs over 32-token tiles, about 8 an SM (H200, 2026-12-03:
# 256 x 2048 275 us against 364 us for 4-warp programs, 0.56x of bf16; docs/kernels.md, "What was tried" 24)
FP8_WARP_MIN_UNITS = 64  # below this (1 x 32768, 1 x 1024) 4-warp programs split 8-33 ways stay faster
WARP_PROGRAMS_PER_SM = 8
WARP_MIN_TOKENS_PER_SPLIT = 512  # 8 x 4096: 8 splits 34.1 us, 16 splits 35.9 us
# 16-bit caches with this many pairs or more: one-warp programs over 32-token tiles too (H200, three probes on
# 2026-12-03: 128 x 512, 256 x 2048 and MHA 32 x 2048 0.5-4.5% faster than 64 x 4 x 3; at 256-512 pairs, and split,
# not faster; docs/kernels.md, "What was tried" 24, 28, 29)
WARP_MIN_UNITS_16BIT = 1024
# A split launch of a 16-bit cache and query: 64-token tiles with two K/V buffers where a program walks this many
# tiles or more, else 128-token tiles with one. H200, 2026-12-03, read-flushed graph us at the automatic split
# counts, 128 x 4 x 2 / 64 x 4 x 5: MQA 32 x 2048 (8 splits, 4 tiles) 21.5 / 20.9, 8 x 4096 40.3 / 39.7, 16 x 16384
# 251.4 / 249.0, 32 x 2048 68.8 / 68.2, 1 x 32768 40.8 / 40.8 (docs/kernels.md, "What was tried" 46)
SPLIT_DEEP_MIN_TILES = 4


def kv_buffers(num_stages: int) -> int:
    """Shared-memory buffers Triton (3.6 to 3.9) gives a paged kernel's K/V loads at `num_stages`.

    The loads' addresses come from a block-table load in the same loop, which takes a pipeline stage of
    its own, so K/V get (num_stages - 1) // 2 buffers: one, i.e. no overlap of a tile's loads with the
    previous tile's math, at 3 or 4 stages; two at 5 or 6 (read from the compiled TTGIR, docs/kernels.md).
    """
    return max(1, (num_stages - 1) // 2)


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_context: int, num_sms: int,
                      programs_per_sm: int = TARGET_PROGRAMS_PER_SM,
                      min_tokens_per_split: int = MIN_TOKENS_PER_SPLIT) -> int:
    """Split the context so (seq, kv head, split) programs fill about `programs_per_sm` per SM, no split
    shorter than `min_tokens_per_split`.

    Rounded down: a partial extra wave costs more than slightly fewer programs (seen at 16 x 16384: 5 splits
    took 324 us, 4 took 255 us on an H200).
    """
    programs = num_seqs * num_kv_heads
    splits = min(programs_per_sm * num_sms // programs, max_context // min_tokens_per_split, MAX_SPLITS)
    return max(1, splits)


def nonempty_splits(max_context: int, num_splits: int, block_n: int) -> int:
    """How many of `num_splits` splits of a `max_context`-token sequence hold tokens.

    The kernel gives every split the same whole number of BLOCK_N tiles (the context over the splits, rounded up
    to a tile), so the last splits can be empty: 1 x 32768 at 33 splits of 1024 tokens leaves the 33rd empty, 3000
    tokens at 23 splits of 256 leave 11. An empty split still launches a program and a merge slot.
    """
    if max_context < 1:
        return num_splits
    tokens_per_split = triton.cdiv(triton.cdiv(max_context, num_splits), block_n) * block_n  # as the kernel
    return triton.cdiv(max_context, tokens_per_split)


@dataclass(frozen=True)
class DecodeConfig:
    """Launch configuration of the decode kernel: K/V tile of `block_n` tokens, warps, pipeline stages, and
    optionally a cap on registers a thread (`max_registers`, Triton's `maxnreg`; None: the compiler's choice)."""

    block_n: int
    num_warps: int
    num_stages: int
    max_registers: int | None = None

    def __post_init__(self) -> None:
        if self.block_n < 16 or self.block_n & (self.block_n - 1):
            raise ValueError(f"block_n: must be a power of two >= 16, got {self.block_n}")
        if self.num_warps not in (1, 2, 4, 8, 16) or self.num_stages < 1:
            raise ValueError(f"num_warps/num_stages: got {self.num_warps}/{self.num_stages}")
        if self.max_registers is not None and not 24 <= self.max_registers <= 255:
            raise ValueError(f"max_registers: must be in [24, 255] or None, got {self.max_registers}")


def default_decode_config(head_dim: int, on_gpu: bool, elem_size: int = 2, split: bool = False,
                          tiles_per_program: int = 0, q_elem_size: int = 2) -> DecodeConfig:
    """Small tiles in the interpreter, where size is time; on the GPU the H200 sweeps' picks (docs/kernels.md):
    64-token tiles, but 128 for an fp8 cache (`elem_size` 1: same bytes a stage) and when splitting. An fp8
    cache whose programs walk `tiles_per_program` >= FP8_DEEP_MIN_TILES tiles gets a second K/V buffer: the
    4-warp fp8 kernel held 253 registers when this was measured (2026-12-02; about 195 since the changes of
    "What was tried" 28-33), two programs an SM, too few to hide a tile's load latency alone."""
    if not on_gpu:
        return DecodeConfig(32, 1, 1)
    block_n, stages = (32, 2) if head_dim > 128 else (128 if elem_size == 1 or (split and elem_size == 2) else 64, 3)
    stage_bytes = 2 * block_n * next_pow2(head_dim) * elem_size  # one K and one V tile
    if (elem_size == 1 and head_dim <= 128 and tiles_per_program >= FP8_DEEP_MIN_TILES
            and kv_buffers(TWO_BUFFER_STAGES) * stage_bytes <= SMEM_BUDGET):
        return DecodeConfig(block_n, 4, TWO_BUFFER_STAGES)
    stages = max(1, min(stages, SMEM_BUDGET // stage_bytes))
    if elem_size == 2 and q_elem_size == 2 and block_n == 64:
        # TARGET_PROGRAMS_PER_SM of these share an SM only at <= 128 registers a thread; the sm_90a build of a
        # 16-bit cache and query needs 130 (Triton 3.6), which would leave three. The cap costs no spills there.
        return DecodeConfig(block_n, 4, stages, REGISTERS_PER_SM // (TARGET_PROGRAMS_PER_SM * 4 * 32))
    return DecodeConfig(block_n, 4, stages)


FP8_WARP_CONFIG = DecodeConfig(32, 1, TWO_BUFFER_STAGES)
WARP_CONFIG_16BIT = DecodeConfig(32, 1, 3)
SPLIT_DEEP_CONFIG_16BIT = DecodeConfig(64, 4, TWO_BUFFER_STAGES)


def widen_v_in_registers(fp8_on_gpu: bool, q_dtype: torch.dtype, num_warps: int, head_dim: int) -> bool:
    """Whether an fp8 launch widens V where it is loaded (`widen_e4m3`, an inline-asm conversion; Triton takes
    e4m3 only from sm_89 on, which has it), so that `p @ v` reads V with ldmatrix instead of byte by byte.

    Multi-warp programs with 16-bit queries only (H200, 2026-12-03, docs/kernels.md "What was tried" 29): 1 x
    32768 35.1 vs 39.1 us, MQA 21.8 vs 23.2; the one-warp programs were 2-42% slower with it (likely the
    extra shared-memory round trip on one warp's critical path; not profiled), though their loop is 28% shorter.
    Head dims over 128 were not measured and keep `.to()`.
    """
    return fp8_on_gpu and q_dtype.itemsize == 2 and num_warps > 1 and head_dim <= 128


def choose_launch(num_seqs: int, num_kv_heads: int, max_context: int, head_dim: int, elem_size: int,
                  num_sms: int, group: int = 1, q_elem_size: int = 2) -> tuple[int, DecodeConfig]:
    """The automatic (num_splits, DecodeConfig) of a GPU launch, the count cut to the splits that hold tokens
    (`nonempty_splits`); `elem_size` is the cache's element size, `group` the query heads a KV head,
    `q_elem_size` the query's element size (the choice: `_choose_splits_and_config`)."""
    num_splits, config = _choose_splits_and_config(num_seqs, num_kv_heads, max_context, head_dim, elem_size,
                                                   num_sms, group, q_elem_size)
    return nonempty_splits(max_context, num_splits, config.block_n), config


def _choose_splits_and_config(num_seqs: int, num_kv_heads: int, max_context: int, head_dim: int, elem_size: int,
                              num_sms: int, group: int, q_elem_size: int) -> tuple[int, DecodeConfig]:
    """The split count before the cut, and the launch configuration.

    Where `choose_num_splits` would split, 128-token tiles at half the programs won on every split row of
    the H200 sweep (1 x 1024: 11.8 vs 12.9 us; MQA 32 x 2048: 26.1 vs 32.3 us; 1 x 32768: 50.1 vs 50.7 us);
    with a 16-bit cache and query, 64-token tiles double-buffered (SPLIT_DEEP_CONFIG_16BIT) where a program
    walks SPLIT_DEEP_MIN_TILES of them.
    An fp8 cache with FP8_WARP_MIN_UNITS or more (sequence, KV head) pairs and at most 16 query heads a KV
    head (one 16-row dot) takes one-warp programs instead: the 4-warp fp8 tile is issue-bound at two programs
    an SM, where one-warp programs hold no cross-warp softmax reductions and fit about eight. fp32 queries
    keep 4 warps: widened to fp32, one warp's K/V tiles spill (4 KB a thread, sm_90a build). A 16-bit cache
    and query take one-warp programs (WARP_CONFIG_16BIT) from WARP_MIN_UNITS_16BIT pairs on.
    """
    pairs = num_seqs * num_kv_heads
    min_pairs = FP8_WARP_MIN_UNITS if elem_size == 1 else WARP_MIN_UNITS_16BIT
    if q_elem_size == 2 and head_dim <= 128 and group <= 16 and pairs >= min_pairs:
        config = FP8_WARP_CONFIG if elem_size == 1 else WARP_CONFIG_16BIT
        return choose_num_splits(num_seqs, num_kv_heads, max_context, num_sms, WARP_PROGRAMS_PER_SM,
                                 WARP_MIN_TOKENS_PER_SPLIT), config
    num_splits = choose_num_splits(num_seqs, num_kv_heads, max_context, num_sms)
    split_tiles = num_splits > 1 and head_dim <= 128
    if split_tiles:
        num_splits = choose_num_splits(num_seqs, num_kv_heads, max_context, max(1, num_sms // 2))
    if split_tiles and elem_size == 2 and q_elem_size == 2:
        deep = SPLIT_DEEP_CONFIG_16BIT
        if triton.cdiv(max_context, num_splits * deep.block_n) >= SPLIT_DEEP_MIN_TILES:
            return num_splits, deep
    block_n = default_decode_config(head_dim, True, elem_size, split_tiles).block_n
    tiles = triton.cdiv(max_context, num_splits * block_n)  # whole tiles a program walks (the longest sequence's)
    return num_splits, default_decode_config(head_dim, True, elem_size, split_tiles, tiles, q_elem_size)
