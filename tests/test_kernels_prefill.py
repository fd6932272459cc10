"""Chunked-prefill paged attention against a float64 causal reference over each contiguous sequence."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import SUPPORTED_BLOCK_SIZES, SUPPORTED_HEAD_DIMS, paged_prefill, paged_prefill_ref
from kernels.testing import TOLERANCE, max_rel_err, poisoned_like, randn, random_paged_case

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float16, torch.float32] + ([torch.bfloat16] if CUDA else [])

# (block_size, head_dim, num_q_heads, num_kv_heads): every block size and head dim, MHA/GQA/MQA.
CASES = [(8, 64, 2, 2), (16, 80, 4, 2), (32, 96, 4, 1), (64, 128, 4, 2), (128, 256, 2, 1)]


def run_prefill(block_size, head_dim, num_q_heads, num_kv_heads, dtype, seq_lens, query_lens, seed=0,
                pass_max_len=True) -> float:
    gen = torch.Generator().manual_seed(seed)
    case = random_paged_case(seq_lens, num_kv_heads, head_dim, block_size, dtype, DEVICE, gen)
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    qsl = torch.tensor(starts, dtype=torch.int32, device=DEVICE)
    q = randn((starts[-1], num_q_heads, head_dim), dtype, DEVICE, gen)
    out = poisoned_like(q)
    paged_prefill(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, qsl, out=out,
                  max_query_len=max(query_lens) if pass_max_len else None)
    ref = paged_prefill_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, qsl)
    return max_rel_err(out, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,head_dim,num_q_heads,num_kv_heads", CASES)
def test_prefill_matches_reference(block_size, head_dim, num_q_heads, num_kv_heads, dtype):
    # A whole prompt (no cached prefix), a chunk after a prefix of exactly one block, a 1-token chunk, and a
    # chunk longer than one query tile that ends mid-block.
    seq_lens = [block_size, block_size + 9, 5, 45]
    query_lens = [block_size, 9, 1, 40]
    err = run_prefill(block_size, head_dim, num_q_heads, num_kv_heads, dtype, seq_lens, query_lens)
    assert err < TOLERANCE[dtype]


def test_empty_chunk_and_host_max_len():
    # A sequence with no new tokens in this step contributes nothing; max_query_len derived on the host.
    err = run_prefill(16, 64, 4, 2, torch.float32, [20, 9, 33], [0, 9, 17], pass_max_len=False)
    assert err < TOLERANCE[torch.float32]


@settings(max_examples=max(8, settings().max_examples // 8))
@given(
    data=st.data(),
    block_size=st.sampled_from(SUPPORTED_BLOCK_SIZES),
    head_dim=st.sampled_from(SUPPORTED_HEAD_DIMS),
    num_kv_heads=st.integers(1, 2),
    group=st.sampled_from([1, 2, 4]),
    dtype=st.sampled_from(DTYPES),
)
def test_prefill_random_shapes(data, block_size, head_dim, num_kv_heads, group, dtype):
    seq_lens = data.draw(st.lists(st.integers(1, 60), min_size=1, max_size=3))
    query_lens = [data.draw(st.integers(1, n)) for n in seq_lens]
    err = run_prefill(block_size, head_dim, num_kv_heads * group, num_kv_heads, dtype, seq_lens, query_lens,
                      seed=data.draw(st.integers(0, 2**16)))
    assert err < TOLERANCE[dtype]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,head_dim", list(itertools.product(SUPPORTED_BLOCK_SIZES, SUPPORTED_HEAD_DIMS)))
@pytest.mark.parametrize("num_q_heads,num_kv_heads", [(4, 4), (8, 2), (8, 1)])
def test_prefill_full_grid(block_size, head_dim, num_q_heads, num_kv_heads, dtype):
    seq_lens = [block_size, 2 * block_size + 7, 70] + ([4096, 700] if CUDA else [])
    query_lens = [block_size, block_size + 7, 1] + ([512, 300] if CUDA else [])
    err = run_prefill(block_size, head_dim, num_q_heads, num_kv_heads, dtype, seq_lens, query_lens)
    assert err < TOLERANCE[dtype]
