"""Model and GPU presets with real shapes and datasheet numbers: what the cost model and the KV pool size use.

Model shapes come from each model's published config (Hugging Face `config.json`); GPU numbers from the
vendor datasheets (dense bf16 tensor-core peak, HBM bandwidth, host link). A tensor-parallel preset (`tp`)
describes ONE GPU's share: weights, heads and KV cache are split `tp` ways and each layer all-reduces twice.
"""
from __future__ import annotations

import math

from dataclasses import dataclass

GIB = 1 << 30
# KV-cache element types, as vLLM's --kv-cache-dtype (vllm/config/cache.py, CacheConfig.cache_dtype):
# "auto" stores K/V in the model's dtype, "fp8" in e4m3 (1 byte, scales default to 1.0).
KV_CACHE_DTYPES: tuple[str, ...] = ("auto", "fp8")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer. `head_dim * num_q_heads` need not equal `hidden_size` (e.g. tiny)."""

    name: str
    num_layers: int
    hidden_size: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_model_len: int
    tp: int = 1
    gated_mlp: bool = True       # SwiGLU (3 matrices) vs. a plain 2-matrix MLP (OPT)
    tied_embeddings: bool = False
    dtype_bytes: int = 2         # bf16/fp16 weights and KV cache

    def __post_init__(self) -> None:
        for field_name in ("num_layers", "hidden_size", "num_q_heads", "num_kv_heads", "head_dim",
                           "intermediate_size", "vocab_size", "max_model_len", "tp", "dtype_bytes"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model {self.name}: {field_name}: must be an integer >= 1, got {value!r}")
        if self.num_q_heads % self.num_kv_heads:
            raise ValueError(f"model {self.name}: num_q_heads must be a multiple of num_kv_heads")
        if self.num_kv_heads % self.tp and self.tp % self.num_kv_heads:
            raise ValueError(f"model {self.name}: KV heads {self.num_kv_heads} cannot be split over tp={self.tp}")

    @property
    def layer_params(self) -> int:
        """Weights of one transformer layer (attention projections + MLP; norms are negligible)."""
        h, q, kv = self.hidden_size, self.num_q_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attention = h * q + 2 * h * kv + q * h
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate_size
        return attention + mlp

    @property
    def num_params(self) -> int:
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)
        return self.num_layers * self.layer_params + embeddings

    @property
    def weight_bytes_per_gpu(self) -> int:
        return self.num_params * self.dtype_bytes // self.tp

    @property
    def kv_heads_per_gpu(self) -> float:
        # With more GPUs than KV heads, each GPU holds a replica of one head (vLLM's behaviour).
        return max(self.num_kv_heads / self.tp, 1.0)

    @property
    def kv_bytes_per_token_per_gpu(self) -> int:
        """K and V of one token over all layers, on one GPU, in the model's dtype."""
        return self.kv_bytes_per_token("auto")

    def kv_bytes_per_token(self, kv_cache_dtype: str = "auto") -> int:
        """K and V of one token over all layers, on one GPU, stored as `kv_cache_dtype` (fp8: 1 byte)."""
        if kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype: unknown name {kv_cache_dtype!r}; valid names: {', '.join(KV_CACHE_DTYPES)}")
        elem = 1 if kv_cache_dtype == "fp8" else self.dtype_bytes
        return int(2 * self.num_layers * self.kv_heads_per_gpu * self.head_dim * elem)


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gib: float          # usable device memory as the driver reports it
    peak_flops: float          # dense bf16 tensor-core FLOP/s
    hbm_bandwidth: float       # bytes/s
    host_bandwidth: float      # bytes/s over PCIe, for swaps (one direction)
    interconnect_bandwidth: float  # bytes/s over NVLink per GPU, for tensor-parallel all-reduce

    def __post_init__(self) -> None:
        for field_name in ("memory_gib", "peak_flops", "hbm_bandwidth", "host_bandwidth", "interconnect_bandwidth"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"gpu {self.name}: {field_name}: must be a finite number > 0, got {value!r}")


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8192),
        # Llama-3.1-8B: Llama-3-8B's shapes with a 131072-token context (max_position_embeddings; the
        # llama3 RoPE scaling changes no shape or cost).
        ModelSpec("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 131072),
        # Qwen2.5-7B-Instruct config.json: 28 layers, hidden 3584, 28 query / 4 KV heads of 128, MLP 18944,
        # vocab 152064, untied embeddings, max_position_embeddings 32768 (YaRN to 128k is not modelled; the
        # QKV biases are negligible).
        ModelSpec("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, 32768),
        ModelSpec("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 4096),
        # Mistral-7B v0.1's 4096-token sliding window is not modelled: the cache keeps the whole context.
        ModelSpec("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, 32768),
        ModelSpec("llama-3-70b-tp4", 80, 8192, 64, 8, 128, 28672, 128256, 8192, tp=4),
        # The PagedAttention paper's setting (OPT-13B on one A100-40GB, 2048-token context).
        ModelSpec("opt-13b", 40, 5120, 40, 40, 128, 20480, 50272, 2048, gated_mlp=False, tied_embeddings=True),
        # A toy for CPU tests of the real kernels: 2 layers, 4 query heads, 2 KV heads of 64.
        ModelSpec("tiny", 2, 256, 4, 2, 64, 512, 1024, 2048),
    )
}

# peak_flops and hbm_bandwidth carry operator constants fitted on one GPU to another (`sim.gemm_time`), with the
# published fraction of hbm_bandwidth each card reaches (`sim.hbm_measured`). Sources: NVIDIA H100 Tensor Core GPU datasheet (H100 SXM: BF16 1,979 TFLOPS with
# sparsity, i.e. 989.4 dense; 3.35 TB/s HBM3); NVIDIA H200 datasheet (H200 SXM: same tensor cores, 4.8 TB/s
# HBM3e); NVIDIA A100 Tensor Core GPU datasheet (BF16 312 TFLOPS dense; 80GB SXM 2,039 GB/s, 40GB 1,555 GB/s).
GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("h100-sxm", 79.6, 989.4e12, 3.35e12, 55e9, 450e9),
        GpuSpec("h200", 140.4, 989.4e12, 4.8e12, 55e9, 450e9),
        GpuSpec("a100-80gb", 80.0, 312e12, 2.039e12, 25e9, 300e9),
        GpuSpec("a100-40gb", 40.0, 312e12, 1.555e12, 25e9, 300e9),
    )
}


def lookup(kind: str, table: dict, name: str):
    """`table[name]`, or a one-line ValueError listing the valid names."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"{kind}: unknown name {name!r}; valid names: {', '.join(table)}") from None
