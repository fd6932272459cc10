"""Random paged inputs for kernel tests (also usable by the simulator's GPU-path tests).

Caches are poisoned: every block no sequence owns, every slot past a sequence's length and the padding
columns of the block table (which point at poisoned blocks) hold NaN, so a kernel that reads outside a
sequence's tokens, or leaves an output element unwritten, produces NaN and fails the comparison.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float32: 1e-4}


@dataclass
class PagedCase:
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # int32 [num_seqs, max_blocks + 1]: one padding column
    seq_lens: torch.Tensor      # int32 [num_seqs]


def random_paged_case(
    seq_lens: Sequence[int], num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype,
    device: torch.device | str, gen: torch.Generator, spare_blocks: int = 3,
) -> PagedCase:
    """Scattered block tables over a cache of sum(blocks) + spare_blocks blocks; values ~ N(0, 1)."""
    per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(per_seq) + spare_blocks
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    v_cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    spare = perm[sum(per_seq):] or [perm[0]]
    width = max(per_seq, default=0) + 1
    tables = []
    for n, blocks_needed in zip(seq_lens, per_seq):
        own, perm = perm[:blocks_needed], perm[blocks_needed:]
        for i, block in enumerate(own):
            valid = min(block_size, n - i * block_size)
            for cache in (k_cache, v_cache):
                vals = torch.randn((valid, num_kv_heads, head_dim), generator=gen, dtype=torch.float32)
                cache[block, :valid] = vals.to(device=device, dtype=dtype)
        tables.append(own + [spare[len(tables) % len(spare)]] * (width - blocks_needed))
    block_tables = torch.tensor(tables, dtype=torch.int32, device=device).reshape(len(seq_lens), width)
    lens = torch.tensor(list(seq_lens), dtype=torch.int32, device=device)
    return PagedCase(k_cache, v_cache, block_tables, lens)


def randn(shape: Sequence[int], dtype: torch.dtype, device: torch.device | str, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, float("nan"))


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest ||out - ref|| / ||ref|| over the leading axis (per sequence or token); NaN counts as failure."""
    diff = (out.double() - ref.double()).flatten(1).norm(dim=1)
    scale = ref.double().flatten(1).norm(dim=1).clamp_min(1e-30)
    err = diff / scale
    return float("inf") if torch.isnan(err).any() else float(err.max()) if err.numel() else 0.0
