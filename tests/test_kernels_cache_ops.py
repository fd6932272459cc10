"""write_kv (slot scatter, -1 skipped) and copy_blocks (copy-on-write pairs) against their torch references."""
from __future__ import annotations

import pytest
import torch

from kernels import copy_blocks, copy_blocks_ref, write_kv, write_kv_ref
from kernels.testing import randn

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float16, torch.float32] + ([torch.bfloat16] if CUDA else [])


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,num_kv_heads,head_dim", [(8, 1, 64), (16, 2, 80), (32, 3, 96), (128, 2, 256)])
def test_write_kv_matches_reference(block_size, num_kv_heads, head_dim, dtype):
    gen = torch.Generator().manual_seed(1)
    num_blocks = 6
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)
    v_cache = torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:9]
    slots[3] = -1  # padding token: skipped
    slots = slots.to(DEVICE)
    # k and v as strided views of a fused qkv-like buffer, as a model produces them
    fused = randn((9, 3 * num_kv_heads, head_dim), dtype, DEVICE, gen)
    k, v = fused[:, num_kv_heads : 2 * num_kv_heads], fused[:, 2 * num_kv_heads :]
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    write_kv(k, v, k_cache, v_cache, slots)
    write_kv_ref(k, v, k_ref, v_ref, slots)
    assert same(k_cache, k_ref) and same(v_cache, v_ref)
    assert k_cache.isnan().sum() == (num_blocks * block_size - 8) * num_kv_heads * head_dim  # nothing else written


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_copy_blocks_matches_reference(dtype, as_tensor):
    gen = torch.Generator().manual_seed(2)
    k_cache = randn((10, 16, 2, 64), dtype, DEVICE, gen)
    v_cache = randn((10, 16, 2, 64), dtype, DEVICE, gen)
    pairs = [(1, 7), (4, 8), (1, 9)]  # one source copied twice (two forks sharing a block)
    arg = torch.tensor(pairs, dtype=torch.int32) if as_tensor else pairs
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    copy_blocks(k_cache, v_cache, arg)
    copy_blocks_ref(k_ref, v_ref, pairs)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)
    assert torch.equal(k_cache[9], k_cache[1]) and not torch.equal(k_cache[9], k_cache[2])


def test_copy_blocks_empty_is_a_no_op():
    gen = torch.Generator().manual_seed(3)
    k = randn((4, 8, 1, 64), torch.float32, DEVICE, gen)
    v = randn((4, 8, 1, 64), torch.float32, DEVICE, gen)
    k_before, v_before = k.clone(), v.clone()
    for empty in ([], (), torch.empty((0, 2), dtype=torch.int64), torch.empty((0, 2), dtype=torch.int32)):
        copy_blocks(k, v, empty)
        assert torch.equal(k, k_before) and torch.equal(v, v_before)  # bit for bit, both caches
    # Nothing to copy is still checked: a malformed empty tensor or a bad cache is refused.
    with pytest.raises(ValueError, match="n, 2"):
        copy_blocks(k, v, torch.empty((0, 3), dtype=torch.int64))
    # The right shape and alike strides, but not contiguous.
    strided_k, strided_v = torch.cat([k, k], dim=2)[:, :, :1], torch.cat([v, v], dim=2)[:, :, :1]
    with pytest.raises(ValueError, match="must be contiguous"):
        copy_blocks(strided_k, strided_v, [])


@pytest.mark.parametrize("pairs,match", [([(0, 4)], "outside"), ([(2, 2)], "onto itself"),
                                         ([(0, 1), (1, 2)], "distinct"), ([(0, 3), (1, 3)], "distinct"),
                                         (torch.zeros(3, dtype=torch.int64), "n, 2")])
def test_copy_blocks_rejects_bad_pairs(pairs, match):
    k = torch.zeros((4, 8, 1, 64), device=DEVICE)
    with pytest.raises(ValueError, match=match):
        copy_blocks(k, k.clone(), pairs)


def test_write_kv_rejects_bad_shapes():
    k_cache = torch.zeros((4, 8, 2, 64), device=DEVICE)
    k = torch.zeros((3, 1, 64), device=DEVICE)
    with pytest.raises(ValueError, match="k: expected shape"):
        write_kv(k, k, k_cache, k_cache.clone(), torch.zeros(3, dtype=torch.int64, device=DEVICE))
    k = torch.zeros((3, 2, 64), device=DEVICE)
    with pytest.raises(ValueError, match="slot_mapping"):
        write_kv(k, k, k_cache, k_cache.clone(), torch.zeros(3, dtype=torch.float32, device=DEVICE))
