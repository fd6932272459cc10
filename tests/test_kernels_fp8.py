"""fp8 (e4m3) KV cache: write_kv quantizes with per-tensor or per-KV-head scales, decode and prefill
dequantize in the kernel; both are compared with the float64 reference over the dequantized cache.

Triton's interpreter loads float8_e4m3fn and widens it exactly, so decode and prefill on an fp8 cache
run on the CPU in CI (q in fp16/fp32; bf16 added on a GPU). Its float32 -> e4m3 conversion, though, loses
the carry into the exponent (124.3 becomes 64, not 128; Triton 3.9 interpreter), so `write_kv`'s
quantizing store is checked bit for bit on a GPU only; on the CPU the same quantization math is checked in
torch. Every supported block size and head dim appears.
"""
from __future__ import annotations

import pytest
import torch

from kernels import (
    SUPPORTED_BLOCK_SIZES, SUPPORTED_HEAD_DIMS, AttentionMetadata, KVCache, PagedAttention, paged_decode,
    paged_decode_ref, paged_decode_two_pass, paged_prefill, paged_prefill_ref, write_kv, write_kv_ref,
)
from kernels._common import FP8_DTYPE, FP8_MAX, dequantize_cache, fp8_scales, quantize_fp8
from kernels.decode_config import FP8_WARP_CONFIG, choose_launch
from kernels.testing import TOLERANCE, max_rel_err, poisoned_like, randn, random_paged_case

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float16, torch.float32] + ([torch.bfloat16] if CUDA else [])

# (block_size, head_dim, num_q_heads, num_kv_heads, num_splits): every block size and head dim once.
CASES = [(8, 64, 4, 4, 1), (16, 80, 4, 2, None), (32, 96, 4, 1, 3), (64, 128, 8, 2, 2), (128, 256, 2, 1, 1)]
assert {c[0] for c in CASES} == set(SUPPORTED_BLOCK_SIZES) and {c[1] for c in CASES} == set(SUPPORTED_HEAD_DIMS)


def scales(num_kv_heads: int, per_head: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = num_kv_heads if per_head else 1
    # N(0, 1) values over scales of 0.005..0.015 land in e4m3's upper range and now and then clamp at 448
    k = 0.005 + 0.01 * torch.rand(n, generator=gen)
    v = 0.005 + 0.01 * torch.rand(n, generator=gen)
    return k.to(DEVICE), v.to(DEVICE)


def fp8_case(lens, num_kv_heads, head_dim, block_size, per_head, gen):
    """A NaN-poisoned paged case whose cache holds e4m3 values (NaN stays NaN in e4m3)."""
    case = random_paged_case(lens, num_kv_heads, head_dim, block_size, torch.float32, DEVICE, gen)
    k_scale, v_scale = scales(num_kv_heads, per_head, gen)
    flat = lambda c, s: quantize_fp8(c.flatten(0, 1), s).view(c.shape)  # noqa: E731
    case.k_cache, case.v_cache = flat(case.k_cache, k_scale), flat(case.v_cache, v_scale)
    return case, k_scale, v_scale


def assert_round_trip(x: torch.Tensor, back: torch.Tensor, scale: torch.Tensor) -> None:
    """Each stored value is x to within half an e4m3 step (3 mantissa bits; subnormal spacing 2^-9)."""
    x = x.float()
    step = scale.reshape(1, -1, 1) * 2.0 ** -10
    assert ((back - x).abs() <= x.abs() * 2.0 ** -4 + step).all()
    assert back.abs().max() <= FP8_MAX * scale.max() * (1 + 1e-6)


@pytest.mark.parametrize("per_head", [False, True], ids=["per_tensor", "per_head"])
@pytest.mark.parametrize("head_dim", SUPPORTED_HEAD_DIMS)
def test_fp8_quantization_math_round_trip(head_dim, per_head):
    gen = torch.Generator().manual_seed(head_dim)
    x = torch.randn((33, 3, head_dim), generator=gen) * torch.tensor([0.1, 3.0, 50.0]).reshape(1, 3, 1)
    scale = fp8_scales(x, per_head)
    q = quantize_fp8(x, scale)
    assert q.dtype == FP8_DTYPE
    back = dequantize_cache(q.unsqueeze(0), scale)[0]
    assert_round_trip(x, back, scale)
    # the largest magnitude maps to 448 exactly (in every head with per-head scales)
    amax = q.float().abs().amax(dim=(0, 2))
    assert (amax == FP8_MAX).all() if per_head else amax.max() == FP8_MAX


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="the interpreter's float32 -> e4m3 store drops the exponent carry")
@pytest.mark.parametrize("per_head", [False, True], ids=["per_tensor", "per_head"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,head_dim,num_kv_heads", [(c[0], c[1], c[3]) for c in CASES] + [(16, 64, 3)])
def test_write_kv_fp8_round_trip(block_size, head_dim, num_kv_heads, dtype, per_head):
    gen = torch.Generator().manual_seed(block_size + head_dim)
    num_blocks, num_tokens = 4, 11
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), device=DEVICE).to(FP8_DTYPE)
    v_cache = k_cache.clone()
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[4] = -1
    slots = slots.to(DEVICE)
    fused = randn((num_tokens, 3 * num_kv_heads, head_dim), dtype, DEVICE, gen) * 3
    k, v = fused[:, num_kv_heads : 2 * num_kv_heads], fused[:, 2 * num_kv_heads :]
    k_scale, v_scale = fp8_scales(k, per_head), fp8_scales(v, per_head)
    assert k_scale.shape == ((num_kv_heads,) if per_head else (1,))
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    write_kv(k, v, k_cache, v_cache, slots, k_scale=k_scale, v_scale=v_scale)
    write_kv_ref(k, v, k_ref, v_ref, slots, k_scale=k_scale, v_scale=v_scale)
    # bit-exact against the torch quantization (x / scale, clamp, round to nearest even)
    for got, want in ((k_cache, k_ref), (v_cache, v_ref)):
        assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
        assert got.float().isnan().sum() == (num_blocks * block_size - num_tokens + 1) * num_kv_heads * head_dim
    keep = (slots >= 0).nonzero().flatten()
    s = slots[keep].long()
    for x, cache, scale in ((k, k_cache, k_scale), (v, v_cache, v_scale)):
        assert_round_trip(x[keep], dequantize_cache(cache, scale)[s // block_size, s % block_size], scale)


def test_quantize_clamps_to_the_e4m3_range():
    x = torch.tensor([[[1000.0, -1000.0, 447.0, 0.0]]])
    q = quantize_fp8(x, torch.ones(1)).float()
    assert q.tolist() == [[[448.0, -448.0, 448.0, 0.0]]]


@pytest.mark.parametrize("per_head", [False, True], ids=["per_tensor", "per_head"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,head_dim,num_q_heads,num_kv_heads,num_splits", CASES)
def test_decode_on_fp8_cache_matches_dequantized_reference(block_size, head_dim, num_q_heads, num_kv_heads,
                                                          num_splits, dtype, per_head):
    gen = torch.Generator().manual_seed(head_dim)
    lens = [1, block_size, 2 * block_size + 3, 7]
    case, k_scale, v_scale = fp8_case(lens, num_kv_heads, head_dim, block_size, per_head, gen)
    q = randn((len(lens), num_q_heads, head_dim), dtype, DEVICE, gen)
    out = poisoned_like(q)
    paged_decode(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, num_splits=num_splits,
                 k_scale=k_scale, v_scale=v_scale, out=out)
    ref = paged_decode_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens,
                           k_scale=k_scale, v_scale=v_scale)
    assert max_rel_err(out, ref) < TOLERANCE[dtype]
    # the scales matter: ignoring them gives a different answer
    wrong = paged_decode_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
    assert max_rel_err(out, wrong) > 10 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES if CUDA else [torch.float16], ids=str)  # one dtype: interpreter time
def test_decode_on_fp8_cache_with_one_warp_programs(dtype):
    """64 (sequence, KV head) pairs: on a GPU the automatic launch for a 16-bit q is the one-warp one
    (FP8_WARP_CONFIG, split a few ways), which the CPU interpreter runs when it is passed explicitly."""
    gen = torch.Generator().manual_seed(64)
    lens = [1100] + [9 + 5 * i for i in range(15)]  # the long one gets the GPU launch split
    case, k_scale, v_scale = fp8_case(lens, 4, 64, 16, True, gen)
    q = randn((len(lens), 16, 64), dtype, DEVICE, gen)
    if CUDA:
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        splits, config = choose_launch(len(lens), 4, case.block_tables.shape[1] * 16, 64, 1, sms, 4,
                                       q.element_size())
        assert (config == FP8_WARP_CONFIG and splits > 1) == (dtype != torch.float32)  # fp32 q: 4 warps
        launch = {}
    else:
        launch = dict(config=FP8_WARP_CONFIG, num_splits=3)
    out = poisoned_like(q)
    paged_decode(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, k_scale=k_scale, v_scale=v_scale,
                 out=out, **launch)
    ref = paged_decode_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens,
                           k_scale=k_scale, v_scale=v_scale)
    assert max_rel_err(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16] if CUDA else [torch.float16], ids=str)
@pytest.mark.parametrize("block_size,head_dim,num_q_heads,num_kv_heads,num_splits",
                         [c for c in CASES if c[1] <= 128])
def test_one_warp_fp8_decode_matches_dequantized_reference(block_size, head_dim, num_q_heads, num_kv_heads,
                                                           num_splits, dtype):
    """The one-warp launch (automatic on a GPU only from 64 pairs on) on every block size and head dim it takes."""
    gen = torch.Generator().manual_seed(block_size + head_dim)
    lens = [1, block_size, 2 * block_size + 3, 70]
    case, k_scale, v_scale = fp8_case(lens, num_kv_heads, head_dim, block_size, True, gen)
    q = randn((len(lens), num_q_heads, head_dim), dtype, DEVICE, gen)
    out = poisoned_like(q)
    paged_decode(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, num_splits=num_splits,
                 k_scale=k_scale, v_scale=v_scale, config=FP8_WARP_CONFIG, out=out)
    ref = paged_decode_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens,
                           k_scale=k_scale, v_scale=v_scale)
    assert max_rel_err(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("per_head", [False, True], ids=["per_tensor", "per_head"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size,head_dim,num_q_heads,num_kv_heads", [c[:4] for c in CASES])
def test_prefill_on_fp8_cache_matches_dequantized_reference(block_size, head_dim, num_q_heads, num_kv_heads,
                                                           dtype, per_head):
    gen = torch.Generator().manual_seed(block_size)
    seq_lens, query_lens = [block_size + 9, 5, 45], [9, 1, 40]
    case, k_scale, v_scale = fp8_case(seq_lens, num_kv_heads, head_dim, block_size, per_head, gen)
    starts = [0, 9, 10, 50]
    qsl = torch.tensor(starts, dtype=torch.int32, device=DEVICE)
    q = randn((starts[-1], num_q_heads, head_dim), dtype, DEVICE, gen)
    out = poisoned_like(q)
    paged_prefill(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, qsl, max_query_len=40,
                  k_scale=k_scale, v_scale=v_scale, out=out)
    ref = paged_prefill_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, qsl,
                            k_scale=k_scale, v_scale=v_scale)
    assert max_rel_err(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("per_head", [False, True], ids=["per_tensor", "per_head"])
def test_layer_on_fp8_cache(per_head):
    # Two steps through PagedAttention (a prompt, then a chunk next to a decode) against the references
    # over the dequantized cache the layer wrote.
    block, heads, kv_heads, dim = 16, 4, 2, 64
    gen = torch.Generator().manual_seed(3)
    cache = KVCache(1, 8, block, kv_heads, dim, dtype="fp8", device=DEVICE, per_head_scales=per_head)
    assert cache.dtype == FP8_DTYPE and cache.k_scale[0].shape == ((kv_heads,) if per_head else (1,))
    cache.k_scale[0].copy_(torch.tensor([0.02, 0.03][: cache.k_scale[0].numel()]))
    cache.v_scale[0].copy_(torch.tensor([0.015, 0.01][: cache.v_scale[0].numel()]))
    layer = PagedAttention(heads, kv_heads, dim)
    cache.bind([layer])
    tables = [[5, 2], [7, 1]]
    for query_lens, seq_lens, num_prefills in (([20, 3], [20, 3], 2), ([4, 1], [24, 4], 1)):
        meta = AttentionMetadata.build(query_lens, seq_lens, tables, block, DEVICE, num_prefills=num_prefills)
        n = meta.num_tokens
        q, k, v = (randn((n, h, dim), torch.float16, DEVICE, gen) for h in (heads, kv_heads, kv_heads))
        out = layer(q, k, v, meta)
        p, s = meta.num_prefill_tokens, meta.num_prefills
        scales = dict(k_scale=cache.k_scale[0], v_scale=cache.v_scale[0])
        ref = torch.empty(out.shape, dtype=torch.float64, device=DEVICE)
        ref[:p] = paged_prefill_ref(q[:p], cache.k[0], cache.v[0], meta.block_tables[:s], meta.seq_lens[:s],
                                    meta.query_start_loc, **scales)
        if meta.num_decodes:
            ref[p:] = paged_decode_ref(q[p:], cache.k[0], cache.v[0], meta.block_tables[s:], meta.seq_lens[s:],
                                       **scales)
        assert max_rel_err(out, ref) < TOLERANCE[torch.float16]
    assert KVCache.bytes_per_block(2, 16, 2, 64, "fp8") * 2 == KVCache.bytes_per_block(2, 16, 2, 64, torch.float16)


def test_fp8_bad_input_is_one_line_value_error():
    gen = torch.Generator().manual_seed(0)
    case, k_scale, v_scale = fp8_case([5, 9], 2, 64, 16, True, gen)
    q = randn((2, 4, 64), torch.float16, DEVICE, gen)
    args = (q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
    bad = [
        (dict(k_scale=torch.ones(3, device=DEVICE), v_scale=v_scale), "k_scale: expected 1 .* or 2 .* elements"),
        (dict(k_scale=torch.ones(2, 1, device=DEVICE), v_scale=v_scale), "k_scale: expected"),
        (dict(k_scale=k_scale.double(), v_scale=v_scale), "k_scale: must be float32"),
        (dict(k_scale=0.5, v_scale=v_scale), "k_scale: expected a float32 tensor"),
        (dict(k_scale=k_scale, v_scale=v_scale[:1]), "both per tensor or both per KV head"),
    ]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match) as info:
            paged_decode(*args, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="only an fp8 cache takes scales"):
        half = case.k_cache.to(torch.float16)
        paged_decode(q, half, half, case.block_tables, case.seq_lens, k_scale=k_scale)
    with pytest.raises(ValueError, match="dtype: torch.float8_e5m2 not supported"):
        e5 = case.k_cache.float().to(torch.float8_e5m2)
        paged_decode(q, e5, e5, case.block_tables, case.seq_lens)
    with pytest.raises(ValueError, match="two-pass kernel does not take an fp8 cache"):
        paged_decode_two_pass(*args)
    with pytest.raises(ValueError, match="q: dtype"):
        paged_decode(q.to(FP8_DTYPE), *args[1:])
    with pytest.raises(ValueError, match="dtype: 'fp4' not supported"):
        KVCache(1, 4, 16, 2, 64, dtype="fp4")
    with pytest.raises(ValueError, match="per_head_scales: only an fp8 cache"):
        KVCache(1, 4, 16, 2, 64, dtype=torch.float16, per_head_scales=True)
    with pytest.raises(ValueError, match="k_scale: expected"):
        write_kv(q[:, :2], q[:, :2], case.k_cache, case.v_cache, torch.zeros(2, dtype=torch.int64, device=DEVICE),
                 k_scale=torch.ones(5, device=DEVICE))
