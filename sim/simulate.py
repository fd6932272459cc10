"""`replay(trace, config, policy, seed)`: run one policy over a trace and return its tables."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sim.config import DEFAULT_POLICY, EngineConfig
from sim.engine import Engine
from sim.policies import make_policy
from sim.result import SimResult
from sim.schema import STEP_COLUMNS
from sim.tables import inter_token_gaps, requests_table, summarize

if TYPE_CHECKING:
    from traces.trace import Trace


def replay(trace: Trace, config: EngineConfig, policy: str = DEFAULT_POLICY, seed: int = 0,
           progress: bool = False) -> SimResult:
    """Replay `trace` (a `traces.Trace`) on one engine under `policy`. Same inputs and seed give the same
    tables (the summary's `wall_s` aside). Requests that can never run are rejected with a reason."""
    started = time.perf_counter()
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config: expected an EngineConfig, got {type(config).__name__}")
    policy_obj = make_policy(policy)
    config = policy_obj.configure(config)  # e.g. vLLM V1's serve defaults under `vllm`
    engine = Engine(trace, config, policy_obj, seed=seed, progress=progress)
    engine.run()
    scheduler, timer = engine.scheduler, engine.timer
    steps, decode_end, _ = scheduler.recorder.build(config.block_size, config.kv_blocks,
                                                    scheduler.queued_arrivals_ns())
    steps = steps[list(STEP_COLUMNS)]
    groups = scheduler.groups
    requests = requests_table(groups)
    itl_s = inter_token_gaps(scheduler.token_streams(), decode_end)
    summary = {
        "policy": policy, "model": config.model, "gpu": config.gpu, "seed": seed, "backend": config.backend,
        **summarize(steps, requests, itl_s, kv_blocks_total=config.kv_blocks, block_size=config.block_size),
        "engine_requests": scheduler.num_engine_requests,
        "num_cpu_blocks": scheduler.kv.bm.num_cpu_blocks,
        "swap_space_exhausted": scheduler.swap_space_exhausted,
        "swapped_recomputed": scheduler.swapped_recomputed,
        "num_records": len(scheduler.recorder.records),
        "fast_forward": timer.fast_forward,
        "prefix_caching": bool(config.enable_prefix_caching),
        **scheduler.kv.summary(),
        **timer.summary(),
    }
    wall = time.perf_counter() - started
    summary["wall_s"] = wall
    summary["requests_per_wall_s"] = len(requests) / wall if wall > 0 else float("nan")
    summary["tokens_per_wall_s"] = summary["total_generated_tokens"] / wall if wall > 0 else float("nan")
    config_dict = config.to_dict() | {"policy": policy, "seed": seed, "cost_model": timer.describe(),
                                      "trace": getattr(trace, "source", "<memory>"),
                                      "trace_notices": list(getattr(trace, "notices", []))}
    return SimResult(requests=requests, steps=steps, summary=summary, config=config_dict, itl_s=itl_s,
                     extra=timer.tables())
