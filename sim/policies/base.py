"""The policy interface: `schedule(sched) -> StepPlan`, called once per engine step, over a
`SchedulerView` (the scheduler's state, read only, and its verbs), plus the FCFS admission every policy
shares. A policy decides; the scheduler's verbs do the memory work."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from memory import AllocStatus

from sim.config import EngineConfig
from sim.host_time import with_engine_host
from sim.kv_reserved import refuse_prefix_caching
from sim.state import RECOMPUTE, Group


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


class SchedulerView(Protocol):
    """What a policy sees: queues and counters to read (never to mutate), and the verbs that change them.

    The verbs follow the queues' order (FCFS): `admit` and `reject_head` take the waiting head, `swap_in`
    the swapped head; `reserve_decode` takes this step's decode slots, preempting the newest running
    requests while the pool runs short.
    """

    config: EngineConfig
    waiting: deque[Group]       # arrived, not admitted (preempted-by-recompute requests at the front)
    running: list[Group]        # admitted: prefilling or decoding, in arrival order (V1: admission order), and
                                # with a finish lag those finished in the last step, still held
    held: list[tuple[Group, int]]  # finished in the step in flight, their slots and blocks not yet returned
                                # (`Policy.finish_lags_a_step`); a plan with nothing to run while some are
                                # held makes the scheduler return them and call `schedule` again
    swapped: deque[Group]       # preempted to the CPU pool
    prefilling: list[Group]     # running requests whose (re)prefill is not complete, in admission order
    num_running_seqs: int       # sequences of running requests (against max_num_seqs)
    decode_seqs: int            # sequences decoding

    def prefill_need(self, group: Group) -> int: ...

    def admission_status(self, group: Group) -> AllocStatus: ...

    def admit(self, group: Group) -> None: ...

    def reject_head(self, reason: str) -> None: ...

    def reserve_decode(self, mode: str = RECOMPUTE) -> int: ...

    # vLLM V1's running loop: the whole step's memory at once, else request by request in running order
    def reserve_step(self, chunks: list[tuple[Group, int]]) -> bool: ...

    def reserve_slots(self, group: Group, tokens: int) -> bool: ...

    def preempt(self, group: Group) -> None: ...

    def allocate_chunk(self, group: Group, tokens: int) -> bool: ...

    def swap_in_status(self, group: Group) -> AllocStatus: ...

    def fail_swapped(self, reason: str) -> None: ...

    def swap_in(self, group: Group) -> None: ...

    # ---- for policies that order the queue or pick their own victims (sglang) ----
    G: int                      # decode steps so far

    def prefill_tokens(self, group: Group) -> int: ...

    def sort_waiting(self, key: Callable[[Group], Any]) -> None: ...

    def touch_prefix(self, group: Group) -> None: ...

    def evictable_prefix_tokens(self, group: Group) -> int: ...

    def decode_need(self) -> int: ...

    def num_free_blocks(self) -> int: ...

    def retract(self, group: Group) -> None: ...

    def abort(self, group: Group, reason: str) -> None: ...


class Policy(Protocol):
    name: str
    memory: str               # a layout in sim.kv_layouts.LAYOUTS: "paged", "paged-per-chunk", "reserved", "contiguous"
    preemption: str           # a mode of sim.state: RECOMPUTE, SWAP or SWAP_GROUPS (V0: swap forked groups)
    chunked_prefill: bool     # prompts may exceed the per-step token budget
    reserve_true_output: bool  # reserved memory: prompt + true output (oracle) instead of the maximum
    beam_search: bool         # the engine runs beam search itself (else its front end's requests if the policy
                              # has `beam_search_as_requests`, as vllm; else beam requests are rejected)
    host_engine: str          # whose host time, overlap and CUDA graphs (a name in sim.host_time.ENGINES)
    running_by_admission: bool     # `running` in admission order (V1), not arrival order
    samples_as_requests: bool      # parallel samples as n one-sample requests (V1), not a forked group
    beam_search_as_requests: bool  # beam search as the API server's rounds of 1-token requests (V1)
    prompt_request_first: bool     # a parallel-sampling request's samples wait for its prompt alone (SGLang)
    finish_lags_a_step: bool       # with async scheduling, a finished request's slot and blocks are freed
                                   # only after the next step is scheduled (V1; SGLang's overlap scheduler)
    admission_credits_live_hits: bool  # admission counts prefix hits shared with a live request as not taken
                                       # (V1, SGLang); V0 counts every prompt block as needed
    watermark_while_idle: bool     # admission keeps the watermark free on an idle engine too (V0; SGLang has
                                   # none, so the simulator's applies as V0's); V1 only while requests run
    settings: frozenset[str]  # the settings of sim.policies.settings.POLICY_SETTINGS it reads
    settings_instead: dict[str, str]  # what it reads in place of some it ignores (for the warning)

    def configure(self, config: EngineConfig) -> EngineConfig:
        """The engine's settings under this policy (its engine's defaults for fields left at ours)."""

    def schedule(self, sched: SchedulerView) -> StepPlan: ...

    def idle_refusal(self, sched: SchedulerView, group: Group) -> str:
        """Why `schedule` admits `group` not even on an idle engine (the reason its rejection records), in the
        engine's own terms where a policy knows them."""


# The settings a policy of whole prompts and no preemption (orca, static) reads, and what it reads in place
# of the chunking and swap settings it ignores.
WHOLE_PROMPT_SETTINGS = frozenset({"max_num_batched_tokens", "max_output_tokens"})
WHOLE_PROMPT_INSTEAD = {"prefill_chunk_tokens": "max_num_batched_tokens (whole prompts, never chunked)",
                        "chunked_prefill_size": "max_num_batched_tokens", "max_prefill_tokens": "max_num_batched_tokens",
                        "swap_space_gib": "no preemption"}


class EnginePolicy:
    """What most policies share: the simulator's settings are already their engine's (`engine_settings`
    keeps them; `vllm` overrides it with V1's defaults), `configure` adds the engine's host-time settings,
    beam search runs in the engine, and reservations (if any) cover the maximum output."""

    reserve_true_output = False
    beam_search = True
    host_engine: str
    running_by_admission = False   # `running` in admission order (V1), not arrival order
    samples_as_requests = False    # parallel samples as n one-sample requests (V1), not a forked group
    beam_search_as_requests = False  # beam search as the API server's rounds of 1-token requests (V1)
    prompt_request_first = False     # a parallel-sampling request's samples wait for its prompt alone (SGLang)
    finish_lags_a_step = False       # a finished request frees its slot and blocks at once
    admission_credits_live_hits = True  # live shared prefix hits are not taken at admission (V1, SGLang)
    watermark_while_idle = True         # the admission watermark holds on an idle engine too (not V1)
    settings_instead: dict[str, str] = {}

    def configure(self, config: EngineConfig) -> EngineConfig:
        """The engine's settings (`engine_settings`) with its host-time settings added."""
        return with_engine_host(self.engine_settings(config), self.host_engine)

    def idle_refusal(self, sched: SchedulerView, group: Group) -> str:
        return "cannot be scheduled even on an idle engine"

    def engine_settings(self, config: EngineConfig) -> EngineConfig:
        """The simulator's settings as this engine takes them: as they are; settings of vllm only are refused."""
        if config.scheduling_policy != "fcfs":
            raise ValueError(f"scheduling_policy: {config.scheduling_policy!r} is modelled for policy vllm only, "
                             f"not {self.name!r}")
        if self.memory in ("contiguous", "reserved"):  # refused here too, so before any warning of ours
            refuse_prefix_caching(config, self.name)
        if config.enable_chunked_prefill is not None:
            raise ValueError(f"enable_chunked_prefill: a vllm setting; policy {self.name!r} chunks "
                             f"{'always' if self.chunked_prefill else 'never'}")
        return config


def admit_head(sched: SchedulerView, seqs: int) -> bool | None:
    """Admit the head of the waiting queue if `max_num_seqs` (with `seqs` sequences running) and the KV
    pool allow. True: admitted; False: it must wait, so admission stops (FCFS); None: it can never fit and
    was rejected (removed from the queue), so the next request may be tried."""
    group = sched.waiting[0]
    if seqs + group.n > sched.config.max_num_seqs:
        return False
    status = sched.admission_status(group)
    if status is AllocStatus.LATER:
        return False
    if status is AllocStatus.NEVER:
        sched.reject_head("its KV blocks can never fit the pool")
        return None
    sched.admit(group)
    return True


def admit_waiting(sched: SchedulerView, token_budget: int) -> list[tuple[Group, int]]:
    """FCFS from the waiting queue: whole prefills while the token budget, `max_num_seqs` and the KV
    pool allow; stop at the first request that does not fit (no skipping ahead)."""
    admitted: list[tuple[Group, int]] = []
    tokens, seqs = 0, sched.num_running_seqs
    waiting = sched.waiting
    while waiting:
        group = waiting[0]
        need = sched.prefill_need(group)
        # A recompute longer than the budget still runs, alone: it can never be split.
        if admitted and tokens + need > token_budget:
            break
        admitted_head = admit_head(sched, seqs)
        if admitted_head is None:
            continue
        if not admitted_head:
            break
        admitted.append((group, need))
        tokens += need
        seqs += group.n
    return admitted


def swap_in_swapped(sched: SchedulerView) -> int:
    """FCFS from the swapped queue while the pool (above the watermark) and `max_num_seqs` allow; a head
    that can never fit the pool fails, as V0 fails it (core/scheduler.py:715-734 @v0.6.6.post1)."""
    count = 0
    while sched.swapped:
        group = sched.swapped[0]
        status = sched.swap_in_status(group)
        if status is AllocStatus.NEVER:
            sched.fail_swapped(f"its {group.n} sequences need more KV blocks than the pool has to swap back in "
                               f"(vLLM V0 fails such a request)")
            continue
        if status is AllocStatus.LATER or sched.num_running_seqs + group.n > sched.config.max_num_seqs:
            break
        sched.swap_in(group)
        count += 1
    return count
