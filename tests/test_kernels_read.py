"""`paged_read` reads what the decode reads (same split rule, gather, tail mask) and nothing more: its
per-program sums match a float64 gather over every supported block size and head dim, on a cache whose
unused slots are NaN (an over-read would poison the sum)."""
from __future__ import annotations

import pytest
import torch

from kernels import SUPPORTED_BLOCK_SIZES, SUPPORTED_HEAD_DIMS
from kernels._common import FP8_DTYPE, quantize_fp8
from kernels.decode_config import DecodeConfig
from kernels.paged_read import paged_read, paged_read_ref
from kernels.testing import random_paged_case

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = [(8, 64), (16, 80), (32, 96), (64, 128), (128, 256)]  # (block_size, head_dim): each once
assert {c[0] for c in CASES} == set(SUPPORTED_BLOCK_SIZES) and {c[1] for c in CASES} == set(SUPPORTED_HEAD_DIMS)


def read_case(block_size: int, head_dim: int, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    case = random_paged_case([1, 37, 100], 2, head_dim, block_size, torch.float32, DEVICE, gen)
    if dtype == FP8_DTYPE:  # N(0, 1) values at scale 1: e4m3 as stored (NaN stays NaN)
        to = lambda c: quantize_fp8(c.flatten(0, 1), None).view(c.shape)  # noqa: E731
    else:
        to = lambda c: c.to(dtype)  # noqa: E731
    return to(case.k_cache), to(case.v_cache), case.block_tables, case.seq_lens


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("block_n", [16, 32])
@pytest.mark.parametrize("dtype", [torch.float16, FP8_DTYPE], ids=["fp16", "fp8"])
@pytest.mark.parametrize("block_size,head_dim", CASES)
def test_paged_read_sums_exactly_the_tokens_each_program_owns(block_size, head_dim, dtype, block_n, num_splits):
    k, v, tables, lens = read_case(block_size, head_dim, dtype, seed=block_size + head_dim)
    out = paged_read(k, v, tables, lens, num_splits=num_splits, config=DecodeConfig(block_n, 1, 1))
    ref = paged_read_ref(k, v, tables, lens, num_splits=num_splits, block_n=block_n)
    assert out.shape == (3, 2, num_splits) and out.dtype == torch.float32
    assert not torch.isnan(out).any()
    # fp32 accumulation over at most 100 tokens x head_dim x 2 elements of O(1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-3)
    # the splits partition each sequence: their sums add up to the whole sequence's
    whole = paged_read_ref(k, v, tables, lens, num_splits=1, block_n=block_n)
    torch.testing.assert_close(ref.sum(-1), whole[..., 0])


def test_paged_read_rejects_what_it_cannot_read():
    k, v, tables, lens = read_case(16, 64, torch.float16, seed=0)
    with pytest.raises(ValueError, match="16-bit or fp8"):
        paged_read(k.float(), v.float(), tables, lens)
    with pytest.raises(ValueError, match="num_splits"):
        paged_read(k, v, tables, lens, num_splits=0)
    with pytest.raises(ValueError, match="seq_lens"):
        paged_read(k, v, tables, lens[:2])


def test_bench_read_bad_input_is_one_line(capsys):
    from kernels.bench_read import main

    assert main(["--rounds", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["kernels.bench_read: error: --rounds: must be >= 1, got 0"]
    if not torch.cuda.is_available():
        assert main([]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("kernels.bench_read: error: bench_read: needs a CUDA GPU")
