"""`vllm-v0`: vLLM's V0 scheduler (0.6-era, with parallel samples and beams forked in the engine; the default
before the V1 engine, see `vllm` for V1). FCFS continuous batching; a step either prefills newly admitted
requests (prefills first: running decodes wait that step) or decodes every running sequence, and no new
prefill runs while any request is swapped out (`_schedule_default`, vllm/core/scheduler.py:1046-1125
@v0.6.6.post1). When a decode needs a block and none is free, the newest running request is preempted
(`running_queue.pop()`, :613): recomputed if it has one sequence, swapped to the CPU pool (`swap_space_gib`)
if it is a forked group (:1533-1547). Victims go back to the front of the queue (`extendleft`). The
watermark (0.01 of the pool) keeps a few blocks free at admission so that running requests can grow
(vllm/core/block_manager.py:108-145)."""
from __future__ import annotations

from sim.config import EngineConfig
from sim.policies.base import EnginePolicy, SchedulerView, StepPlan, admit_waiting, swap_in_swapped
from sim.state import SWAP_GROUPS


class VllmV0Policy(EnginePolicy):
    name = "vllm-v0"
    memory = "paged"
    preemption = SWAP_GROUPS
    chunked_prefill = False
    host_engine = "vllm-v0"  # synchronous: host work adds to each step; CUDA graphs up to 256
    # can_allocate needs every prompt block and credits only free (evictable) cached blocks, as free
    # blocks (vllm/core/block_manager.py:108-145 @v0.6.6.post1)
    admission_credits_live_hits = False
    settings = frozenset({"max_num_batched_tokens", "watermark", "enable_prefix_caching", "swap_space_gib"})
    settings_instead = {"prefill_chunk_tokens": "max_num_batched_tokens (whole prompts, never chunked)",
                        "chunked_prefill_size": "max_num_batched_tokens", "max_prefill_tokens": "max_num_batched_tokens"}

    def engine_settings(self, config: EngineConfig) -> EngineConfig:
        """The settings as they are, but those V0's SchedulerConfig refuses at startup (without chunked
        prefill, which this policy models as off) raise a one-line ValueError: `SchedulerConfig._verify_args`,
        vllm/config.py:1472-1487 at vllm-project/vllm@0004438383ee (v0.6.6.post1: 1465-1480)."""
        config = super().engine_settings(config)
        if config.token_budget < config.context_len:  # vllm/config.py:1473-1481 @0004438383ee
            raise ValueError(f"max_num_batched_tokens: {config.token_budget} is smaller than max_model_len "
                             f"{config.context_len}; vLLM V0 refuses this without chunked prefill (policy "
                             f"sarathi chunks prompts)")
        if config.token_budget < config.max_num_seqs:  # vllm/config.py:1483-1487 @0004438383ee
            raise ValueError(f"max_num_batched_tokens: {config.token_budget} is smaller than max_num_seqs "
                             f"{config.max_num_seqs}; vLLM V0 refuses this")
        return config

    def schedule(self, sched: SchedulerView) -> StepPlan:
        # Swapped requests go first: no new prefills while any wait to come back.
        if not sched.swapped:
            prefills = admit_waiting(sched, sched.config.token_budget)
            if prefills:
                return StepPlan(prefills=prefills)
        preempted = sched.reserve_decode(self.preemption)
        swapped_in = swap_in_swapped(sched) if sched.swapped and not preempted else 0
        return StepPlan(
            decode=True,
            steady=not preempted and not swapped_in,
            arrivals_matter=not sched.waiting and not sched.swapped,
        )
