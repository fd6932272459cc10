"""The policy interface: `schedule(engine) -> StepPlan`, called once per engine step, plus the FCFS
admission every policy shares. A policy decides; the engine's methods do the memory work."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from memory import AllocStatus

from sim.state import Group

if TYPE_CHECKING:
    from sim.engine import Engine


@dataclass(slots=True)
class StepPlan:
    """One step: prefill chunks `(group, tokens)`, and whether every decoding sequence decodes.

    `steady`: this is a pure decode step, nothing was admitted, preempted or swapped, and the queue heads
    that were tried stay blocked while only decodes run (free blocks only shrink, the batch does not
    change) - so the same plan repeats until a request finishes or the pool runs out. `arrivals_matter`:
    a request arriving meanwhile could change the plan (e.g. the waiting queue was empty).
    """

    prefills: list[tuple[Group, int]] = field(default_factory=list)
    decode: bool = False
    steady: bool = False
    arrivals_matter: bool = False


class Policy(Protocol):
    name: str
    memory: str               # "paged" (block manager on demand) or "reserved" (contiguous up front)
    preemption: str           # "recompute", "swap" or "none"
    chunked_prefill: bool     # prompts may exceed the per-step token budget
    reserve_true_output: bool  # reserved memory: prompt + true output (oracle) instead of the maximum

    def schedule(self, engine: "Engine") -> StepPlan: ...


def admit_head(engine: "Engine", seqs: int) -> bool | None:
    """Admit the head of the waiting queue if `max_num_seqs` (with `seqs` sequences running) and the KV
    pool allow. True: admitted; False: it must wait, so admission stops (FCFS); None: it can never fit and
    was rejected (removed from the queue), so the next request may be tried."""
    group = engine.waiting[0]
    if seqs + group.n > engine.config.max_num_seqs:
        return False
    status = engine.admission_status(group)
    if status is AllocStatus.LATER:
        return False
    if status is AllocStatus.NEVER:
        engine.reject(engine.waiting.popleft(), "its KV blocks can never fit the pool")
        return None
    engine.admit(group)
    return True


def admit_waiting(engine: "Engine", token_budget: int) -> list[tuple[Group, int]]:
    """FCFS from the waiting queue: whole prefills while the token budget, `max_num_seqs` and the KV
    pool allow; stop at the first request that does not fit (no skipping ahead)."""
    admitted: list[tuple[Group, int]] = []
    tokens, seqs = 0, engine.num_running_seqs
    waiting = engine.waiting
    while waiting:
        group = waiting[0]
        need = engine.prefill_need(group)
        # A recompute longer than the budget still runs, alone: it can never be split.
        if admitted and tokens + need > token_budget:
            break
        admitted_head = admit_head(engine, seqs)
        if admitted_head is None:
            continue
        if not admitted_head:
            break
        admitted.append((group, need))
        tokens += need
        seqs += group.n
    return admitted


def swap_in_swapped(engine: "Engine") -> int:
    """FCFS from the swapped queue while the pool (above the watermark) and `max_num_seqs` allow."""
    count = 0
    while engine.swapped:
        group = engine.swapped[0]
        if engine.num_running_seqs + group.n > engine.config.max_num_seqs or not engine.can_swap_in(group):
            break
        engine.swap_in(group)
        count += 1
    return count
