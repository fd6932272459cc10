"""`SchedulerOutput`: what one engine step runs, as the scheduler decided it (a plain record).

The scheduler has already done the step's memory work (admissions, decode slots, preemptions, swaps,
copy-on-write) when it returns this; the step timer turns it into a duration, and `Scheduler.update`
applies its effects (prefill progress, first tokens, finished requests) once the step has run.
"""
from __future__ import annotations

from typing import Protocol

from memory import BlockManager

from sim.cost import StepBatch
from sim.state import Group


class RunningView(Protocol):
    """What a step timer may read of the scheduler besides the output it times: the running requests and
    the block tables (the execute backend builds its exact batch from them; the analytic timer needs none).
    `sim.scheduler.Scheduler` provides it."""

    running: list[Group]
    decode_seqs: int        # sequences decoding in the next step (lazy ones included)
    bs: int                 # block size

    @property
    def block_manager(self) -> BlockManager: ...


class SchedulerOutput:
    """One step (or, when `max_decode_steps > 1`, up to that many identical pure decode steps)."""

    # Counts that most steps leave at zero are class defaults: a step sets only what it has.
    num_decode_seqs = 0         # sequences decoding one token each (0: no decode)
    decode_context = 0          # their summed context in the (first) step
    max_decode_steps = 1        # >= 1: identical pure decode steps this output may stand for
    arrivals_matter = False     # an arrival during such a run would change the plan
    prefill_tokens = 0
    prefill_attn_pairs = 0.0    # sum over chunks of q * (c + (q + 1) / 2)
    prefill_kv_tokens = 0       # sum over chunks of c + q
    sampled_seqs = 0            # sequences sampling a token (decodes, finished prefills)
    cow_copies = 0
    preemptions = swaps_out = swaps_in = 0
    swap_out_blocks = swap_in_blocks = 0
    num_waiting = 0             # waiting queue once the step is planned (arrivals join later)

    def __init__(self, g: int, step_index: int) -> None:
        self.prefills: list[tuple[Group, int]] = []   # (group, new tokens) chunks, before they run
        self.g = g                                    # decode step index the step reaches
        self.step_index = step_index                  # row of the step table

    @property
    def is_pure_decode(self) -> bool:
        """Decodes only, with no block copies or swaps: step times have a closed form in the context."""
        return not self.prefills and not self.cow_copies and not self.swap_out_blocks and not self.swap_in_blocks

    def step_batch(self) -> StepBatch:
        """The cost model's view of the (first) step."""
        return StepBatch(self.prefill_tokens, len(self.prefills), self.prefill_attn_pairs, self.prefill_kv_tokens,
                         self.num_decode_seqs, self.decode_context, self.sampled_seqs, self.cow_copies,
                         self.swap_out_blocks + self.swap_in_blocks)
