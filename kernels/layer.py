"""`PagedAttention`, a drop-in attention layer over a paged KV cache, and the per-layer cache holder.

A step's batch is laid out like vLLM's: the prefill sequences' tokens first (each a chunk of >= 1 new
tokens), then one token per decode sequence. `forward` writes the new K/V into the layer's cache, runs
`paged_prefill` on the first part and `paged_decode` on the second, and returns the attention output.
With an fp8 cache (`KVCache(dtype="fp8")`, vLLM's kv_cache_dtype="fp8") the writes quantize with the
cache's per-layer scales and both attention kernels dequantize with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from kernels._common import (
    FP8_DTYPE, SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, cache_dtype, check_cache, check_kv_scales, default_scale,
)
from kernels.cache_ops import CopyPairs, copy_blocks, write_kv
from kernels.decode import paged_decode
from kernels.prefill import paged_prefill


@dataclass(frozen=True)
class AttentionMetadata:
    """One step's batch: `num_prefills` prefill sequences (their tokens first), then decode sequences.

    slot_mapping [num_tokens] cache slot of every new token (-1: skip); block_tables int32
    [num_seqs, max_blocks]; seq_lens int32 [num_seqs] cached tokens after this step's writes;
    query_start_loc int32 [num_prefills + 1] offsets of the prefill chunks in the token axis.
    """

    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    seq_lens: torch.Tensor
    query_start_loc: torch.Tensor
    num_prefills: int
    num_prefill_tokens: int
    max_query_len: int

    def __post_init__(self) -> None:
        num_seqs = self.seq_lens.shape[0]
        if self.block_tables.shape[0] != num_seqs:
            raise ValueError(f"block_tables: {self.block_tables.shape[0]} rows for {num_seqs} sequences")
        if not 0 <= self.num_prefills <= num_seqs:
            raise ValueError(f"num_prefills: {self.num_prefills} outside [0, {num_seqs}]")
        if self.query_start_loc.shape != (self.num_prefills + 1,):
            raise ValueError(f"query_start_loc: expected {self.num_prefills + 1} entries")
        if self.slot_mapping.shape != (self.num_prefill_tokens + self.num_decodes,):
            raise ValueError("slot_mapping: expected one slot per prefill token and per decode sequence")

    @property
    def num_decodes(self) -> int:
        return self.seq_lens.shape[0] - self.num_prefills

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decodes

    @classmethod
    def build(
        cls, query_lens: Sequence[int], seq_lens: Sequence[int], block_tables: Sequence[Sequence[int]],
        block_size: int, device: torch.device | str = "cpu", num_prefills: int | None = None,
    ) -> "AttentionMetadata":
        """From host lists: sequence i adds query_lens[i] tokens, reaching seq_lens[i] cached tokens.

        The first `num_prefills` sequences go to prefill (default: those with query_len > 1, which must
        come first); every later one must add exactly one token.
        """
        if not len(query_lens) == len(seq_lens) == len(block_tables):
            raise ValueError("query_lens, seq_lens and block_tables must have one entry per sequence")
        if num_prefills is None:
            num_prefills = sum(1 for n in query_lens if n > 1)
        for i, (q_len, s_len, table) in enumerate(zip(query_lens, seq_lens, block_tables)):
            if not 1 <= q_len <= s_len:
                raise ValueError(f"sequence {i}: need 1 <= query_len ({q_len}) <= seq_len ({s_len})")
            if len(table) * block_size < s_len:
                raise ValueError(f"sequence {i}: {len(table)} blocks cannot hold {s_len} tokens")
            if i >= num_prefills and q_len != 1:
                raise ValueError(f"sequence {i}: decode sequences add one token; put prefills (query_len > 1) first")
        slots: list[int] = []
        for q_len, s_len, table in zip(query_lens, seq_lens, block_tables):
            slots += [table[p // block_size] * block_size + p % block_size for p in range(s_len - q_len, s_len)]
        width = max((len(t) for t in block_tables), default=0) or 1
        padded = [list(t) + [0] * (width - len(t)) for t in block_tables]
        starts = [0]
        for n in query_lens[:num_prefills]:
            starts.append(starts[-1] + n)
        as_int32 = lambda xs: torch.tensor(xs, dtype=torch.int32, device=device)  # noqa: E731
        return cls(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
            block_tables=as_int32(padded).reshape(len(block_tables), width), seq_lens=as_int32(list(seq_lens)),
            query_start_loc=as_int32(starts), num_prefills=num_prefills, num_prefill_tokens=starts[-1],
            max_query_len=max(query_lens[:num_prefills], default=0))


class KVCache:
    """K and V caches of every layer, `.k[layer]` / `.v[layer]` of shape [num_blocks, block_size, num_kv_heads,
    head_dim], carved from one zeroed allocation.

    `dtype` is a torch dtype or a name; "fp8" is e4m3 as vLLM's kv_cache_dtype="fp8". An fp8 cache keeps
    float32 dequantization scales `.k_scale[layer]` / `.v_scale[layer]`, one per tensor (1.0, vLLM's
    default) or, with `per_head_scales`, one per KV head; set them (in place) before the first write.
    """

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype | str = torch.float16, device: torch.device | str = "cpu",
                 per_head_scales: bool = False) -> None:
        if num_layers < 1 or num_blocks < 1 or num_kv_heads < 1:
            raise ValueError("num_layers, num_blocks and num_kv_heads must be >= 1")
        dtype = cache_dtype(dtype)
        self.storage = torch.zeros((2, num_layers, num_blocks, block_size, num_kv_heads, head_dim),
                                   dtype=dtype, device=device)
        self.k: list[torch.Tensor] = list(self.storage[0].unbind(0))
        self.v: list[torch.Tensor] = list(self.storage[1].unbind(0))
        check_cache(self.k[0], self.v[0])  # block size, head dim, dtype
        self.num_layers, self.num_blocks, self.block_size, self.dtype = num_layers, num_blocks, block_size, dtype
        self.k_scale: list[torch.Tensor | None] = [None] * num_layers
        self.v_scale: list[torch.Tensor | None] = [None] * num_layers
        if dtype == FP8_DTYPE:
            scales = torch.ones((2, num_layers, num_kv_heads if per_head_scales else 1), dtype=torch.float32,
                                device=device)
            self.k_scale, self.v_scale = list(scales[0].unbind(0)), list(scales[1].unbind(0))
        elif per_head_scales:
            raise ValueError(f"per_head_scales: only an fp8 cache has scales, this one is {dtype}")

    @staticmethod
    def bytes_per_block(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int,
                        dtype: torch.dtype | str) -> int:
        """Device bytes one block costs across all layers (K and V): size a cache from a memory budget."""
        elem = torch.empty((), dtype=cache_dtype(dtype)).element_size()
        return 2 * num_layers * block_size * num_kv_heads * head_dim * elem

    def copy_blocks(self, pairs: CopyPairs) -> None:
        """Apply copy-on-write (src, dst) pairs to every layer."""
        for k, v in zip(self.k, self.v):
            copy_blocks(k, v, pairs)

    def bind(self, layers: Sequence["PagedAttention"]) -> None:
        """Give layer i the caches of layer i."""
        if len(layers) != self.num_layers:
            raise ValueError(f"bind: {len(layers)} layers for a cache of {self.num_layers}")
        for layer, k, v, ks, vs in zip(layers, self.k, self.v, self.k_scale, self.v_scale):
            layer.set_kv_cache(k, v, ks, vs)


class PagedAttention(torch.nn.Module):
    """Multi-head attention core (no projections) over a paged KV cache; q [T, num_heads * head_dim] or
    [T, num_heads, head_dim], k/v likewise with num_kv_heads; output has q's shape."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float | None = None) -> None:
        super().__init__()
        if num_kv_heads < 1 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads {num_heads} must be a positive multiple of num_kv_heads {num_kv_heads}")
        if head_dim not in SUPPORTED_HEAD_DIMS:
            raise ValueError(f"head_dim: {head_dim} not supported; use one of {SUPPORTED_HEAD_DIMS}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = default_scale(head_dim, scale)
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None
        self.k_scale: torch.Tensor | None = None
        self.v_scale: torch.Tensor | None = None

    def set_kv_cache(self, k_cache: torch.Tensor, v_cache: torch.Tensor, k_scale: torch.Tensor | None = None,
                     v_scale: torch.Tensor | None = None) -> None:
        """Bind a cache; an fp8 one takes its float32 scales (1 or num_kv_heads elements; None: 1.0)."""
        _, _, num_kv_heads, head_dim = check_cache(k_cache, v_cache)
        check_kv_scales(k_cache, k_scale, v_scale)
        if (num_kv_heads, head_dim) != (self.num_kv_heads, self.head_dim):
            raise ValueError(f"cache has {num_kv_heads} KV heads of dim {head_dim}; layer wants "
                             f"{self.num_kv_heads} of dim {self.head_dim}")
        self.k_cache, self.v_cache, self.k_scale, self.v_scale = k_cache, v_cache, k_scale, v_scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        if self.k_cache is None or self.v_cache is None:
            raise ValueError("PagedAttention: no KV cache bound; call KVCache.bind or set_kv_cache first")
        if q.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype: {q.dtype} not supported")
        num_tokens = q.shape[0]
        if num_tokens != meta.num_tokens:
            raise ValueError(f"q: {num_tokens} tokens but the metadata describes {meta.num_tokens}")
        q3 = q.reshape(num_tokens, self.num_heads, self.head_dim)
        k3 = k.reshape(num_tokens, self.num_kv_heads, self.head_dim)
        v3 = v.reshape(num_tokens, self.num_kv_heads, self.head_dim)
        scales = dict(k_scale=self.k_scale, v_scale=self.v_scale)
        write_kv(k3, v3, self.k_cache, self.v_cache, meta.slot_mapping, **scales)
        out = torch.empty_like(q3)
        p, n = meta.num_prefill_tokens, meta.num_prefills
        if p > 0:
            paged_prefill(q3[:p], self.k_cache, self.v_cache, meta.block_tables[:n], meta.seq_lens[:n],
                          meta.query_start_loc, scale=self.scale, max_query_len=meta.max_query_len, out=out[:p],
                          **scales)
        if meta.num_decodes > 0:
            paged_decode(q3[p:], self.k_cache, self.v_cache, meta.block_tables[n:], meta.seq_lens[n:],
                         scale=self.scale, out=out[p:], **scales)
        return out.reshape(q.shape)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}"
