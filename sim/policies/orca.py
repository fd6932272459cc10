"""Orca-style iteration-level batching over contiguous per-request KV reservations (the PagedAttention
paper's baselines). Each iteration runs every running request's decode together with the whole prompts
of newly admitted ones (selective batching); a request is admitted only when its reservation fits, so
nothing is ever preempted. `orca-max` and `orca-oracle` differ only in what they reserve."""
from __future__ import annotations

from typing import TYPE_CHECKING

from sim.policies.base import StepPlan, admit_waiting

if TYPE_CHECKING:
    from sim.engine import Engine


class OrcaPolicy:
    name = "orca"
    memory = "reserved"
    preemption = "none"
    chunked_prefill = False
    reserve_true_output = False

    def schedule(self, engine: "Engine") -> StepPlan:
        prefills = admit_waiting(engine, engine.config.token_budget)
        return StepPlan(
            prefills=prefills,
            decode=engine.decode_seqs > 0,
            steady=not prefills,
            arrivals_matter=not engine.waiting,
        )
