"""What SGLang's admission estimate charges each request (sglang 0.5.23, paths under `python/sglang/srt/`):
the output tokens a candidate or a running request still reserves, and the rows of the `ignore_eos` rule.

SGLang's scheduler sees requests, not the simulator's groups: a parallel sample is a request of its own
(the tokenizer manager expands `n`, managers/tokenizer_manager.py:2163-2183); a beam group is one request,
its leader, whose `max_new_tokens` is the user's + 4 and which runs with `ignore_eos`
(beam_search/coordinator.py:214-216, beam_search/fork.py:48); its member rows are not requests.
"""
from __future__ import annotations

from typing import Iterable

from sim.policies.sglang_budget import BEAM_LEADER_MARGIN, CLIP_MAX_NEW_TOKENS
from sim.state import DECODE, PREFILL, Group


def paged_input(tokens: int, page_size: int) -> int:
    """What the budget charges for `tokens` of prompt (an extend or a chunk): page-ceiled, plus one page
    (prefill_budget.py:114-140)."""
    return -(-tokens // page_size) * page_size + page_size


def new_tokens(group: Group) -> int:
    """`min(max_new_tokens - generated, 4096)` of an admission candidate (schedule_policy.py:1407-1410):
    per parallel sample, or once for a beam group's leader."""
    if group.is_beam:
        return min(group.output + BEAM_LEADER_MARGIN - group.generated, CLIP_MAX_NEW_TOKENS)
    return group.n * min(group.output - group.generated, CLIP_MAX_NEW_TOKENS)


def num_requests(group: Group) -> int:
    """SGLang requests behind a group: one per parallel sample, one for a beam group (its leader)."""
    return 1 if group.is_beam else group.n


def max_new_tokens(group: Group) -> int:
    """A request's `max_new_tokens`: the output length; a beam leader's is the user's + 4."""
    return group.output + BEAM_LEADER_MARGIN if group.is_beam else group.output


def running_reserve(running: Iterable[Group], g: int, ratio: float) -> float:
    """KV tokens the estimate keeps for running requests' remaining output at decode step `g`
    (schedule_policy.py:670-680, 785-799): `ratio` (`new_token_ratio`) of a request's remaining output; all of
    a beam leader's, which runs with ignore_eos (ratio 1.0, 786-787); the beam members' rows are not requests
    and are not charged. The chunked request is not in the running batch (managers/scheduler.py:3911-3914): the
    pass charges its chunk (`add_chunked_req`)."""
    reserve = 0.0
    for group in running:
        if group.state == PREFILL:
            continue
        if group.state != DECODE:
            # Finishing in the batch in flight, still in the running batch (the overlap scheduler): nothing left
            # as the simulator counts outputs (a beam leader: its margin of 4). SGLang has not yet committed any
            # request's in-flight token, so it charges each `ratio` x 1 token more: not modelled.
            reserve += new_tokens(group)
        elif group.is_beam:
            reserve += min(group.output + BEAM_LEADER_MARGIN - group.produced(g), CLIP_MAX_NEW_TOKENS)
        else:
            left = group.output - group.produced(g)
            reserve += group.n * min(left, CLIP_MAX_NEW_TOKENS) * ratio
    return reserve


def ignore_eos_row(group: Group, done: int) -> tuple[float, int]:
    """A beam leader's (tokens left, tokens occupied) for `add_one_req_ignore_eos`, `done` tokens
    generated: ratio 1.0, no 4096 clip (schedule_policy.py:1259-1266)."""
    return float(group.output + BEAM_LEADER_MARGIN - done), group.prompt + done


def ignore_eos_rows(running: Iterable[Group], prefills: list[tuple[Group, int]], g: int,
                    ratio: float) -> list[tuple[float, int]]:
    """The rows of the running requests and of those admitted so far in this pass (1280-1288): one per
    parallel sample, one per beam group (its leader); `max_new_tokens * new_token_ratio - generated`."""
    rows: list[tuple[float, int]] = []
    groups = [(grp, grp.produced(g)) for grp in running if grp.state == DECODE]
    groups += [(grp, grp.generated) for grp, _ in prefills]
    for group, done in groups:
        if group.is_beam:
            rows.append(ignore_eos_row(group, done))
        else:
            rows += [(group.output * ratio - done, group.prompt + done)] * group.n
    return rows
