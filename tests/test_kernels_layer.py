"""PagedAttention + KVCache as a model uses them: mixed prefill/decode steps, chunked prefill, copy-on-write.

The reference keeps every sequence's K/V history in plain tensors and runs float64 causal attention over it;
the layer must agree step after step, so its cache writes and its reads through the block tables are both
checked. Shapes are the simulator's tiny model (4 q heads, 2 KV heads, head dim 64, block size 16).
"""
from __future__ import annotations

import pytest
import torch

from kernels import AttentionMetadata, KVCache, PagedAttention
from kernels._common import attention_ref
from kernels.testing import TOLERANCE, max_rel_err, randn

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
HEADS, KV_HEADS, DIM, BLOCK = 4, 2, 64, 16


class Reference:
    """Contiguous per-sequence K/V histories and the attention the layer should compute."""

    def __init__(self) -> None:
        self.k: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def step(self, names, q, k, v, query_lens, scale) -> torch.Tensor:
        outs, start = [], 0
        for name, n in zip(names, query_lens):
            sl = slice(start, start + n)
            start += n
            self.k[name] = torch.cat([self.k.get(name, k[:0]), k[sl]])
            self.v[name] = torch.cat([self.v.get(name, v[:0]), v[sl]])
            total = self.k[name].shape[0]
            outs.append(attention_ref(q[sl], self.k[name], self.v[name], scale, causal_offset=total - n))
        return torch.cat(outs)


def run_step(layer, ref, tables, lens, names, query_lens, dtype, gen):
    num_tokens = sum(query_lens)
    q = randn((num_tokens, HEADS * DIM), dtype, DEVICE, gen)  # flat, as a projection produces it
    k = randn((num_tokens, KV_HEADS, DIM), dtype, DEVICE, gen)
    v = randn((num_tokens, KV_HEADS, DIM), dtype, DEVICE, gen)
    for name, n in zip(names, query_lens):
        lens[name] += n
    meta = AttentionMetadata.build(query_lens, [lens[n] for n in names], [tables[n] for n in names], BLOCK, DEVICE)
    out = layer(q, k, v, meta)
    assert out.shape == q.shape and out.dtype == dtype
    expected = ref.step(names, q.view(num_tokens, HEADS, DIM), k, v, query_lens, layer.scale)
    return max_rel_err(out.view(num_tokens, HEADS, DIM), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32] + ([torch.bfloat16] if CUDA else []), ids=str)
def test_layer_over_mixed_steps_with_fork(dtype):
    gen = torch.Generator().manual_seed(5)
    cache = KVCache(num_layers=2, num_blocks=16, block_size=BLOCK, num_kv_heads=KV_HEADS, head_dim=DIM,
                    dtype=dtype, device=DEVICE)
    layers = [PagedAttention(HEADS, KV_HEADS, DIM) for _ in range(2)]
    cache.bind(layers)
    layer = layers[1]
    ref = Reference()
    tables = {"a": [9, 2], "b": [5, 11], "c": [4]}
    lens = {"a": 0, "b": 0, "c": 0}
    tol = TOLERANCE[dtype]
    # step 1: two prompts (a: 20 tokens, b: one chunk of 7)
    assert run_step(layer, ref, tables, lens, ["a", "b"], [20, 7], dtype, gen) < tol
    # step 2: b's next chunk fills its first block exactly; a decodes
    assert run_step(layer, ref, tables, lens, ["b", "a"], [9, 1], dtype, gen) < tol
    # fork c from a (21 tokens): c shares a's full first block and copy-on-writes the partial last one
    cache.copy_blocks([(2, 4)])
    tables["c"] = [9, 4]
    lens["c"] = lens["a"]
    ref.k["c"], ref.v["c"] = ref.k["a"].clone(), ref.v["a"].clone()
    # step 3: three decodes; b crosses into its second block, c writes into its private copy
    assert run_step(layer, ref, tables, lens, ["a", "b", "c"], [1, 1, 1], dtype, gen) < tol
    # step 4: a long chunk for b next to c's decode; a and c diverged after the fork
    assert run_step(layer, ref, tables, lens, ["b", "c"], [12, 1], dtype, gen) < tol
    assert not torch.equal(ref.k["a"][-1], ref.k["c"][-1])
    # the other layer's cache was never written
    assert not cache.k[0].any() and not cache.v[0].any()


def test_explicit_single_token_prefill_equals_decode():
    gen = torch.Generator().manual_seed(6)
    cache = KVCache(1, 4, BLOCK, KV_HEADS, DIM, torch.float32, DEVICE)
    layer = PagedAttention(HEADS, KV_HEADS, DIM)
    cache.bind([layer])
    prompt = randn((5, KV_HEADS, DIM), torch.float32, DEVICE, gen)
    q0 = randn((5, HEADS * DIM), torch.float32, DEVICE, gen)
    layer(q0, prompt, prompt, AttentionMetadata.build([5], [5], [[3]], BLOCK, DEVICE))
    q = randn((1, HEADS * DIM), torch.float32, DEVICE, gen)
    kv = randn((1, KV_HEADS, DIM), torch.float32, DEVICE, gen)
    as_prefill = layer(q, kv, kv, AttentionMetadata.build([1], [6], [[3]], BLOCK, DEVICE, num_prefills=1))
    as_decode = layer(q, kv, kv, AttentionMetadata.build([1], [6], [[3]], BLOCK, DEVICE))
    assert max_rel_err(as_prefill, as_decode) < 1e-5


def test_metadata_layout_and_errors():
    meta = AttentionMetadata.build([3, 1], [19, 8], [[7, 2], [1]], BLOCK)
    assert meta.num_prefills == 1 and meta.num_prefill_tokens == 3 and meta.num_decodes == 1
    assert meta.slot_mapping.tolist() == [2 * BLOCK + 0, 2 * BLOCK + 1, 2 * BLOCK + 2, 1 * BLOCK + 7]
    assert meta.block_tables.tolist() == [[7, 2], [1, 0]]
    assert meta.query_start_loc.tolist() == [0, 3]
    with pytest.raises(ValueError, match="put prefills"):
        AttentionMetadata.build([1, 3], [8, 19], [[1], [7, 2]], BLOCK)
    with pytest.raises(ValueError, match="cannot hold"):
        AttentionMetadata.build([1], [17], [[0]], BLOCK)
    with pytest.raises(ValueError, match="query_len"):
        AttentionMetadata.build([5], [4], [[0]], BLOCK)


def test_layer_and_cache_errors():
    with pytest.raises(ValueError, match="multiple"):
        PagedAttention(6, 4, 64)
    with pytest.raises(ValueError, match="head_dim"):
        PagedAttention(4, 2, 48)
    with pytest.raises(ValueError, match="block_size"):
        KVCache(1, 4, 24, 2, 64)
    layer = PagedAttention(4, 2, 64)
    meta = AttentionMetadata.build([1], [1], [[0]], BLOCK)
    x = torch.zeros((1, 4 * 64))
    with pytest.raises(ValueError, match="no KV cache bound"):
        layer(x, x[:, :128], x[:, :128], meta)
    with pytest.raises(ValueError, match="KV heads"):
        KVCache(1, 4, BLOCK, 1, 64).bind([layer])
    assert KVCache.bytes_per_block(2, 16, 2, 64, torch.float16) == 2 * 2 * 16 * 2 * 64 * 2
