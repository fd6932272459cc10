"""Per-request and per-sequence state of a replay (plain slotted objects: one per request, not per token)."""
from __future__ import annotations

import random

WAITING, PREFILL, DECODE, SWAPPED, FINISHED, REJECTED = range(6)
STATE_NAMES = ("waiting", "prefill", "decode", "swapped", "finished", "rejected")
# Preemption modes. SWAP_GROUPS is vLLM V0's default: a request of one running sequence is recomputed, a
# forked group (parallel samples, beams) swapped, since V0 cannot recompute a group of several sequences
# (`Scheduler._preempt`, vllm/core/scheduler.py:1533-1547 @v0.6.6.post1).
RECOMPUTE, SWAP, SWAP_GROUPS = "recompute", "swap", "swap-groups"


def beam_rng(seed: int, idx: int) -> random.Random:
    """The draws of beam re-selection for the request of trace index `idx`: its own stream, so that a replay
    is deterministic whatever else runs (the engine's beam groups and vLLM V1's front end alike)."""
    return random.Random(seed * 1_000_003 + idx)


class Seq:
    """One sequence (a sample or a beam) in the block manager.

    Decoding sequences are *lazy*: the block manager is told about their tokens only when they need a
    new block (or are forked, swapped, checked), so a decode step costs nothing per sequence. `length`
    is the token count the block manager holds, as of decode step `synced_g`; at decode step `G` the
    sequence really holds `length + (G - synced_g)` tokens. `phase` is the decode step (mod block size)
    at which it next needs a block: `(synced_g + 1 - length) % block_size`.
    """

    __slots__ = ("sid", "length", "synced_g", "phase")

    def __init__(self, sid: int, length: int, synced_g: int = 0) -> None:
        self.sid = sid
        self.length = length
        self.synced_g = synced_g
        self.phase = -1  # not lazy


class Group:
    """A request (vLLM's sequence group): its samples/beams share the prompt and decode in lockstep."""

    __slots__ = (
        "idx", "request_id", "arrival_ns", "prompt", "output", "n", "sampling", "state", "seqs",
        "generated", "join_g", "prefill_len", "prefill_done", "first_token_ns", "finish_ns",
        "preemptions", "swaps", "runs", "run_first_ns", "epoch", "dirty", "fresh_fork", "rng",
        "reason", "recomputed_tokens", "rejected_on_arrival", "block_keys", "pending", "priority",
        "parent", "children", "followers", "beam_search",
    )

    def __init__(self, idx: int, request_id: str, arrival_ns: int, prompt: int, output: int, n: int,
                 sampling: str, priority: int = 0) -> None:
        self.idx = idx
        self.priority = priority  # lower is served first (vLLM's priority policy)
        # vLLM V1's parallel sampling: the user's request (parent, never queued) and its n one-sample
        # child requests; None when the request runs as itself.
        self.parent: Group | None = None
        self.children: list[Group] | None = None
        # SGLang's prompt request ahead of parallel samples: the samples, queued when it finishes.
        self.followers: list[Group] | None = None
        # vLLM V1's beam search, run by its API server as rounds of 1-token requests
        # (`sim.v1_beam_search.BeamSearch`, never imported here): set on each of those requests.
        self.beam_search = None
        self.request_id = request_id
        self.arrival_ns = arrival_ns
        self.prompt = prompt
        self.output = output
        self.n = n
        self.sampling = sampling
        self.state = WAITING
        self.seqs: list[Seq] = []
        self.generated = 0        # tokens each sample has produced, as of decode step `join_g`
        self.join_g = 0
        self.prefill_len = 0      # tokens the current (re)prefill computes
        self.prefill_done = 0
        self.first_token_ns = -1
        self.finish_ns = -1
        self.preemptions = 0
        self.swaps = 0
        # Token-producing runs for inter-token gaps: (first token ns or -1, join_g, leave_g); decode
        # steps join_g+1 .. leave_g each produced a token.
        self.runs: list[tuple[int, int, int]] = []
        self.run_first_ns = -1
        self.epoch = 0            # bumped when the group leaves decoding: stale finish-heap entries
        self.dirty = False        # seqs may share a partial last block: the block manager decides appends
        self.fresh_fork = False   # dirty only until its first decode step (parallel sampling)
        self.rng: random.Random | None = None
        self.reason = ""
        self.recomputed_tokens = 0
        self.rejected_on_arrival = False
        # Prefix caching (else unused): the prompt's block keys, and the cache blocks this group's
        # (re)prefill registered but has not computed yet, as [next position to compute, first
        # position, blocks] (sim.kv_prefix).
        self.block_keys = None
        self.pending: list = []

    @property
    def is_beam(self) -> bool:
        return self.sampling == "beam" and self.n > 1

    def produced(self, g: int) -> int:
        """Tokens per sample produced by decode step `g` (while decoding)."""
        return self.generated + (g - self.join_g)

    def end_run(self, leave_g: int) -> None:
        self.runs.append((self.run_first_ns, self.join_g, leave_g))
        self.run_first_ns = -1
