"""Per-operator times of one transformer layer: the operators Vidur profiles, their shapes, and three
predictions of the non-attention work of one layer for `tokens` new tokens (tensor-parallel degree of the
model preset).

- `layer_op_times` / `layer_time`: the per-operator model of `sim.gemm_time` (a smooth roofline per GEMM with
  a launch floor, fused elementwise kernels with theirs), with constants fitted on our own operator grid.
- `layer_gemm_time`: what the step cost model charges per layer (`AnalyticCostModel.unit_terms`'s GEMM terms,
  without the lm head): one `max(compute, memory)` over all of a layer's GEMMs, with the activation traffic
  that the cost model counts.
- `op_times`: that roofline applied to each operator on its own, elementwise operators memory-bound at the
  profile's `gemm_memory_efficiency` (the only memory efficiency the cost model applies to activations).

The operators, as in Vidur's profiling tables: fused QKV projection, output projection, fused gate/up
projection, down projection (GEMMs), the two RMSNorms (reductions), and rotary embedding, activation
(SiLU-and-mul) and the residual add (pointwise).
"""
from __future__ import annotations

from sim.cost import AnalyticCostModel, CostProfile, StepBatch
from sim.gemm_time import OpTimeModel
from sim.presets import GpuSpec, ModelSpec

# Operator names as in Vidur's profiling tables (`time_stats.<op>.median`).
OPS: tuple[str, ...] = (
    "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
    "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
)


def _check_tokens(tokens: int) -> None:
    if not (isinstance(tokens, int) and tokens >= 1):
        raise ValueError(f"tokens: must be an integer >= 1, got {tokens!r}")


def op_shapes(model: ModelSpec) -> dict[str, tuple[str, int, int]]:
    """Each operator of `OPS` on one GPU of the preset's TP group: ("gemm", k, n) for a [tokens, k] x [k, n]
    GEMM, ("norm" | "pointwise", elements moved per token, 0) for a fused elementwise kernel."""
    tp = model.tp
    h = model.hidden_size
    q = model.num_q_heads * model.head_dim // tp
    kv = int(model.kv_heads_per_gpu * model.head_dim)
    inter = model.intermediate_size // tp
    up = (2 if model.gated_mlp else 1) * inter
    return {
        "input_layernorm": ("norm", 2 * h, 0),           # read x, write normed x
        "attn_pre_proj": ("gemm", h, q + 2 * kv),
        "attn_rope": ("pointwise", 2 * (q + kv), 0),     # q and k rotated in place
        "attn_post_proj": ("gemm", q, h),
        "post_attention_layernorm": ("norm", 2 * h, 0),
        "mlp_up_proj": ("gemm", h, up),
        "mlp_act": ("pointwise", up + inter, 0),         # read gate and up, write the product
        "mlp_down_proj": ("gemm", inter, h),
        "add": ("pointwise", 3 * h, 0),                  # residual + out -> residual
    }


def layer_op_times(model: ModelSpec, gpu: GpuSpec, ops: OpTimeModel, tokens: int) -> dict[str, float]:
    """Seconds of each operator in `OPS` for one layer and `tokens` tokens under the per-operator model, its
    constants carried to `gpu` (`OpTimeModel.carried_to`)."""
    _check_tokens(tokens)
    ops = ops.carried_to(gpu)
    return {op: ops.kernel_s(gpu, kind, tokens, a, b, model.dtype_bytes)
            for op, (kind, a, b) in op_shapes(model).items()}


def layer_time(model: ModelSpec, gpu: GpuSpec, ops: OpTimeModel, tokens: int) -> float:
    """Seconds of one layer's non-attention operators for `tokens` tokens under the per-operator model."""
    return sum(layer_op_times(model, gpu, ops, tokens).values())


def op_times(model: ModelSpec, gpu: GpuSpec, profile: CostProfile, tokens: int) -> dict[str, float]:
    """Seconds of each operator in `OPS` under the plain roofline with `profile`'s GEMM efficiencies."""
    _check_tokens(tokens)
    bw = gpu.hbm_bandwidth * profile.gemm_memory_efficiency
    out = {}
    for op, (kind, a, b) in op_shapes(model).items():
        if kind == "gemm":
            compute = 2.0 * tokens * a * b / (gpu.peak_flops * profile.gemm_compute_efficiency)
            out[op] = max(compute, (a * b + tokens * (a + b)) * model.dtype_bytes / bw)
        else:
            out[op] = tokens * a * model.dtype_bytes / bw
    return out


def layer_gemm_time(model: ModelSpec, gpu: GpuSpec, profile: CostProfile, tokens: int) -> float:
    """Seconds the step cost model charges per layer for the GEMMs of `tokens` tokens (no lm head, no attention,
    no host overhead): `max(compute / e_c, memory / e_m)` of `AnalyticCostModel.unit_terms`, per layer."""
    _check_tokens(tokens)
    cost = AnalyticCostModel(model, gpu, profile)
    terms = cost.unit_terms(StepBatch(prefill_tokens=tokens, prefill_seqs=1, sampled_seqs=0))
    head_bytes = model.vocab_size * model.hidden_size * model.dtype_bytes / model.tp
    memory = terms["gemm_memory"] - head_bytes / gpu.hbm_bandwidth  # unit_terms counts the lm head's weights
    assert memory > 0, "the layers' weights must remain"
    return max(terms["gemm_compute"] / profile.gemm_compute_efficiency,
               memory / profile.gemm_memory_efficiency) / model.num_layers
