"""SGLang's retraction for decode (managers/schedule_batch.py:3451-3539, `retract_decode`): when the next decode
step's new KV does not fit, running requests leave the batch - fewest generated tokens first, ties the longest
prompt; beam groups last, aborted since they cannot be requeued - and the new-token ratio is raised."""
from __future__ import annotations

from sim.policies.base import SchedulerView
from sim.policies.sglang_budget import NewTokenRatio
from sim.policies.sglang_charges import max_new_tokens, num_requests
from sim.state import DECODE


def retract_for_decode(sched: SchedulerView, ratio: NewTokenRatio) -> tuple[list[int], float, float] | None:
    """Retract until the next decode step's new blocks fit (schedule_batch.py:3451-3539). Returns the retracted
    (or aborted) requests' idxs and `ratio`'s value before and after, None when the decode fits."""
    if sched.decode_need() <= sched.num_free_blocks():
        return None
    g = sched.G
    decoding = [grp for grp in sched.running if grp.state == DECODE]
    # Pop from the end of a list sorted by (generated, -prompt) descending: fewest generated first,
    # ties the longest prompt.
    decoding.sort(key=lambda grp: (grp.produced(g), -grp.prompt), reverse=True)
    # Beam groups go last (beam_search/batch_tail.py:126-133) and are aborted, not requeued
    # (schedule_batch.py:3469-3488): their rows share the leader's prompt KV.
    decoding = [grp for grp in decoding if grp.is_beam] + [grp for grp in decoding if not grp.is_beam]
    victims: list[int] = []
    while len(decoding) > 1 and sched.decode_need() > sched.num_free_blocks():
        victim = decoding.pop()
        victims.append(victim.idx)
        if victim.is_beam:
            sched.abort(victim, "beam search group aborted: KV cache pool is full (SGLang cannot retract a "
                                "beam group)")
        else:
            sched.retract(victim)
    if decoding and sched.decode_need() > sched.num_free_blocks():
        # Not even the last one fits (beam groups finishing in flight still hold their KV): SGLang aborts it
        # rather than crash (schedule_batch.py:3516-3538).
        last = decoding.pop()
        victims.append(last.idx)
        sched.abort(last, "out of KV memory even after retracting every other request of the decode batch "
                          "(SGLang aborts the last one)")
    if victims:
        # Over the kept requests (new_token_ratio_tracker.py:40-49): a parallel sample is a request, a
        # beam group only its leader, whose max_new_tokens is the user's + 4.
        before = ratio.value(g)
        generated = sum(num_requests(grp) * grp.produced(g) for grp in decoding)
        max_new = sum(num_requests(grp) * max_new_tokens(grp) for grp in decoding)
        after = ratio.after_retraction(g + 1, generated, max_new, sum(map(num_requests, decoding)))
        return victims, before, after
    return None
