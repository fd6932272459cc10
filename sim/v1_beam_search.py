"""vLLM V1's beam search, which its API server runs outside the engine (policy `vllm`): one front-end
process per user request, sending rounds of 1-token requests to the V1 scheduler.

What vLLM does (vllm 0.33.0, `vllm/entrypoints/generate/beam_search/online.py`, 1-based lines; rules and
the rest of the sources in docs/sim.md):

- the beams start as the prompt alone (82-90), so round 1 is one request: the prompt;
- each of `max_tokens` rounds (93) sends every beam as its own request, prompt = the user's prompt + that
  beam's tokens, `max_tokens=1`, `logprobs=2 * beam_width` (65-72, 97-114), with the user's priority
  (41, 110); the engine stamps each request's arrival when it is sent (v1/engine/input_processor.py:403-404);
- a round waits for all its requests (`asyncio.gather`, 116), then keeps the best `beam_width` candidates
  (197-221), so every later round has `beam_width` requests; the scheduler hands the next round to the
  engine (`sim.engine`), which receives it during the next step, as V1's core loop does. Traces fix output lengths (no EOS), so a
  request of width k and L output tokens takes L rounds and 1 + (L - 1) k engine requests.

The simulator has no token ids, so beams are lineages: a beam is a node of the search tree (the prompt is
node 0), and a block of a request's prompt that holds beam tokens is keyed `("beam", user request, node
of its last token)`: beams that share that node share the block's content, and the prefix cache finds it.
Which beams survive is the engine-run beam model's (`EngineConfig.beam_replace_prob`, docs/sim.md): each
beam is dropped with that probability (at least one survives) and each dropped one is replaced by a
candidate of a random survivor; the candidates of round 1 all continue the prompt. The draws come from the
request's own seeded `random.Random`, so a replay is deterministic.

The seam with the scheduler is `BeamFrontEnd`: the scheduler hands it a user's beam-search request on
arrival (`start`) and queues what it returns; each round's request carries its `BeamSearch`
(`Group.beam_search`), which `sim.lifecycle` tells when the request is done (`request_done`).
"""
from __future__ import annotations

import random
from typing import Callable, Hashable, Protocol, Sequence

from sim.config import EngineConfig
from sim.state import FINISHED, REJECTED, Group, beam_rng


class BeamKeys(Protocol):
    """The prefix-cache keys of beam-search rounds' prompts (`sim.kv_paged_chunked.ChunkedPagedKV`)."""

    def beam_prompt_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                         prefix_tokens: int, hash_ids: Sequence[int] | None) -> tuple[Hashable, ...] | None: ...

    def assign_beam_keys(self, group: Group, keys: tuple[Hashable, ...], lookup: object) -> object: ...


class BeamFrontEnd:
    """vLLM V1's API server, as far as beam search goes: one `BeamSearch` per user beam-search request.

    `new_index()`: an index for an engine request the trace does not hold (the scheduler's, shared with
    parallel samples'); `never_fits(request)`: why the engine can never run `request`, or None."""

    def __init__(self, config: EngineConfig, kv: BeamKeys, seed: int, new_index: Callable[[], int],
                 never_fits: Callable[[Group], str | None]) -> None:
        self.config, self.kv, self.seed = config, kv, seed
        self.new_index, self.never_fits = new_index, never_fits

    def start(self, user: Group, prefix_group: Hashable | None, prefix_tokens: int,
              hash_ids: Sequence[int] | None) -> tuple[str | None, list[Group]]:
        """`user` arrived (it never runs itself): None and its first round's requests, to be queued in this
        order; or why it is rejected (its last round's request can never run) and no request."""
        kv, i = self.kv, user.idx
        search = BeamSearch(user, kv.beam_prompt_keys(user, i, prefix_group, prefix_tokens, hash_ids),
                            self.config.block_size, self.config.beam_replace_prob,
                            beam_rng(self.seed, i), self.new_index, kv.assign_beam_keys)
        reason = self.never_fits(search.longest_request())
        if reason is not None:
            return reason, []
        return None, search.send_round(user.arrival_ns)


class Beam:
    """One beam: its node in the search tree, its tokens so far (`depth`), the cache keys of the full
    blocks of prompt + those tokens (None without prefix caching), and the KV layout's lookup state for
    those keys (`lookup`: kept by every beam with the same keys, so that a round's lookups go on from the
    last round's answer; None until a request of this beam was given its keys)."""

    __slots__ = ("node", "depth", "keys", "lookup")

    def __init__(self, node: int, depth: int, keys: tuple[Hashable, ...] | None, lookup: object = None) -> None:
        self.node, self.depth, self.keys, self.lookup = node, depth, keys, lookup


class BeamSearch:
    """The front end of one user beam-search request: sends its rounds, collects them, and reports the
    user's request (first token at the end of round 1, finished with the last round)."""

    def __init__(self, user: Group, prompt_keys: tuple[Hashable, ...] | None, block_size: int,
                 replace_prob: float, rng: random.Random, new_index: Callable[[], int],
                 assign_keys: Callable[[Group, tuple[Hashable, ...], object], object]) -> None:
        """`prompt_keys`: the keys of every full block of the user's prompt (None: prefix caching off);
        `new_index()`: the index of a fresh engine request (past the trace's);
        `assign_keys(request, keys, lookup)`: give it its prompt's cache keys, with the lookup state of
        earlier requests with the same keys (None for the first); returns the state to pass on."""
        self.user, self.bs, self.replace_prob, self.rng = user, block_size, replace_prob, rng
        self.new_index, self.assign_keys = new_index, assign_keys
        self.beams = [Beam(0, 0, prompt_keys)]
        self.num_nodes = 1
        self.round: list[Group] = []       # the round in flight
        self.outstanding = 0               # ... of which not finished or rejected yet
        self.round_ends_ns: list[int] = []

    def longest_request(self) -> Group:
        """The last round's request (prompt + L - 1 beam tokens, one more token): whether it can ever run
        is whether the user's request can."""
        user = self.user
        return Group(-1, user.request_id, user.arrival_ns, user.prompt + user.output - 1, 1, 1, user.sampling,
                     user.priority)

    def send_round(self, now_ns: int) -> list[Group]:
        """The next round's requests, one per beam, arriving at `now_ns` (to be queued in this order): each
        1 token of the user's prompt and its beam's tokens, with the user's priority."""
        user, requests = self.user, []
        for beam in self.beams:
            request = Group(self.new_index(), user.request_id, now_ns, user.prompt + beam.depth, 1, 1, user.sampling,
                            user.priority)
            request.beam_search = self
            if beam.keys is not None:
                beam.lookup = self.assign_keys(request, beam.keys, beam.lookup)
            requests.append(request)
        self.round, self.outstanding = requests, len(requests)
        return requests

    def summed(self, request: Group) -> bool:
        """Whether `request`'s counters are in the user's row already (its round is done)."""
        return not (self.outstanding and any(r is request for r in self.round))

    def request_done(self, request: Group) -> tuple[list[Group], bool]:
        """`request` of the round in flight finished or was rejected. Returns the next round's requests
        (when this was the round's last) and whether the user's request is now done."""
        self.outstanding -= 1  # each request of the round is done once
        if self.outstanding:
            return [], False
        user, done = self.user, self.round
        assert all(r.state in (FINISHED, REJECTED) for r in done), "a round's request was counted done twice"
        user.preemptions += sum(r.preemptions for r in done)
        user.recomputed_tokens += sum(r.recomputed_tokens for r in done)
        rejected = [r for r in done if r.state == REJECTED]
        if rejected:  # the front end gives up on an error (online.py:118-139)
            user.state, user.reason = REJECTED, rejected[0].reason
            return [], True
        end = max(r.finish_ns for r in done)
        self.round_ends_ns.append(end)
        if len(self.round_ends_ns) == user.output:
            self._finish_user()
            return [], True
        self._select()
        return self.send_round(end), False

    def _select(self) -> None:
        """The beams of the next round, each a candidate (one more token) of a beam of this round."""
        beams, rng = self.beams, self.rng
        if len(beams) == 1:  # round 1: the prompt's 2k candidates, of which the best k
            parents = [beams[0]] * self.user.n
        else:
            dropped = [i for i in range(len(beams)) if rng.random() < self.replace_prob]
            if len(dropped) == len(beams):
                dropped.pop(rng.randrange(len(dropped)))
            kept = [b for i, b in enumerate(beams) if i not in dropped]
            parents = kept + [kept[rng.randrange(len(kept))] for _ in dropped]
        self.beams = [self._candidate(parent) for parent in parents]

    def _candidate(self, parent: Beam) -> Beam:
        """`parent` and one more token: a new node; a block it fills is keyed by that node."""
        node, depth = self.num_nodes, parent.depth + 1
        self.num_nodes += 1
        keys, lookup = parent.keys, parent.lookup
        if keys is not None and (self.user.prompt + depth) % self.bs == 0:
            keys, lookup = keys + (("beam", self.user.idx, node),), None
        return Beam(node, depth, keys, lookup)

    def _finish_user(self) -> None:
        """Every round is back: the user's request holds `n` beams of `output` tokens. Its first token came
        with round 1, one more with each round (its inter-token gaps: one run per round, no decode step)."""
        user, ends = self.user, self.round_ends_ns
        user.state, user.generated = FINISHED, user.output
        user.first_token_ns, user.finish_ns = ends[0], ends[-1]
        user.runs = [(end, 0, 0) for end in ends]


def engine_requests(width: int, output: int) -> int:
    """Engine requests (each samples one token) of a beam search of `width` beams and `output` tokens: one
    for round 1, `width` for each later round."""
    return 1 + (output - 1) * width
