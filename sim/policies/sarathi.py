"""`sarathi`: Sarathi-Serve's stall-free batching. Every step first decodes every running sequence, then
fills what is left of a token budget (`prefill_chunk_tokens`) with prefill chunks: unfinished prefills
first, then new requests FCFS. A long prompt is split over several steps instead of stalling decodes.
Memory is paged as in `vllm` (the whole prompt is allocated at admission, recompute preemption); no new
request is admitted in a step that preempted one."""
from __future__ import annotations

from typing import TYPE_CHECKING

from sim.engine_ops import RECOMPUTE
from sim.policies.base import StepPlan, admit_head

if TYPE_CHECKING:
    from sim.engine import Engine


class SarathiPolicy:
    name = "sarathi"
    memory = "paged"
    preemption = RECOMPUTE
    chunked_prefill = True
    reserve_true_output = False

    def schedule(self, engine: "Engine") -> StepPlan:
        preempted = engine.reserve_decode(self.preemption)
        # Decodes always run (even past the budget): the budget only limits prefill work.
        budget = max(engine.config.prefill_chunk_tokens - engine.decode_seqs, 0)
        prefills = []
        for group in engine.prefilling:
            if budget <= 0:
                break
            chunk = min(group.prefill_len - group.prefill_done, budget)
            prefills.append((group, chunk))
            budget -= chunk
        if not preempted:
            seqs, waiting = engine.num_running_seqs, engine.waiting
            while waiting and budget > 0:
                group = waiting[0]
                admitted = admit_head(engine, seqs)
                if admitted is None:
                    continue
                if not admitted:
                    break
                chunk = min(group.prefill_len - group.prefill_done, budget)
                prefills.append((group, chunk))
                budget -= chunk
                seqs += group.n
        return StepPlan(
            prefills=prefills,
            decode=engine.decode_seqs > 0,
            steady=not prefills and not preempted,
            arrivals_matter=not engine.waiting,
        )
