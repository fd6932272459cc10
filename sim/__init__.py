"""pagedlab sim: a simpy discrete-event simulator of one serving engine over the real block manager.

    from sim import EngineConfig, replay
    result = replay(trace, EngineConfig(model="llama-3-8b", gpu="h100-sxm"), policy="vllm-v0", seed=0)
    result.requests, result.steps, result.summary, result.itl_s; result.write("out/")

Exports resolve lazily: the `pagedlab` dispatcher lives in `sim.cli`, so importing this package must
not pull in numpy, pandas or simpy for every subcommand.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.config import EngineConfig
    from sim.cost import AnalyticCostModel, CostProfile, StepBatch
    from sim.policies import POLICIES
    from sim.presets import GPUS, MODELS, GpuSpec, ModelSpec
    from sim.simulate import replay
    from sim.result import SimResult

_EXPORTS = {
    "EngineConfig": "sim.config",
    "AnalyticCostModel": "sim.cost",
    "CostProfile": "sim.cost",
    "StepBatch": "sim.cost",
    "POLICIES": "sim.policies",
    "GPUS": "sim.presets",
    "MODELS": "sim.presets",
    "GpuSpec": "sim.presets",
    "ModelSpec": "sim.presets",
    "replay": "sim.simulate",
    "SimResult": "sim.result",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # resolve once
        return value
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
