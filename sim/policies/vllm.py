"""`vllm`: vLLM V1's scheduler (vllm 0.33.0) with `vllm serve` defaults; rules and source lines in
docs/sim.md. There are no prefill and decode phases: every step has one token budget
(`max_num_batched_tokens`) shared by decodes and prefill chunks. Running requests are served first (each
decoding sequence's token, then the unfinished prefill chunks in running order), then waiting requests
FCFS, chunked to the leftover budget; nobody is admitted in a step that preempted. A waiting request is
admitted only if its whole current sequence fits (`scheduler_reserve_full_isl`), above V1's watermark
(0 by default). Preemption is by recompute only (V1 has no swap): the last running request goes to the
front of the waiting queue. Prefix caching is on by default. Beam search is not part of V1's engine (the
API server runs it as many 1-token requests), so beam requests are rejected with that reason.
"""
from __future__ import annotations

from dataclasses import fields, replace

from sim.config import EngineConfig
from sim.policies.base import EnginePolicy, SchedulerView, StepPlan, admit_head
from sim.state import RECOMPUTE

# vllm/config/cache.py:215 (gpu_memory_utilization), :257 (enable_prefix_caching);
# vllm/config/scheduler.py:196-201 (watermark 0.0).
V1_DEFAULTS = {"gpu_memory_utilization": 0.92, "enable_prefix_caching": True, "watermark": 0.0}


def serve_limits(config: EngineConfig) -> tuple[int, int]:
    """`vllm serve`'s (max_num_batched_tokens, max_num_seqs) for the GPU: >= 160 GiB 16384/1024; 70-160 GiB
    and not an A100 8192/1024; else 2048/256 (vllm/engine/arg_utils.py:2973-3006)."""
    gpu = config.gpu_spec
    if gpu.memory_gib >= 160:
        return 16384, 1024
    if gpu.memory_gib >= 70 and not gpu.name.startswith("a100"):
        return 8192, 1024
    return 2048, 256


def v1_config(config: EngineConfig) -> EngineConfig:
    """`config` with V1's defaults for every field left at the simulator's default; a setting V1 refuses
    raises a one-line ValueError."""
    defaults = {f.name: f.default for f in fields(EngineConfig)}
    tokens, seqs = serve_limits(config)
    wanted = dict(V1_DEFAULTS, max_num_batched_tokens=tokens, max_num_seqs=seqs)
    if config.backend != "analytic":
        wanted.pop("enable_prefix_caching")  # the execute backend has no prefix cache
    # A field at our default takes V1's (so an explicit watermark=0.01 reads as unset: pass another value).
    changes = {k: v for k, v in wanted.items() if getattr(config, k) == defaults[k]}
    config = replace(config, **changes) if changes else config
    if config.token_budget < config.max_num_seqs:
        # vllm/config/scheduler.py:317-360
        raise ValueError(f"max_num_batched_tokens: {config.token_budget} is smaller than max_num_seqs "
                         f"{config.max_num_seqs}; vLLM V1 refuses this")
    if config.long_prefill_token_threshold > config.context_len:
        raise ValueError(f"long_prefill_token_threshold: {config.long_prefill_token_threshold} exceeds "
                         f"max_model_len {config.context_len}; vLLM V1 refuses this")
    return config


class VllmPolicy(EnginePolicy):
    name = "vllm"
    memory = "paged"
    preemption = RECOMPUTE
    chunked_prefill = True
    beam_search = False
    host_engine = "vllm-v1"  # async scheduling on by default (docs/engines.md), CUDA graphs up to 512

    def configure(self, config: EngineConfig) -> EngineConfig:
        return super().configure(v1_config(config))

    def schedule(self, sched: SchedulerView) -> StepPlan:
        cfg = sched.config
        preempted = sched.reserve_decode(self.preemption)
        budget = cfg.token_budget - sched.decode_seqs
        assert budget >= 0, "max_num_seqs <= max_num_batched_tokens keeps every decode in the budget"
        # A per-request cap, ignored while only one request is running or waiting (scheduler.py:757-763).
        cap = cfg.long_prefill_token_threshold
        if cap <= 0 or len(sched.running) + len(sched.waiting) <= 1:
            cap = budget
        prefills = []
        for group in sched.prefilling:
            if budget <= 0:
                break
            chunk = min(group.prefill_len - group.prefill_done, budget, cap)
            prefills.append((group, chunk))
            budget -= chunk
        if not preempted:  # scheduler.py:1050
            seqs, waiting = sched.num_running_seqs, sched.waiting
            while waiting and budget > 0:
                group = waiting[0]
                admitted = admit_head(sched, seqs)
                if admitted is None:
                    continue
                if not admitted:
                    break
                chunk = min(group.prefill_len - group.prefill_done, budget, cap)
                if chunk > 0:
                    prefills.append((group, chunk))
                budget -= chunk
                seqs += group.n
        return StepPlan(
            prefills=prefills,
            decode=sched.decode_seqs > 0,
            steady=not prefills and not preempted,
            arrivals_matter=not sched.waiting,
        )
