"""Step time: an analytic roofline over the presets (`AnalyticCostModel`).

A step's time is a fixed host overhead, the GEMMs (weights read once, FLOPs per token), attention (prefill
chunks by FLOPs, decode by the KV bytes it reads), tensor-parallel all-reduces, and copy-on-write / swap
copies. Each part is `max(FLOPs / (peak * eff), bytes / (bandwidth * eff))`; the efficiencies and overheads
live in a `CostProfile` (JSON in `sim/profiles/`) that a measured one can replace.

Decode attention is linear in the summed context, so a run of decode steps with a fixed batch has step
times `base(B) + a * C_j`: `decode_times` evaluates that for many steps at once, and the engine uses it
for every pure decode step (one or many), which keeps fast-forwarding exact.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sim.json_profile import check_constants, load_json_dataclass
from sim.presets import GpuSpec, ModelSpec

PROFILE_DIR = Path(__file__).with_name("profiles")


@dataclass(frozen=True)
class CostProfile:
    """Constants of the analytic cost model (efficiencies are fractions of the datasheet peak)."""

    name: str = "default"
    description: str = ""
    gemm_compute_efficiency: float = 0.7
    gemm_memory_efficiency: float = 0.85
    attn_prefill_compute_efficiency: float = 0.5
    attn_prefill_memory_efficiency: float = 0.7
    attn_decode_compute_efficiency: float = 0.3
    attn_decode_memory_efficiency: float = 0.6
    copy_memory_efficiency: float = 0.5
    swap_host_efficiency: float = 0.8
    interconnect_efficiency: float = 0.7
    allreduce_latency_s: float = 8e-6
    step_overhead_s: float = 0.002
    per_seq_overhead_s: float = 5e-6
    # Host (CPU) terms, seconds (sim.host_time); None: the policy's engine's published defaults.
    host_step_s: float | None = None
    host_per_request_s: float | None = None
    host_per_token_s: float | None = None

    def __post_init__(self) -> None:
        check_constants(self, f"cost profile {self.name}", skip=("name", "description"))

    @classmethod
    def load(cls, name_or_path: str) -> "CostProfile":
        """A profile by name (`sim/profiles/<name>.json`) or by path to a JSON file."""
        return load_json_dataclass(cls, name_or_path, PROFILE_DIR, "cost_profile")


@dataclass(frozen=True, slots=True)
class StepBatch:
    """What one engine step computes. Pure decode steps never build one (see `decode_times`)."""

    prefill_tokens: int = 0        # new tokens of prefill chunks
    prefill_seqs: int = 0          # requests with a chunk in this step
    prefill_attn_pairs: float = 0  # sum over chunks of q * (c + (q + 1) / 2): causal query-key pairs
    prefill_kv_tokens: int = 0     # sum over chunks of c + q: KV tokens the chunks read
    decode_seqs: int = 0
    decode_context: int = 0        # sum of the decode sequences' context lengths
    sampled_seqs: int = 0          # sequences that sample a token (lm head)
    cow_copies: int = 0            # block copies inside HBM
    swap_blocks: int = 0           # blocks moved over the host link
    graph_tokens: int = 0          # > 0: tokens the GEMMs run at (a CUDA graph's padded batch)


class AnalyticCostModel:
    """Roofline step times for `model` on `gpu` with `profile`'s efficiencies."""

    name = "analytic"

    def __init__(self, model: ModelSpec, gpu: GpuSpec, profile: CostProfile, block_size: int = 16,
                 kv_cache_dtype: str = "auto") -> None:
        self.model, self.gpu, self.profile, self.block_size = model, gpu, profile, block_size
        # Attention reads (and block copies move) K/V as stored: fp8 halves the bytes of a bf16 model.
        self.kv_bytes_per_token = model.kv_bytes_per_token(kv_cache_dtype)
        self.kv_cache_dtype = kv_cache_dtype
        p, m, tp = profile, model, model.tp
        flops_c = gpu.peak_flops * p.gemm_compute_efficiency
        bw_m = gpu.hbm_bandwidth * p.gemm_memory_efficiency
        h, q, kv = m.hidden_size, m.num_q_heads * m.head_dim, m.num_kv_heads * m.head_dim
        # GEMMs: per token FLOPs and activation traffic; weights (layers + lm head) read once per step.
        self._gemm_s_per_token = 2 * m.num_layers * m.layer_params / tp / flops_c
        self._head_s_per_sample = 2 * h * m.vocab_size / tp / flops_c
        self._weights_s = (m.num_layers * m.layer_params + m.vocab_size * h) * m.dtype_bytes / tp / bw_m
        act_elems = 4 * h + 2 * q + 2 * kv + (3 if m.gated_mlp else 2) * m.intermediate_size
        self._act_s_per_token = m.num_layers * act_elems * m.dtype_bytes / tp / bw_m
        # Attention: 4 FLOPs per (query, key) pair per head dim (QK^T and PV); KV bytes per context token.
        attn_flops = 4 * m.num_layers * m.num_q_heads * m.head_dim / tp
        kv_bytes = self.kv_bytes_per_token
        self._decode_s_per_ctx = max(
            attn_flops / (gpu.peak_flops * p.attn_decode_compute_efficiency),
            kv_bytes / (gpu.hbm_bandwidth * p.attn_decode_memory_efficiency),
        )
        self._prefill_s_per_pair = attn_flops / (gpu.peak_flops * p.attn_prefill_compute_efficiency)
        self._prefill_s_per_kv = kv_bytes / (gpu.hbm_bandwidth * p.attn_prefill_memory_efficiency)
        # Tensor parallelism: two ring all-reduces of the hidden state per layer.
        if tp > 1:
            link = gpu.interconnect_bandwidth * p.interconnect_efficiency
            self._ar_fixed_s = 2 * m.num_layers * p.allreduce_latency_s
            self._ar_s_per_token = 2 * m.num_layers * 2 * (tp - 1) / tp * h * m.dtype_bytes / link
        else:
            self._ar_fixed_s = self._ar_s_per_token = 0.0
        block_bytes_per_token = kv_bytes  # a block copy moves block_size tokens of K and V
        self._copy_s_per_token = 2 * block_bytes_per_token / (gpu.hbm_bandwidth * p.copy_memory_efficiency)
        self._swap_s_per_token = block_bytes_per_token / (gpu.host_bandwidth * p.swap_host_efficiency)

    def _fixed_s(self, tokens: int, seqs: int, sampled: int) -> float:
        """Everything but attention for a step of `tokens` new tokens over `seqs` sequences."""
        p = self.profile
        gemm = max(tokens * self._gemm_s_per_token + sampled * self._head_s_per_sample,
                   self._weights_s + tokens * self._act_s_per_token)
        allreduce = (self._ar_fixed_s + tokens * self._ar_s_per_token) if tokens else 0.0
        return p.step_overhead_s + p.per_seq_overhead_s * seqs + gemm + allreduce

    def decode_coefficients(self, num_seqs: int, graph_tokens: int = 0) -> tuple[float, float]:
        """A pure decode step of `num_seqs` sequences with summed context C takes base + slope * C; a CUDA graph
        of `graph_tokens` (> num_seqs: padding) runs its GEMMs at that size."""
        return self._fixed_s(max(num_seqs, graph_tokens), num_seqs, num_seqs), self._decode_s_per_ctx

    def decode_times(self, num_seqs: int, context: np.ndarray) -> np.ndarray:
        """Seconds of pure decode steps of `num_seqs` sequences whose contexts sum to each `context`."""
        base, slope = self.decode_coefficients(num_seqs)
        return base + slope * context

    def step_time(self, batch: StepBatch) -> float:
        return self.step_time_of(batch.prefill_tokens, batch.prefill_seqs, batch.prefill_attn_pairs,
                                 batch.prefill_kv_tokens, batch.decode_seqs, batch.decode_context,
                                 batch.sampled_seqs, batch.cow_copies, batch.swap_blocks, batch.graph_tokens)

    def step_time_of(self, prefill_tokens: int, prefill_seqs: int, prefill_attn_pairs: float, prefill_kv_tokens: int,
                     decode_seqs: int, decode_context: int, sampled_seqs: int, cow_copies: int, swap_blocks: int,
                     graph_tokens: int) -> float:
        """`step_time` of a `StepBatch` with these fields, without building one (the timer's per-step path)."""
        tokens = prefill_tokens + decode_seqs
        gemm_tokens = max(tokens, graph_tokens)
        t = (self._fixed_s(gemm_tokens, decode_seqs + prefill_seqs, sampled_seqs) if tokens
             else self.profile.step_overhead_s)
        if prefill_tokens:
            t += max(prefill_attn_pairs * self._prefill_s_per_pair, prefill_kv_tokens * self._prefill_s_per_kv)
        t += decode_context * self._decode_s_per_ctx
        if cow_copies:  # most steps copy and swap nothing: adding 0.0 would not change t
            t += cow_copies * self.block_size * self._copy_s_per_token
        if swap_blocks:
            t += swap_blocks * self.block_size * self._swap_s_per_token
        return t

    def describe(self) -> dict:
        return {"backend": self.name, "profile": asdict(self.profile), "kv_cache_dtype": self.kv_cache_dtype}

    def unit_terms(self, batch: StepBatch) -> dict[str, float]:
        """The step's parts at efficiency 1 and no overhead, for calibration (`sim.execute.calibrate`): the
        step time is overheads + max(gemm_c/e, gemm_m/e) + max(prefill_c/e, prefill_m/e) + decode/e + ...
        with each part divided by its profile efficiency."""
        m, g, tp = self.model, self.gpu, self.model.tp
        tokens = batch.prefill_tokens + batch.decode_seqs
        h = m.hidden_size
        q, kv = m.num_q_heads * m.head_dim, m.num_kv_heads * m.head_dim
        act_elems = 4 * h + 2 * q + 2 * kv + (3 if m.gated_mlp else 2) * m.intermediate_size
        attn_flops = 4 * m.num_layers * m.num_q_heads * m.head_dim / tp
        kv_bytes = self.kv_bytes_per_token
        weights = (m.num_layers * m.layer_params + m.vocab_size * h) * m.dtype_bytes / tp
        return {
            "seqs": float(batch.decode_seqs + batch.prefill_seqs),
            "gemm_compute": (tokens * 2 * m.num_layers * m.layer_params / tp
                             + batch.sampled_seqs * 2 * h * m.vocab_size / tp) / g.peak_flops,
            "gemm_memory": (weights + tokens * m.num_layers * act_elems * m.dtype_bytes / tp) / g.hbm_bandwidth,
            "prefill_compute": batch.prefill_attn_pairs * attn_flops / g.peak_flops,
            "prefill_memory": batch.prefill_kv_tokens * kv_bytes / g.hbm_bandwidth,
            "decode_compute": batch.decode_context * attn_flops / g.peak_flops,
            "decode_memory": batch.decode_context * kv_bytes / g.hbm_bandwidth,
            "copy": batch.cow_copies * self.block_size * 2 * kv_bytes / g.hbm_bandwidth,
            "swap": batch.swap_blocks * self.block_size * kv_bytes / g.host_bandwidth,
        }


class CostModelConfig(Protocol):
    """What the cost model reads of an `EngineConfig` (named structurally: the config imports this module's
    neighbours, so a direct import would close a cycle)."""

    model_spec: ModelSpec
    gpu_spec: GpuSpec
    cost_profile: str
    block_size: int
    kv_cache_dtype: str


def make_cost_model(config: CostModelConfig) -> AnalyticCostModel:
    """The analytic cost model of an `EngineConfig`. With `backend="execute"` the measured step times
    advance the clock and this model only predicts each step alongside (for fidelity tables)."""
    return AnalyticCostModel(config.model_spec, config.gpu_spec, CostProfile.load(config.cost_profile),
                             config.block_size, config.kv_cache_dtype)
