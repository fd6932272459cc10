"""Published achievable HBM bandwidth per GPU preset: what carries a memory efficiency fitted on one GPU to another.

A memory efficiency of `sim.gemm_time.OpTimeModel` is a fraction of the fitted GPU's datasheet bandwidth. Another
card's memory system reaches another fraction of its own datasheet number (HBM2e against HBM3/HBM3e, another
memory controller), so the datasheet alone carries the constant off by that difference. One benchmark run on
all three cards gives it: the Azure AI benchmarking guide's STREAM-style "HBM Bandwidth" microbenchmark on Azure
VMs with A100-SXM4-80GB, H100 80GB HBM3 and H200 141GB GPUs. The efficiency is scaled by the ratio of the two
cards' measured-to-datasheet fractions; Copy (one read and one write per element) stands for the fused
elementwise kernels, Dot (reads only) for a GEMM streaming its weights. Nothing here comes from the data the
model is validated against (docs/validation.md, case 1).
"""
from __future__ import annotations

from dataclasses import dataclass

from sim.presets import GpuSpec

KERNELS: tuple[str, ...] = ("copy", "dot")
_GUIDE = "github.com/Azure/AI-benchmarking-guide"


@dataclass(frozen=True)
class MeasuredBandwidth:
    copy: float  # bytes/s, STREAM Copy
    dot: float   # bytes/s, STREAM Dot
    source: str


MEASURED: dict[str, MeasuredBandwidth] = {
    "a100-80gb": MeasuredBandwidth(1.61e12, 1.75e12,
                                   f"{_GUIDE} @3bb66ca Azure_Results/ND_A100_v4_results.md (A100-SXM4-80GB)"),
    "h100-sxm": MeasuredBandwidth(2.90e12, 3.18e12,
                                  f"{_GUIDE} @f350e7e 'Azure Results/ND_H100_v5_results.md' (H100 80GB HBM3)"),
    "h200": MeasuredBandwidth(4.01e12, 4.48e12, f"{_GUIDE} @7f20e5f Azure_Results/ND_H200_v5_results.md (H200 141GB)"),
}


def bandwidth_scale(target: GpuSpec, reference: GpuSpec, kernel: str) -> float:
    """(target's measured / datasheet bandwidth) / (reference's): > 1 when the target's memory system gets closer
    to its datasheet number than the reference's. 1.0 when either card has no measurement."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel: unknown name {kernel!r}; valid names: {', '.join(KERNELS)}")
    if target.name not in MEASURED or reference.name not in MEASURED:
        return 1.0
    fraction = {g.name: getattr(MEASURED[g.name], kernel) / g.hbm_bandwidth for g in (target, reference)}
    return fraction[target.name] / fraction[reference.name]
