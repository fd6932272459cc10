"""`sarathi`: Sarathi-Serve's stall-free batching. Every step first decodes every running sequence, then
fills what is left of a token budget (`prefill_chunk_tokens`, Sarathi-Serve's `chunk_size`, 512) with
prefill chunks: unfinished prefills first, then new requests FCFS. A long prompt is split over several
steps instead of stalling decodes. Memory is paged as in `vllm-v0` (the whole prompt is allocated at
admission; recompute preemption of the newest running request, which goes back to the front of the queue),
and the new-request pass runs in every step, one that preempted too. Source: microsoft/sarathi-serve
`sarathi/core/scheduler/sarathi_scheduler.py` (`_schedule`: running decodes, then running prefills and
waiting requests within `chunk_size - num_batched_tokens`) and `base_scheduler.py` (`_preempt`:
`waiting.insert(0, seq)`) @13f16cf."""
from __future__ import annotations

from sim.policies.base import EnginePolicy, SchedulerView, StepPlan, admit_head
from sim.state import RECOMPUTE


class SarathiPolicy(EnginePolicy):
    name = "sarathi"
    memory = "paged"
    preemption = RECOMPUTE
    chunked_prefill = True
    host_engine = "vllm-v0"  # Sarathi-Serve is built on vLLM V0: synchronous, V0's CUDA graphs
    # Sarathi-Serve has no prefix caching; with it on, V0's can_allocate as under `vllm-v0`
    admission_credits_live_hits = False
    settings = frozenset({"prefill_chunk_tokens", "watermark", "enable_prefix_caching"})
    settings_instead = {"max_num_batched_tokens": "prefill_chunk_tokens (decodes and chunks per step)",
                        "chunked_prefill_size": "prefill_chunk_tokens", "max_prefill_tokens": "prefill_chunk_tokens"}

    def schedule(self, sched: SchedulerView) -> StepPlan:
        preempted = sched.reserve_decode(self.preemption)
        # Decodes always run (even past the budget): the budget only limits prefill work.
        budget = max(sched.config.prefill_chunk_tokens - sched.decode_seqs, 0)
        prefills = []
        for group in sched.prefilling:
            if budget <= 0:
                break
            chunk = min(group.prefill_len - group.prefill_done, budget)
            prefills.append((group, chunk))
            budget -= chunk
        seqs, waiting = sched.num_running_seqs, sched.waiting
        while waiting and budget > 0:
            group = waiting[0]
            admitted = admit_head(sched, seqs)
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
            decode=sched.decode_seqs > 0,
            steady=not prefills and not preempted,
            arrivals_matter=not sched.waiting,
        )
