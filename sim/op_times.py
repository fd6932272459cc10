"""Per-operator times of one transformer layer as the analytic cost model sees them.

Two predictions of the non-attention work of one layer for `tokens` new tokens (tensor-parallel degree of the
model preset), both from `sim.cost`'s public pieces and a profile's efficiencies:

- `layer_gemm_time`: what the step cost model charges per layer (`AnalyticCostModel.unit_terms`'s GEMM terms,
  without the lm head): one `max(compute, memory)` over all of a layer's GEMMs, with the activation traffic
  that the cost model counts. This is the number the simulator really uses.
- `op_times`: the same roofline applied to each operator on its own (the operators Vidur profiles:
  fused QKV projection, output projection, fused gate/up projection, down projection, the two norms, the
  activation, rotary embedding and the residual add). Elementwise operators are memory-bound at the profile's
  `gemm_memory_efficiency`, the only memory efficiency the cost model applies to activations.

Neither has a launch floor or a transition between the memory- and compute-bound regimes: that is the point of
comparing them with measured operator times (`pagedlab validate`, docs/validation.md).
"""
from __future__ import annotations

from sim.cost import AnalyticCostModel, CostProfile, StepBatch
from sim.presets import GpuSpec, ModelSpec

# Operator names as in Vidur's profiling tables (`time_stats.<op>.median`).
OPS: tuple[str, ...] = (
    "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
    "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
)


def _linear_s(tokens: int, k: int, n: int, model: ModelSpec, gpu: GpuSpec, profile: CostProfile) -> float:
    """A [tokens, k] x [k, n] GEMM: weights, input and output cross HBM once."""
    compute = 2.0 * tokens * k * n / (gpu.peak_flops * profile.gemm_compute_efficiency)
    memory = (k * n + tokens * (k + n)) * model.dtype_bytes / (gpu.hbm_bandwidth * profile.gemm_memory_efficiency)
    return max(compute, memory)


def _elementwise_s(elements: float, model: ModelSpec, gpu: GpuSpec, profile: CostProfile) -> float:
    return elements * model.dtype_bytes / (gpu.hbm_bandwidth * profile.gemm_memory_efficiency)


def op_times(model: ModelSpec, gpu: GpuSpec, profile: CostProfile, tokens: int) -> dict[str, float]:
    """Seconds of each operator in `OPS` for one layer and `tokens` tokens, on one GPU of the preset's TP group."""
    if not (isinstance(tokens, int) and tokens >= 1):
        raise ValueError(f"tokens: must be an integer >= 1, got {tokens!r}")
    tp = model.tp
    h = model.hidden_size
    q = model.num_q_heads * model.head_dim // tp
    kv = int(model.kv_heads_per_gpu * model.head_dim)
    inter = model.intermediate_size // tp
    up = (2 if model.gated_mlp else 1) * inter
    t = tokens
    return {
        "input_layernorm": _elementwise_s(2 * t * h, model, gpu, profile),
        "attn_pre_proj": _linear_s(t, h, q + 2 * kv, model, gpu, profile),
        "attn_rope": _elementwise_s(2 * t * (q + kv), model, gpu, profile),
        "attn_post_proj": _linear_s(t, q, h, model, gpu, profile),
        "post_attention_layernorm": _elementwise_s(2 * t * h, model, gpu, profile),
        "mlp_up_proj": _linear_s(t, h, up, model, gpu, profile),
        "mlp_act": _elementwise_s(t * (up + inter), model, gpu, profile),
        "mlp_down_proj": _linear_s(t, inter, h, model, gpu, profile),
        "add": _elementwise_s(3 * t * h, model, gpu, profile),
    }


def layer_gemm_time(model: ModelSpec, gpu: GpuSpec, profile: CostProfile, tokens: int) -> float:
    """Seconds the step cost model charges per layer for the GEMMs of `tokens` tokens (no lm head, no attention,
    no host overhead): `max(compute / e_c, memory / e_m)` of `AnalyticCostModel.unit_terms`, per layer."""
    if not (isinstance(tokens, int) and tokens >= 1):
        raise ValueError(f"tokens: must be an integer >= 1, got {tokens!r}")
    cost = AnalyticCostModel(model, gpu, profile)
    terms = cost.unit_terms(StepBatch(prefill_tokens=tokens, prefill_seqs=1, sampled_seqs=0))
    head_bytes = model.vocab_size * model.hidden_size * model.dtype_bytes / model.tp
    memory = terms["gemm_memory"] - head_bytes / gpu.hbm_bandwidth  # unit_terms counts the lm head's weights
    assert memory > 0, "the layers' weights must remain"
    return max(terms["gemm_compute"] / profile.gemm_compute_efficiency,
               memory / profile.gemm_memory_efficiency) / model.num_layers
