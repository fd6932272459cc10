"""Operator times with a transition region: a smooth roofline per GEMM plus a launch floor, and memory-bound
elementwise kernels with their own floor.

A GEMM of a [tokens, k] activation with a [k, n] weight takes

    t = launch + (c^p + m^p)^(1/p),   c = 2 tokens k n / (peak_flops * e_c),
                                      m = (k n + tokens (k + n)) * dtype_bytes / (hbm_bandwidth * e_m)

`p` sets how sharply the memory-bound regime (weights streamed once) turns into the compute-bound one: as
p -> inf this is the plain roofline `max(c, m)`, at p = 1 their sum. For large `tokens` the time tends to the
compute line `c`, at one token to the weight-streaming line `m`, each plus `launch`. A fused elementwise
kernel (RMSNorm, residual add, SiLU-and-mul, rotary embedding, one read and one write of each tensor, as vLLM
runs them) takes `launch + bytes / (hbm_bandwidth * e)`, with one pair of constants for reductions (norms)
and one for pointwise kernels.

The constants are fractions of the datasheet peak and seconds per launch, fitted on our own per-operator grid
(`data/ops/`, `python -m sim.ops_fit`), never on validation data. Another GPU gets them through its datasheet
`peak_flops` and `hbm_bandwidth` (`sim.presets.GPUS`) and, for the memory efficiencies, through the published
fraction of its datasheet bandwidth its memory system reaches against the fitted GPU's (`carried_to`,
`sim.hbm_measured`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sim.hbm_measured import bandwidth_scale
from sim.json_profile import FieldError, check_constants, load_json_dataclass
from sim.presets import GPUS, GpuSpec, lookup

OPS_PROFILE_DIR = Path(__file__).with_name("profiles") / "ops"


@dataclass(frozen=True)
class OpTimeModel:
    """Constants of the per-operator model (efficiencies are fractions of the datasheet peak)."""

    name: str = "roofline"
    description: str = ""
    gemm_compute_efficiency: float = 0.7
    gemm_memory_efficiency: float = 0.85
    gemm_smoothness: float = 4.0     # p of the p-norm between the compute and memory lines
    gemm_launch_s: float = 0.0       # per GEMM kernel
    norm_memory_efficiency: float = 0.85
    norm_launch_s: float = 0.0
    pointwise_memory_efficiency: float = 0.85
    pointwise_launch_s: float = 0.0
    fitted_gpu: str = ""             # the GPU preset whose datasheet peaks the efficiencies are fractions of

    def __post_init__(self) -> None:
        if self.fitted_gpu:
            lookup(f"op time model {self.name}: fitted_gpu", GPUS, self.fitted_gpu)
        check_constants(self, f"op time model {self.name}", skip=("name", "description", "fitted_gpu"))
        if not self.gemm_smoothness >= 1:
            raise FieldError(f"op time model {self.name}", "gemm_smoothness",
                             f"must be >= 1, got {self.gemm_smoothness!r}")

    @classmethod
    def load(cls, name_or_path: str) -> "OpTimeModel":
        """A fitted model by name (`sim/profiles/ops/<name>.json`) or by path to a JSON file."""
        return load_json_dataclass(cls, name_or_path, OPS_PROFILE_DIR, "op_model")

    def carried_to(self, gpu: GpuSpec) -> "OpTimeModel":
        """The constants for `gpu`: memory efficiencies scaled by how much closer to its datasheet bandwidth its
        memory system gets than the fitted GPU's (`sim.hbm_measured`; Dot for GEMMs, Copy for elementwise
        kernels, capped at 1). Unchanged on the fitted GPU, without a fitted GPU, or without a measurement."""
        if not self.fitted_gpu or self.fitted_gpu == gpu.name:
            return self
        fitted = GPUS[self.fitted_gpu]
        reads, copies = bandwidth_scale(gpu, fitted, "dot"), bandwidth_scale(gpu, fitted, "copy")
        return replace(self, gemm_memory_efficiency=min(1.0, self.gemm_memory_efficiency * reads),
                       norm_memory_efficiency=min(1.0, self.norm_memory_efficiency * copies),
                       pointwise_memory_efficiency=min(1.0, self.pointwise_memory_efficiency * copies))

    # ---- the lines the smooth model runs between --------------------------------------------------------
    def gemm_compute_s(self, gpu: GpuSpec, tokens: float, k: int, n: int) -> float:
        return 2.0 * tokens * k * n / (gpu.peak_flops * self.gemm_compute_efficiency)

    def gemm_memory_s(self, gpu: GpuSpec, tokens: float, k: int, n: int, dtype_bytes: int = 2) -> float:
        """Weights, input and output cross HBM once."""
        return (k * n + tokens * (k + n)) * dtype_bytes / (gpu.hbm_bandwidth * self.gemm_memory_efficiency)

    # ---- operator times ----------------------------------------------------------------------------------
    def gemm_s(self, gpu: GpuSpec, tokens: float, k: int, n: int, dtype_bytes: int = 2) -> float:
        """Seconds of one [tokens, k] x [k, n] GEMM (0 for no tokens: the kernel is not launched)."""
        if tokens <= 0:
            return 0.0
        c = self.gemm_compute_s(gpu, tokens, k, n)
        m = self.gemm_memory_s(gpu, tokens, k, n, dtype_bytes)
        p = self.gemm_smoothness
        hi = max(c, m)  # scaled so that large p cannot overflow
        return self.gemm_launch_s + hi * ((c / hi) ** p + (m / hi) ** p) ** (1.0 / p)

    def norm_s(self, gpu: GpuSpec, nbytes: float) -> float:
        """A fused normalization kernel moving `nbytes` (0 bytes: not launched)."""
        if nbytes <= 0:
            return 0.0
        return self.norm_launch_s + nbytes / (gpu.hbm_bandwidth * self.norm_memory_efficiency)

    def pointwise_s(self, gpu: GpuSpec, nbytes: float) -> float:
        """A fused pointwise kernel moving `nbytes` (0 bytes: not launched)."""
        if nbytes <= 0:
            return 0.0
        return self.pointwise_launch_s + nbytes / (gpu.hbm_bandwidth * self.pointwise_memory_efficiency)

    def kernel_s(self, gpu: GpuSpec, kind: str, tokens: float, a: int, b: int = 0, dtype_bytes: int = 2) -> float:
        """One operator by kind: ("gemm", tokens, k, n) or ("norm" | "pointwise", tokens, elements per token)."""
        if kind == "gemm":
            return self.gemm_s(gpu, tokens, a, b, dtype_bytes)
        if kind == "norm":
            return self.norm_s(gpu, tokens * a * dtype_bytes)
        if kind == "pointwise":
            return self.pointwise_s(gpu, tokens * a * dtype_bytes)
        raise ValueError(f"kind: unknown name {kind!r}; valid names: gemm, norm, pointwise")
