"""Shared checks and small helpers for the paged-attention kernels.

Every public wrapper validates its inputs here so a bad call fails with one clear `ValueError` instead of a
Triton compile error or a silent out-of-bounds read. Checks never read device memory (no host sync), so
the wrappers stay usable inside CUDA graphs.
"""
from __future__ import annotations

import math

import torch

SUPPORTED_BLOCK_SIZES: tuple[int, ...] = (8, 16, 32, 64, 128)
SUPPORTED_HEAD_DIMS: tuple[int, ...] = (64, 80, 96, 128, 256)
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)
FP8_DTYPE = torch.float8_e4m3fn  # vLLM's kv_cache_dtype="fp8" (e4m3, max 448)
FP8_MAX = 448.0
CACHE_DTYPES: tuple[torch.dtype, ...] = SUPPORTED_DTYPES + (FP8_DTYPE,)
_CACHE_DTYPE_NAMES = {"fp8": FP8_DTYPE, "fp8_e4m3": FP8_DTYPE, "float16": torch.float16, "half": torch.float16,
                      "bfloat16": torch.bfloat16, "float32": torch.float32, "float": torch.float32}


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def default_scale(head_dim: int, scale: float | None) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: must be a positive finite number, got {scale}")
    return float(scale)


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 must stay fp32 on tensor-core GPUs (tf32 would miss the 1e-4 bar); other dtypes ignore this.
    return "ieee" if dtype == torch.float32 else "tf32"


def check_cache(k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple[int, int, int, int]:
    """Validate a paged K/V cache pair; returns (num_blocks, block_size, num_kv_heads, head_dim)."""
    # every property read once: these checks run on each kernel call (docs/kernels.md, host overhead)
    shape = k_cache.shape
    if len(shape) != 4:
        raise ValueError(
            f"k_cache: expected [num_blocks, block_size, num_kv_heads, head_dim], got shape {tuple(shape)}"
        )
    if v_cache.shape != shape:
        raise ValueError(f"v_cache: shape {tuple(v_cache.shape)} differs from k_cache {tuple(shape)}")
    dtype = k_cache.dtype
    if v_cache.dtype != dtype or v_cache.device != k_cache.device:
        raise ValueError("v_cache: dtype/device differ from k_cache")
    stride = k_cache.stride()
    if v_cache.stride() != stride:
        raise ValueError("v_cache: strides differ from k_cache's (the kernels address both alike)")
    num_blocks, block_size, num_kv_heads, head_dim = shape
    if block_size not in SUPPORTED_BLOCK_SIZES:
        raise ValueError(f"block_size: {block_size} not supported; use one of {SUPPORTED_BLOCK_SIZES}")
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim: {head_dim} not supported; use one of {SUPPORTED_HEAD_DIMS}")
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype: {dtype} not supported; use float16, bfloat16, float32 or "
                         "float8_e4m3fn (fp8)")
    if num_kv_heads < 1 or num_blocks < 1:
        raise ValueError("k_cache: num_blocks and num_kv_heads must be >= 1")
    if stride[3] != 1 or stride[2] != head_dim:  # v_cache's strides are k_cache's (checked above)
        raise ValueError("k_cache/v_cache: each block must be [block_size, num_kv_heads, head_dim] with contiguous heads")
    return num_blocks, block_size, num_kv_heads, head_dim


def check_query(q: torch.Tensor, k_cache: torch.Tensor, rank: int, name: str = "q") -> tuple[int, int]:
    """Validate q of shape [n, num_q_heads, head_dim]; returns (n, num_q_heads)."""
    shape = q.shape
    if len(shape) != rank:
        raise ValueError(f"{name}: expected [tokens, num_q_heads, head_dim], got shape {tuple(shape)}")
    n, num_q_heads, head_dim = shape
    _, _, num_kv_heads, cache_head_dim = k_cache.shape
    if head_dim != cache_head_dim:
        raise ValueError(f"{name}: head_dim {head_dim} differs from the cache's {cache_head_dim}")
    if num_q_heads < 1 or num_q_heads % num_kv_heads != 0:
        raise ValueError(f"{name}: num_q_heads {num_q_heads} must be a positive multiple of num_kv_heads {num_kv_heads}")
    dtype, kv_dtype = q.dtype, k_cache.dtype
    if kv_dtype == FP8_DTYPE:
        if dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name}: dtype {dtype} not supported; use float16, bfloat16 or float32")
    elif dtype != kv_dtype:
        raise ValueError(f"{name}: dtype {dtype} differs from the cache's {kv_dtype}")
    if q.device != k_cache.device:
        raise ValueError(f"{name}: device {q.device} differs from the cache's {k_cache.device}")
    if q.stride(2) != 1:
        raise ValueError(f"{name}: the head_dim axis must be contiguous")
    return n, num_q_heads


def check_index(t: torch.Tensor, name: str, rank: int, length: int | None, device: torch.device) -> None:
    shape = t.shape
    if len(shape) != rank:
        raise ValueError(f"{name}: expected a {rank}-D int32 tensor, got shape {tuple(shape)}")
    if t.dtype != torch.int32:
        raise ValueError(f"{name}: dtype must be int32, got {t.dtype}")
    if length is not None and shape[0] != length:
        raise ValueError(f"{name}: expected {length} rows, got {shape[0]}")
    if t.device != device:
        raise ValueError(f"{name}: device {t.device} differs from the cache's {device}")
    if t.stride(-1) != 1:
        raise ValueError(f"{name}: last axis must be contiguous")


def check_out(out: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if out is None:
        # always contiguous; empty_like (a contiguous `like` only) costs a third of torch.empty(shape, ...)
        if like.is_contiguous():
            return torch.empty_like(like)
        return torch.empty(like.shape, dtype=like.dtype, device=like.device)
    if out.shape != like.shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f"out: expected {tuple(like.shape)} {like.dtype} on {like.device}, got {tuple(out.shape)} {out.dtype}")
    if out.stride(-1) != 1:
        raise ValueError("out: the head_dim axis must be contiguous")
    return out


def cache_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A KV-cache dtype from a torch dtype or a name ("fp8" is e4m3, as vLLM's kv_cache_dtype="fp8")."""
    if isinstance(dtype, str):
        if dtype not in _CACHE_DTYPE_NAMES:
            raise ValueError(f"dtype: {dtype!r} not supported; use one of {sorted(_CACHE_DTYPE_NAMES)}")
        dtype = _CACHE_DTYPE_NAMES[dtype]
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype: {dtype} not supported; use float16, bfloat16, float32 or float8_e4m3fn (fp8)")
    return dtype


_UNIT_SCALES: dict[torch.device, torch.Tensor] = {}


def check_kv_scales(
    k_cache: torch.Tensor, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Dequantization scales of an fp8 cache: float32 tensors of 1 (per tensor) or num_kv_heads (per head)
    elements on the cache's device; None means 1.0. Returns (k_scale, v_scale, stride between heads).

    A non-fp8 cache takes no scales. Only shapes are checked (no device read), so graphs can capture it.
    """
    if k_cache.dtype != FP8_DTYPE:
        if k_scale is not None or v_scale is not None:
            raise ValueError(f"k_scale/v_scale: only an fp8 cache takes scales, this one is {k_cache.dtype}")
        return k_cache, k_cache, 0  # unused placeholders for the kernels' pointer arguments
    num_kv_heads, device = k_cache.shape[2], k_cache.device
    if k_scale is None or v_scale is None:
        unit = _UNIT_SCALES.get(device)
        if unit is None:
            unit = _UNIT_SCALES[device] = torch.ones(1, dtype=torch.float32, device=device)
        k_scale = unit if k_scale is None else k_scale
        v_scale = unit if v_scale is None else v_scale
    per_head = False
    for name, t in (("k_scale", k_scale), ("v_scale", v_scale)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a float32 tensor of 1 or num_kv_heads elements, got {type(t).__name__}")
        if t.dim() > 1 or t.numel() not in (1, num_kv_heads):
            raise ValueError(f"{name}: expected 1 (per tensor) or {num_kv_heads} (per KV head) elements, "
                             f"got shape {tuple(t.shape)}")
        if t.dtype != torch.float32 or t.device != device:
            raise ValueError(f"{name}: must be float32 on the cache's device, got {t.dtype} on {t.device}")
        per_head |= t.numel() > 1
    if per_head and (k_scale.numel() != v_scale.numel()):
        raise ValueError("k_scale/v_scale: both per tensor or both per KV head")
    if per_head and (k_scale.stride(-1) != 1 or v_scale.stride(-1) != 1):
        raise ValueError("k_scale/v_scale: must be contiguous")
    return k_scale, v_scale, 1 if per_head else 0


def dequantize_cache(cache: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """float32 values an fp8 cache stands for (value * scale of its KV head); other caches unchanged."""
    if cache.dtype != FP8_DTYPE:
        return cache
    scale = torch.ones(1, device=cache.device) if scale is None else scale
    return cache.float() * scale.float().reshape(1, 1, -1, 1)


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """x [tokens, num_kv_heads, head_dim] to e4m3 as `write_kv` stores it: x / scale, clamped to +-448."""
    scale = torch.ones(1, device=x.device) if scale is None else scale
    return (x.float() / scale.float().reshape(1, -1, 1)).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def fp8_scales(x: torch.Tensor, per_head: bool = False) -> torch.Tensor:
    """Scales that map x's largest magnitude (per tensor, or per KV head of [tokens, heads, dim]) onto 448."""
    amax = x.detach().abs().float().amax(dim=(0, 2)) if per_head else x.detach().abs().float().amax().reshape(1)
    return (amax / FP8_MAX).clamp_min(1e-12)


def gather_sequence(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` tokens of one sequence as a contiguous [length, num_kv_heads, head_dim] tensor."""
    block_size = cache.shape[1]
    num_blocks = -(-length // block_size)
    blocks = block_table[:num_blocks].long()
    return cache[blocks].reshape(-1, cache.shape[2], cache.shape[3])[:length]


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal_offset: int | None) -> torch.Tensor:
    """float64 attention of q [m, Hq, D] over k, v [n, Hkv, D]; query i sees keys <= causal_offset + i."""
    group = q.shape[1] // k.shape[1]
    q64, k64, v64 = q.double(), k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    scores = torch.einsum("mhd,nhd->hmn", q64, k64) * scale
    if causal_offset is not None:
        rows = torch.arange(q.shape[0], device=q.device)[:, None] + causal_offset
        cols = torch.arange(k.shape[0], device=q.device)[None, :]
        scores = scores.masked_fill(cols > rows, float("-inf"))
    return torch.einsum("hmn,nhd->mhd", torch.softmax(scores, dim=-1), v64)
