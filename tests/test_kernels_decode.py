"""One-pass and two-pass paged decode against a float64 reference over each contiguous sequence.

Runs under TRITON_INTERPRET=1 on the CPU (fp16/fp32) and natively on a GPU (bf16 added). The case list
covers every supported block size and head dim, MHA/GQA/MQA, split and unsplit, with lengths 1 and exact
multiples of the block size; the full cartesian grid is marked slow.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import (
    SUPPORTED_BLOCK_SIZES, SUPPORTED_HEAD_DIMS, choose_num_splits, paged_decode, paged_decode_ref,
    paged_decode_two_pass,
)
from kernels.testing import TOLERANCE, max_rel_err, poisoned_like, randn, random_paged_case

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float16, torch.float32] + ([torch.bfloat16] if CUDA else [])

# (block_size, head_dim, num_q_heads, num_kv_heads, num_splits): each block size, head dim, MHA/GQA/MQA and
# split/unsplit appears at least once; None = the heuristic.
CASES = [
    (8, 64, 4, 4, 1),
    (16, 80, 4, 2, None),
    (32, 96, 4, 1, 3),
    (64, 128, 8, 2, 2),
    (128, 256, 2, 1, 1),
    (16, 64, 8, 1, 4),
    (8, 128, 2, 2, 5),
]


def lengths_for(block_size: int) -> list[int]:
    # 1, exact multiples of the block size, and ragged lengths
    return [1, block_size, 2 * block_size, 3 * block_size - 5, 7]


def run_decode(fn, block_size, head_dim, num_q_heads, num_kv_heads, num_splits, dtype, lens, seed=0) -> float:
    gen = torch.Generator().manual_seed(seed)
    case = random_paged_case(lens, num_kv_heads, head_dim, block_size, dtype, DEVICE, gen)
    q = randn((len(lens), num_q_heads, head_dim), dtype, DEVICE, gen)
    out = poisoned_like(q)
    result = fn(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, num_splits=num_splits, out=out)
    assert result is out
    ref = paged_decode_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
    return max_rel_err(out, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,head_dim,num_q_heads,num_kv_heads,num_splits", CASES)
def test_one_pass_matches_reference(block_size, head_dim, num_q_heads, num_kv_heads, num_splits, dtype):
    err = run_decode(paged_decode, block_size, head_dim, num_q_heads, num_kv_heads, num_splits, dtype,
                     lengths_for(block_size))
    assert err < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,head_dim,num_q_heads,num_kv_heads", [c[:4] for c in CASES[:5]])
def test_two_pass_matches_reference(block_size, head_dim, num_q_heads, num_kv_heads, dtype):
    err = run_decode(paged_decode_two_pass, block_size, head_dim, num_q_heads, num_kv_heads, None, dtype,
                     lengths_for(block_size))
    assert err < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("num_splits", [1, 2])
def test_whole_tiles_and_a_masked_tail(num_splits, dtype):
    # 16-token tiles over 8-token blocks: lengths that end on a tile edge (whole tiles only, no tail), one
    # token past it, a token short of it, and shorter than one tile (the tail alone).
    from kernels import DecodeConfig

    gen = torch.Generator().manual_seed(5)
    lens = [16, 48, 17, 47, 5]
    case = random_paged_case(lens, 2, 64, 8, dtype, DEVICE, gen)
    q = randn((len(lens), 4, 64), dtype, DEVICE, gen)
    out = paged_decode(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, num_splits=num_splits,
                       config=DecodeConfig(16, 4 if CUDA else 1, 1), out=poisoned_like(q))
    ref = paged_decode_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
    assert max_rel_err(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_splits", [1, 3])
def test_scores_that_climb_and_jump_along_the_context(num_splits, dtype):
    # The running max moves by less than the kernel's rescale slack over some tiles and by far more over
    # others: scores climb 1.5 every 16 tokens, jump by 12 at token 150 (sequence 0); sequence 1 has the
    # same scores reversed, so its max comes first and later tiles only add small terms.
    gen = torch.Generator().manual_seed(11)
    head_dim, length = 64, 200
    case = random_paged_case([length, length], 1, head_dim, 16, dtype, DEVICE, gen)
    direction = torch.randn(head_dim, generator=gen, dtype=torch.float32)
    direction = direction / direction.norm()
    q = (direction * head_dim ** 0.5).expand(2, 2, head_dim).contiguous()  # score = direction . k
    climb = torch.tensor([1.5 * (t // 16) + (12.0 if t >= 150 else 0.0) for t in range(length)])
    for seq, lift in enumerate((climb, climb.flip(0))):
        for t in range(length):
            block = int(case.block_tables[seq, t // 16])
            k = 0.3 * torch.randn(head_dim, generator=gen) + lift[t] * direction
            case.k_cache[block, t % 16, 0] = k.to(dtype=dtype, device=DEVICE)
    q = q.to(dtype=dtype, device=DEVICE)
    out = paged_decode(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, num_splits=num_splits,
                       out=poisoned_like(q))
    ref = paged_decode_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
    assert max_rel_err(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_query_groups_merge_split_partials_kept_in_the_output_dtype(dtype):
    # 16-bit outputs of groups this large store their split partials in the output dtype (fp32 ones keep fp32):
    # the merge must read them back as written, and the LSEs behind them must not overlap them.
    from kernels.decode_launch import PARTIALS_16BIT_MIN_GROUP, partials_in_16_bits

    assert partials_in_16_bits(3, PARTIALS_16BIT_MIN_GROUP, dtype) == (dtype != torch.float32)
    err = run_decode(paged_decode, 16, 64, 2 * PARTIALS_16BIT_MIN_GROUP, 2, 3, dtype, [1, 16, 75, 40, 33])
    assert err < TOLERANCE[dtype]


def test_split_partials_take_16_bits_only_for_large_groups_of_16_bit_queries():
    from kernels.decode_config import DecodeConfig
    from kernels.decode_launch import plan

    cuda, cfg = torch.device("cuda"), DecodeConfig(128, 4, 2)
    mqa = plan(32, 32, 1, 128, 16, 2048, torch.bfloat16, False, 2, cuda, 8, cfg)
    assert mqa.meta["PARTIALS_16BIT"] and mqa.lse_offset == 32 * 32 * 8 * 128 // 2
    assert mqa.workspace == mqa.lse_offset + 32 * 32 * 8  # one fp32 LSE a (sequence, head, split)
    gqa = plan(1, 32, 8, 128, 16, 32768, torch.bfloat16, False, 2, cuda, 33, cfg)
    assert not gqa.meta["PARTIALS_16BIT"] and gqa.lse_offset == 32 * 33 * 128  # group 4: fp32 partials
    assert plan(1, 32, 4, 128, 16, 32768, torch.bfloat16, False, 2, cuda, 33, cfg).meta["PARTIALS_16BIT"]  # group 8
    assert not plan(32, 32, 1, 128, 16, 2048, torch.float32, False, 4, cuda, 8, cfg).meta["PARTIALS_16BIT"]
    assert not plan(32, 32, 1, 128, 16, 2048, torch.bfloat16, False, 2, cuda, 1, cfg).meta["PARTIALS_16BIT"]


def test_query_tile_is_padded_to_a_power_of_two_only():
    # Triton pads a dot below the MMA's 16 rows itself; padding the tile too costs registers (docs/kernels.md,
    # "What was tried" 33), on the GPU as in the interpreter.
    from kernels.decode_config import DecodeConfig
    from kernels.decode_launch import plan

    for device in (torch.device("cuda"), torch.device("cpu")):
        pads = [plan(8, 32, kv, 128, 16, 4096, torch.bfloat16, False, 2, device, 2, DecodeConfig(64, 4, 3)).meta[
            "GROUP_PAD"] for kv in (32, 8, 4, 1)]
        assert pads == [1, 4, 8, 32]
    assert plan(2, 12, 4, 64, 16, 512, torch.float16, False, 2, torch.device("cuda"), 1, None).meta["GROUP_PAD"] == 4


def test_more_splits_than_tiles_leaves_empty_splits_harmless():
    # 12 splits over contexts of 1..40 tokens: most splits are empty and must not disturb the merge.
    err = run_decode(paged_decode, 16, 64, 2, 1, 12, torch.float32, [1, 40])
    assert err < TOLERANCE[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_many_splits_merge_up_a_tree_and_leave_the_counters_at_zero(dtype):
    # 37 splits of 8 query heads a KV head merge up a tree (on the GPU fan-in 8: 37 -> 5 -> 1; in the
    # interpreter fan-in 2: six levels); the 1-token sequence leaves whole subtrees of empty splits. Every counter must
    # be back at zero after the call, and a second call (reusing them) must be right too.
    from kernels.decode_launch import MERGE_TREE_MIN_CHUNKS, TREE_FAN_IN, plan, split_counters

    key = (3, 16, 2, 128, 16, 4 * 16, dtype, False, dtype.itemsize, torch.device(DEVICE), 37, None)
    launch = plan(*key)
    assert launch.meta["MERGE_TREE"] and launch.counters == 3 * 2 * 2 * 37
    assert launch.meta["MERGE_S"] == (TREE_FAN_IN if CUDA else 2)
    assert not plan(*key[:-2], 2, None).meta["MERGE_TREE"]  # one or two chunks: the flat merge
    assert MERGE_TREE_MIN_CHUNKS > 2
    for seed in (0, 1):
        err = run_decode(paged_decode, 16, 128, 16, 2, 37, dtype, [1, 40, 64], seed=seed)
        assert err < TOLERANCE[dtype]
        assert not split_counters(torch.device(DEVICE), 1).any()


def test_custom_scale():
    gen = torch.Generator().manual_seed(3)
    case = random_paged_case([9, 30], 2, 64, 16, torch.float32, DEVICE, gen)
    q = randn((2, 4, 64), torch.float32, DEVICE, gen)
    out = paged_decode(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, scale=0.3, num_splits=2)
    ref = paged_decode_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, scale=0.3)
    assert max_rel_err(out, ref) < 1e-4


def test_split_heuristic():
    # Many sequences fill the GPU alone; one long sequence is split; short contexts are not split; the
    # count rounds down rather than start a partial extra wave.
    assert choose_num_splits(256, 8, 2048, 132) == 1
    assert choose_num_splits(1, 8, 32768, 132) > 16
    assert choose_num_splits(1, 8, 128, 132) == 1
    assert choose_num_splits(1, 1, 10**6, 132) == 64
    assert choose_num_splits(16, 8, 16384, 132) == 4


def test_gpu_merge_loads_at_least_four_splits_at_once():
    # Planning reads no device, so a CUDA plan can be checked here. MQA's 32 heads x 128 dims would fit only
    # 2 splits in the merge tile; each chunk is a dependent round trip, so it takes 4 (H200: 25.6 -> 25.0 us).
    from kernels.decode_config import DecodeConfig
    from kernels.decode_launch import plan

    cuda = torch.device("cuda")
    mqa = plan(32, 32, 1, 128, 16, 2048, torch.bfloat16, False, 2, cuda, 8, DecodeConfig(128, 4, 2)).meta
    assert mqa["MERGE_G"] == 32 and mqa["MERGE_S"] == 4
    gqa = plan(1, 32, 8, 128, 16, 32768, torch.bfloat16, False, 2, cuda, 33, DecodeConfig(128, 4, 2)).meta
    assert gqa["MERGE_S"] == 16  # 4 heads x 128 dims: the 8192-float tile holds 16 splits
    two = plan(1, 32, 8, 128, 16, 1024, torch.bfloat16, False, 2, cuda, 2, DecodeConfig(128, 4, 2)).meta
    assert two["MERGE_S"] == 2  # never more than the splits there are
    # one warp holds a quarter of four warps' registers: the chunk shrinks with it (4 splits, not 16)
    from kernels.decode_config import FP8_WARP_CONFIG

    one_warp = plan(8, 32, 8, 128, 16, 4096, torch.bfloat16, True, 1, cuda, 8, FP8_WARP_CONFIG).meta
    assert (one_warp["num_warps"], one_warp["MERGE_S"]) == (1, 4)


@settings(max_examples=max(10, settings().max_examples // 5))
@given(
    lens=st.lists(st.integers(1, 70), min_size=1, max_size=4),
    block_size=st.sampled_from(SUPPORTED_BLOCK_SIZES),
    head_dim=st.sampled_from(SUPPORTED_HEAD_DIMS),
    num_kv_heads=st.integers(1, 2),
    group=st.sampled_from([1, 2, 4]),
    num_splits=st.one_of(st.none(), st.integers(1, 5)),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_decode_random_shapes(lens, block_size, head_dim, num_kv_heads, group, num_splits, dtype, seed):
    err = run_decode(paged_decode, block_size, head_dim, num_kv_heads * group, num_kv_heads, num_splits, dtype,
                     lens, seed=seed)
    assert err < TOLERANCE[dtype]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,head_dim", list(itertools.product(SUPPORTED_BLOCK_SIZES, SUPPORTED_HEAD_DIMS)))
@pytest.mark.parametrize("num_q_heads,num_kv_heads", [(4, 4), (8, 2), (8, 1)])
@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_one_pass_full_grid(block_size, head_dim, num_q_heads, num_kv_heads, num_splits, dtype):
    lens = lengths_for(block_size) + ([4096, 1000] if CUDA else [])
    err = run_decode(paged_decode, block_size, head_dim, num_q_heads, num_kv_heads, num_splits, dtype, lens)
    assert err < TOLERANCE[dtype]


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_q_heads,num_kv_heads", [(32, 8), (32, 32), (32, 1)])
def test_one_pass_long_contexts_on_gpu(num_q_heads, num_kv_heads, dtype):
    # The benchmark's shapes at small batch: long contexts exercise the automatic split-K path.
    err = run_decode(paged_decode, 16, 128, num_q_heads, num_kv_heads, None, dtype, [32768, 1, 4097, 2048])
    assert err < TOLERANCE[dtype]


@pytest.mark.parametrize("on_gpu", [True, False])
def test_automatic_split_counts_leave_no_split_of_the_longest_context_empty(monkeypatch, on_gpu):
    # splits get whole tiles, so a count chosen for occupancy can leave trailing splits with no tokens at all
    from kernels import decode_launch as L

    monkeypatch.setattr(L, "_num_sms", lambda index: 132)  # an H200's count, without a GPU
    L.plan.cache_clear()
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    try:
        for num_seqs, kv_heads, blocks in [(1, 8, 2048), (1, 8, 188), (8, 1, 250), (4, 2, 188), (16, 1, 188), (2, 8, 64),
                                           (1, 1, 7), (3, 4, 1000), (1, 1, 49), (1, 1, 65)]:
            context = 16 * blocks
            launch = L.plan(num_seqs, 32, kv_heads, 128, 16, context, torch.bfloat16, False, 2, device, None, None)
            splits, block_n = launch.num_splits, launch.meta["BLOCK_N"]
            tokens_per_split = math.ceil(math.ceil(context / splits) / block_n) * block_n  # as the kernel cuts them
            assert splits * tokens_per_split >= context > (splits - 1) * tokens_per_split, (num_seqs, kv_heads, context)
        if on_gpu:  # 1 x 32768 with 8 KV heads: 33 splits of 1024 tokens would leave the 33rd empty
            assert L.plan(1, 32, 8, 128, 16, 32768, torch.bfloat16, False, 2, device, None, None).num_splits == 32
        # an explicit count is the caller's, empty splits included
        assert L.plan(1, 32, 8, 128, 16, 32768, torch.bfloat16, False, 2, device, 33, None).num_splits == 33
    finally:
        L.plan.cache_clear()


def test_split_counters_grow_without_freeing_arrays_a_captured_graph_may_use():
    from kernels import decode_launch as L

    device = torch.device("cpu")
    small = L.split_counters(device, 1)
    assert L.split_counters(device, small.numel()) is small  # shared while it is large enough
    large = L.split_counters(device, small.numel() + 1)
    assert large.numel() > small.numel() and not large.any()
    assert any(t is small for t in L._OUTGROWN_COUNTERS)  # still alive for graphs that captured it
    assert L.split_counters(device, 1) is large
    kept = len(L._OUTGROWN_COUNTERS)
    for step in range(1, 9):  # a batch growing by small steps: the array doubles, so few arrays are left behind
        L.split_counters(device, large.numel() + 1000 * step)
    assert len(L._OUTGROWN_COUNTERS) == kept + 1
