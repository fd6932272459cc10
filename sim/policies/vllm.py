"""`vllm`: vLLM's default (v0) scheduler. FCFS continuous batching; a step either prefills newly admitted
requests (prefills first: running decodes wait that step) or decodes every running sequence. When a
decode needs a block and none is free, the newest running request is preempted and later recomputed.
The watermark keeps a few blocks free at admission so that running requests can grow."""
from __future__ import annotations

from typing import TYPE_CHECKING

from sim.engine_ops import RECOMPUTE
from sim.policies.base import StepPlan, admit_waiting, swap_in_swapped

if TYPE_CHECKING:
    from sim.engine import Engine


class VllmPolicy:
    name = "vllm"
    memory = "paged"
    preemption = RECOMPUTE
    chunked_prefill = False
    reserve_true_output = False

    def schedule(self, engine: "Engine") -> StepPlan:
        # Swapped requests go first: no new prefills while any wait to come back.
        if not engine.swapped:
            prefills = admit_waiting(engine, engine.config.token_budget)
            if prefills:
                return StepPlan(prefills=prefills)
        preempted = engine.reserve_decode(self.preemption)
        swapped_in = swap_in_swapped(engine) if engine.swapped and not preempted else 0
        return StepPlan(
            decode=True,
            steady=not preempted and not swapped_in,
            arrivals_matter=not engine.waiting and not engine.swapped,
        )
