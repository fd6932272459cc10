"""`SchedulerOutput`: what one engine step runs, as the scheduler decided it (a plain record).

The scheduler has already done the step's memory work (admissions, decode slots, preemptions, swaps,
copy-on-write) when it returns this; the step timer turns it into a duration, and `Scheduler.update`
applies its effects (prefill progress, first tokens, finished requests) once the step has run.
"""
from __future__ import annotations

from sim.cost import StepBatch
from sim.state import Group


class SchedulerOutput:
    """One step (or, when `max_decode_steps > 1`, up to that many identical pure decode steps)."""

    __slots__ = (
        "prefills", "num_decode_seqs", "decode_context", "g", "max_decode_steps", "arrivals_matter",
        "prefill_tokens", "prefill_attn_pairs", "prefill_kv_tokens", "sampled_seqs", "cow_copies",
        "preemptions", "swaps_out", "swaps_in", "swap_out_blocks", "swap_in_blocks", "step_index",
        "num_waiting",
    )

    def __init__(self, prefills: list[tuple[Group, int]], num_decode_seqs: int, decode_context: int, g: int,
                 max_decode_steps: int, arrivals_matter: bool, step_index: int) -> None:
        self.prefills = prefills                  # (group, new tokens) chunks, before they run
        self.num_decode_seqs = num_decode_seqs    # sequences decoding one token each (0: no decode)
        self.decode_context = decode_context      # their summed context in the (first) step
        self.g = g                                # decode step index the step reaches
        self.max_decode_steps = max_decode_steps  # >= 1: identical pure decode steps this output may stand for
        self.arrivals_matter = arrivals_matter    # an arrival during such a run would change the plan
        self.step_index = step_index              # row of the step table
        self.prefill_tokens = 0
        self.prefill_attn_pairs = 0.0             # sum over chunks of q * (c + (q + 1) / 2)
        self.prefill_kv_tokens = 0                # sum over chunks of c + q
        self.sampled_seqs = num_decode_seqs       # sequences sampling a token (decodes, finished prefills)
        self.cow_copies = 0
        self.preemptions = self.swaps_out = self.swaps_in = 0
        self.swap_out_blocks = self.swap_in_blocks = 0
        self.num_waiting = 0                      # waiting queue once the step is planned (arrivals join later)

    @property
    def is_pure_decode(self) -> bool:
        """Decodes only, with no block copies or swaps: step times have a closed form in the context."""
        return not self.prefills and not self.cow_copies and not self.swap_out_blocks and not self.swap_in_blocks

    def step_batch(self) -> StepBatch:
        """The cost model's view of the (first) step."""
        return StepBatch(self.prefill_tokens, len(self.prefills), self.prefill_attn_pairs, self.prefill_kv_tokens,
                         self.num_decode_seqs, self.decode_context, self.sampled_seqs, self.cow_copies,
                         self.swap_out_blocks + self.swap_in_blocks)
