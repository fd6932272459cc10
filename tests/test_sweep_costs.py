"""A sweep's costs: the KV cache is the pool each replay actually uses, so the Pareto front is right."""
from __future__ import annotations

import pandas as pd
import pytest

from analysis.sweep import config_costs
from analysis.sweep_report import pareto_front
from analysis.sweep_spec import SweepConfig
from sim import EngineConfig, replay
from sim.presets import GIB
from traces import generate


@pytest.mark.parametrize("model, gpu", [("llama-2-7b", "a100-40gb"), ("llama-3-70b-tp4", "h100-sxm")])
@pytest.mark.parametrize("policy", ["vllm-v0", "vllm", "sglang", "orca-max"])
def test_kv_cost_is_the_pool_the_replay_uses(model: str, gpu: str, policy: str) -> None:
    engine = {"model": model, "gpu": gpu}
    result = replay(generate(num_requests=2, rate=1.0, seed=0), EngineConfig(**engine), policy=policy)
    blocks = result.summary["kv_blocks_total"]
    block_bytes = result.config["derived_block_bytes"]
    tp = result.config["model_spec"]["tp"]
    costs = config_costs(SweepConfig(index=0, params={"policy": policy}, policy=policy, engine=engine))
    assert costs["kv_gib"] == round(blocks * block_bytes * tp / GIB, 6)
    assert costs["num_gpus"] == tp


def test_a_smaller_pool_at_equal_capacity_dominates() -> None:
    engine = {"model": "llama-2-7b", "gpu": "a100-40gb"}
    kv = {p: config_costs(SweepConfig(index=i, params={"policy": p}, policy=p, engine=engine))["kv_gib"]
          for i, p in enumerate(["vllm", "sglang"])}
    assert kv["sglang"] < kv["vllm"]  # SGLang's own pool: 2,607 blocks against V1's 2,800
    summary = pd.DataFrame({"policy": ["vllm", "sglang"], "kv_gib": [kv["vllm"], kv["sglang"]],
                            "capacity": [1.5, 1.5]})
    assert pareto_front(summary, "kv_gib").tolist() == [False, True]
