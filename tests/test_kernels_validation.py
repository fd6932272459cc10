"""Unsupported inputs fail with one clear ValueError; the bench CLI stays light and fails cleanly without a GPU."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from kernels import paged_decode, paged_decode_two_pass, paged_prefill

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def inputs(block_size=16, head_dim=64, q_heads=4, kv_heads=2, dtype=torch.float16, num_seqs=2):
    cache = torch.zeros((4, block_size, kv_heads, head_dim), dtype=dtype, device=DEVICE)
    q = torch.zeros((num_seqs, q_heads, head_dim), dtype=dtype, device=DEVICE)
    tables = torch.zeros((num_seqs, 2), dtype=torch.int32, device=DEVICE)
    lens = torch.ones(num_seqs, dtype=torch.int32, device=DEVICE)
    return q, cache, cache.clone(), tables, lens


@pytest.mark.parametrize("fn", [paged_decode, paged_decode_two_pass])
@pytest.mark.parametrize("kwargs,match", [
    (dict(block_size=12), "block_size: 12 not supported"),
    (dict(head_dim=48), "head_dim: 48 not supported"),
    (dict(dtype=torch.float64), "dtype"),
    (dict(q_heads=6, kv_heads=4), "multiple of num_kv_heads"),
])
def test_unsupported_shapes(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*inputs(**kwargs))


def test_mismatched_arguments():
    q, k, v, tables, lens = inputs()
    with pytest.raises(ValueError, match="q: dtype"):
        paged_decode(q.float(), k, v, tables, lens)
    with pytest.raises(ValueError, match="block_tables: dtype must be int32"):
        paged_decode(q, k, v, tables.long(), lens)
    with pytest.raises(ValueError, match="seq_lens: expected 2 rows"):
        paged_decode(q, k, v, tables, lens[:1])
    with pytest.raises(ValueError, match="v_cache: shape"):
        paged_decode(q, k, v[:, :8], tables, lens)
    with pytest.raises(ValueError, match="num_splits"):
        paged_decode(q, k, v, tables, lens, num_splits=0)
    with pytest.raises(ValueError, match="scale"):
        paged_decode(q, k, v, tables, lens, scale=-1.0)
    with pytest.raises(ValueError, match="out: expected"):
        paged_decode(q, k, v, tables, lens, out=torch.empty_like(q)[:1])
    with pytest.raises(ValueError, match="k_cache: expected"):
        paged_decode(q, k[0], v[0], tables, lens)
    with pytest.raises(ValueError, match="query_start_loc: expected 3 rows"):
        paged_prefill(q, k, v, tables, lens, torch.zeros(2, dtype=torch.int32, device=DEVICE))


def test_importing_the_cli_module_loads_neither_torch_nor_triton():
    code = "import sys, kernels.bench_cli, kernels; print('torch' in sys.modules, 'triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bench_without_gpu_is_a_one_line_error(capsys: pytest.CaptureFixture[str]):
    from sim import cli

    assert cli.main(["bench", "kernels", "--out", "unused"]) == 2
    assert capsys.readouterr().err.startswith("pagedlab: error: bench kernels: needs a CUDA GPU")
