"""`static`: request-level batching (FasterTransformer, early HF serving). When the engine is empty it
admits a batch FCFS (token budget, `max_num_seqs`, contiguous max-length reservations as in `orca-max`)
and prefills it in one step; the batch then decodes until its last request finishes. Finished requests
leave the batch, but nobody joins it: a request arriving meanwhile waits for the whole batch."""
from __future__ import annotations

from sim.policies.base import (WHOLE_PROMPT_INSTEAD, WHOLE_PROMPT_SETTINGS, EnginePolicy, SchedulerView, StepPlan,
                               admit_waiting)


class StaticPolicy(EnginePolicy):
    name = "static"
    memory = "reserved"
    preemption = "none"
    chunked_prefill = False
    host_engine = "eager-sync"  # FasterTransformer-style: synchronous, no CUDA graphs
    settings = WHOLE_PROMPT_SETTINGS
    settings_instead = WHOLE_PROMPT_INSTEAD

    def schedule(self, sched: SchedulerView) -> StepPlan:
        if not sched.running:
            return StepPlan(prefills=admit_waiting(sched, sched.config.token_budget))
        return StepPlan(decode=True, steady=True, arrivals_matter=False)
