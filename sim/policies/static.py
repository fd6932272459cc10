"""`static`: request-level batching (FasterTransformer, early HF serving). When the engine is empty it
admits a batch FCFS (token budget, `max_num_seqs`, contiguous max-length reservations as in `orca-max`)
and prefills it in one step; the batch then decodes until its last request finishes. Finished requests
leave the batch, but nobody joins it: a request arriving meanwhile waits for the whole batch."""
from __future__ import annotations

from sim.policies.base import EnginePolicy, SchedulerView, StepPlan, admit_waiting


class StaticPolicy(EnginePolicy):
    name = "static"
    memory = "reserved"
    preemption = "none"
    chunked_prefill = False
    host_engine = "eager-sync"  # FasterTransformer-style: synchronous, no CUDA graphs
    settings = frozenset({"max_num_batched_tokens", "max_output_tokens"})
    settings_instead = {"prefill_chunk_tokens": "max_num_batched_tokens (whole prompts, never chunked)",
                        "chunked_prefill_size": "max_num_batched_tokens", "max_prefill_tokens": "max_num_batched_tokens",
                        "swap_space_gib": "no preemption"}

    def schedule(self, sched: SchedulerView) -> StepPlan:
        if not sched.running:
            return StepPlan(prefills=admit_waiting(sched, sched.config.token_budget))
        return StepPlan(decode=True, steady=True, arrivals_matter=False)
