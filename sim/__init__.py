"""pagedlab sim: a simpy discrete-event simulator of one serving engine over the real block manager.

    from sim import EngineConfig, replay
    result = replay(trace, EngineConfig(model="llama-3-8b", gpu="h100-sxm"), policy="vllm", seed=0)
    result.requests, result.steps, result.summary, result.itl_s; result.write("out/")
"""
from sim.config import EngineConfig
from sim.cost import AnalyticCostModel, CostProfile, StepBatch, StepCostModel
from sim.policies import POLICIES
from sim.presets import GPUS, MODELS, GpuSpec, ModelSpec
from sim.replay import replay
from sim.result import SimResult

__all__ = [
    "AnalyticCostModel", "CostProfile", "EngineConfig", "GPUS", "GpuSpec", "MODELS", "ModelSpec", "POLICIES",
    "SimResult", "StepBatch", "StepCostModel", "replay",
]
