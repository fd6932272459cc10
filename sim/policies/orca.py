"""Orca-style iteration-level batching over contiguous per-request KV buffers (the PagedAttention paper's
baselines, `sim.kv_contiguous`: one buddy-allocated range per sequence). Each iteration runs every running
request's decode together with the whole prompts of newly admitted ones (selective batching); a request is
admitted only when a contiguous range for its reservation is free, so nothing is ever preempted.
`orca-max`, `orca-pow2` and `orca-oracle` differ only in the output they reserve (`output_reservation`)."""
from __future__ import annotations

from sim.policies.base import (WHOLE_PROMPT_INSTEAD, WHOLE_PROMPT_SETTINGS, EnginePolicy, SchedulerView, StepPlan,
                               admit_waiting)


class OrcaPolicy(EnginePolicy):
    name = "orca"
    memory = "contiguous"
    preemption = "none"
    chunked_prefill = False
    output_reservation = "max"  # sim.kv_contiguous.OUTPUT_RESERVATIONS
    host_engine = "eager-sync"  # the paper's baselines: synchronous, no CUDA graphs
    settings = WHOLE_PROMPT_SETTINGS
    settings_instead = WHOLE_PROMPT_INSTEAD

    def schedule(self, sched: SchedulerView) -> StepPlan:
        prefills = admit_waiting(sched, sched.config.token_budget)
        return StepPlan(
            prefills=prefills,
            decode=sched.decode_seqs > 0,
            steady=not prefills,
            arrivals_matter=not sched.waiting,
        )
