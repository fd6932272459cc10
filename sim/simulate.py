"""`replay(trace, config, policy, seed)`: run one policy over a trace and return its tables."""
from __future__ import annotations

import time

from sim.config import EngineConfig
from sim.engine import Engine
from sim.kv_prefix import no_prefix_summary
from sim.policies import make_policy
from sim.records import STEP_COLUMNS
from sim.result import SimResult
from sim.tables import inter_token_gaps, requests_table, summarize


def replay(trace, config: EngineConfig, policy: str = "vllm", seed: int = 0, progress: bool = False) -> SimResult:
    """Replay `trace` (a `traces.Trace`) on one engine under `policy`. Same inputs and seed give the same
    tables (the summary's `wall_s` aside). Requests that can never run are rejected with a reason."""
    started = time.perf_counter()
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config: expected an EngineConfig, got {type(config).__name__}")
    engine = Engine(trace, config, make_policy(policy), seed=seed, progress=progress)
    engine.run()
    steps, decode_end, _ = engine.recorder.build(config.block_size, config.kv_blocks, engine.queued_arrivals_ns())
    steps = steps[list(STEP_COLUMNS)]
    groups = engine.groups
    requests = requests_table(groups)
    itl_s = inter_token_gaps(groups, decode_end)
    summary = {
        "policy": policy, "model": config.model, "gpu": config.gpu, "seed": seed, "backend": config.backend,
        **summarize(steps, requests, itl_s, kv_blocks_total=config.kv_blocks, block_size=config.block_size),
        "num_cpu_blocks": engine.kv.bm.num_cpu_blocks,
        "num_records": engine.num_segments,
        "fast_forward": engine._fast_forward,
        "prefix_caching": config.enable_prefix_caching,
    }
    prefix = getattr(engine.kv, "prefix", None)
    summary.update(no_prefix_summary() if prefix is None else prefix.summary())
    extra = {}
    if engine.executor is not None:
        summary.update(engine.executor.summary())
        extra["exec_steps.csv"] = engine.executor.steps_table()
    wall = time.perf_counter() - started
    summary["wall_s"] = wall
    summary["requests_per_wall_s"] = len(requests) / wall if wall > 0 else float("nan")
    summary["tokens_per_wall_s"] = summary["total_generated_tokens"] / wall if wall > 0 else float("nan")
    cost_model = engine.cost.describe() if engine.executor is None else \
        engine.executor.describe() | {"predictions": engine.cost.describe()}
    config_dict = config.to_dict() | {"policy": policy, "seed": seed, "cost_model": cost_model,
                                      "trace": getattr(trace, "source", "<memory>"), "trace_notices": list(getattr(trace, "notices", []))}
    return SimResult(requests=requests, steps=steps, summary=summary, config=config_dict, itl_s=itl_s, extra=extra)
