"""`RequestQueues`: the scheduler's queues and counters, and how requests move between them.

waiting -> (admit) -> running: prefilling -> decoding -> finished (a parent of one-sample children with
its last child). Every memory change goes through `kv` (a `KVLayout`); every step's counts go into `out`
(the `SchedulerOutput` being scheduled). `sim.preemption.PreemptingQueues` extends this with the memory
each step takes (decode slots, preemption back to waiting or to swapped, swap-in),
`sim.policy_verbs.PolicyVerbs` that with the policies' other verbs, and `sim.scheduler.Scheduler` that
with planning and applying steps.
"""
from __future__ import annotations

import bisect
import heapq
from collections import deque

from sim.config import EngineConfig
from sim.kv_layout import KVLayout
from sim.scheduler_output import SchedulerOutput
from sim.state import DECODE, FINISHED, PREFILL, REJECTED, WAITING, Group


class RequestQueues:
    def __init__(self, config: EngineConfig, kv: KVLayout) -> None:
        self.config, self.kv = config, kv
        self.waiting: deque[Group] = deque()
        self.running: list[Group] = []          # admitted (prefilling or decoding), by arrival
        self.swapped: deque[Group] = deque()
        self.prefilling: list[Group] = []       # admitted, prefill not complete, in admission order
        self.dirty_groups: list[Group] = []     # decoding groups whose appends go through the block manager
        self.finish_heap: list[tuple[int, int, int, Group]] = []
        self.G = 0                              # decode steps so far (a step with any decode counts)
        self.num_running_seqs = 0               # sequences of running groups (for max_num_seqs)
        self.decode_seqs = 0                    # sequences decoding
        self.num_done = 0                       # requests finished or rejected
        # Requests a front end sent at the end of this step (a beam search's next round), handed to the engine
        # (`take_sent`), and how many it has not delivered yet (`deliver`).
        self.sent: list[Group] = []
        self.num_in_transit = 0
        self.num_engine_requests = 0            # requests that joined the waiting queue (a user's request, or
                                                # each of its samples / beam rounds' requests where they run apart)
        self.out: SchedulerOutput | None = None  # the step being scheduled: preemptions and swaps count here
        # vLLM V1: `running` in admission order (a resumed request goes to the end, sched/scheduler.py:1549),
        # and under the priority policy the waiting queue ordered by (priority, arrival)
        # (sched/request_queue.py:131-197); else running by arrival and a FIFO waiting queue.
        self.running_by_admission = False
        self.priority_order = False
        # V1 with async scheduling, SGLang with its overlap scheduler: finished requests stay in `running` with
        # their slots and blocks until the next step has been scheduled (`release_held`), as V1's finishing
        # requests stay in its `running` (the next schedule skips them, and may preempt one) and SGLang's in its
        # running batch (never retracted); (group, decode step it finished at).
        self.finish_lag = False
        self.held: list[tuple[Group, int]] = []
        # Where the replay departs from vLLM V0 to go on (sim.preemption): swap preemptions that found the
        # CPU pool full (V0 aborts) and swapped requests that could not come back on an idle engine (V0
        # waits for them forever); each recomputed instead.
        self.swap_space_exhausted = 0
        self.swapped_recomputed = 0

    # ---- queue order -----------------------------------------------------------------------------
    def enqueue(self, group: Group) -> None:
        """An arrival joins the waiting queue: at the end, or by (priority, arrival) under priority."""
        self.num_engine_requests += 1
        if self.priority_order:
            bisect.insort(self.waiting, group, key=_priority_order)
        else:
            self.waiting.append(group)

    def take_sent(self) -> list[Group]:
        """The requests front ends sent in this step, now on their way to the engine."""
        sent, self.sent = self.sent, []
        self.num_in_transit += len(sent)
        return sent

    def deliver(self, requests: list[Group]) -> None:
        """Sent requests reach the engine: they join the waiting queue, in the order sent."""
        self.num_in_transit -= len(requests)
        for request in requests:
            self.enqueue(request)

    def requeue(self, group: Group) -> None:
        """A request preempted by recompute waits again: at the front (FCFS), or by its key (priority:
        V1 pushes it back onto the heap, sched/request_queue.py:159-165)."""
        if self.priority_order:
            bisect.insort(self.waiting, group, key=_priority_order)
        else:
            self.waiting.appendleft(group)

    def _add_running(self, group: Group) -> None:
        if self.running_by_admission:
            self.running.append(group)
        else:
            bisect.insort(self.running, group, key=_arrival_order)

    # ---- admission -------------------------------------------------------------------------------
    def admit(self, group: Group) -> None:
        """Move the waiting head `group` into the running batch with its KV memory allocated; prefix
        cache hits count as already prefilled (`prefill_done` starts at them)."""
        assert group.state == WAITING and self.waiting and self.waiting[0] is group
        self.waiting.popleft()
        cached = self.kv.allocate(group)
        group.state = PREFILL
        group.prefill_len = group.prompt + group.n * group.generated
        group.prefill_done = cached
        if group.generated:
            group.recomputed_tokens += group.prefill_len - cached
        self.kv.begin_prefill(group)
        self._add_running(group)
        self.prefilling.append(group)
        self.num_running_seqs += group.n

    # ---- completions -----------------------------------------------------------------------------
    def _start_decoding(self, group: Group, g: int, join_at: int | None = None) -> None:
        """`group` has produced `generated` tokens by decode step g and decodes from g + 1 on."""
        group.state, group.join_g = DECODE, g
        if group.dirty:
            self.dirty_groups.append(group)
        else:
            for seq in group.seqs:
                self.kv.join(seq, g if join_at is None else join_at)
        self.decode_seqs += len(group.seqs)
        heapq.heappush(self.finish_heap, (g + group.output - group.generated, group.idx, group.epoch, group))

    def _stop_decoding(self, group: Group, g: int) -> None:
        """`group` leaves decoding at step g (preempted or aborted): it keeps the tokens produced so far, its
        run ends, and its finish-heap entry goes stale."""
        group.generated = group.produced(g)
        group.end_run(g)
        group.epoch += 1
        self.decode_seqs -= len(group.seqs)
        if group.dirty:
            self.dirty_groups.remove(group)

    def prefill_complete(self, group: Group, now: int) -> None:
        """The (re)prefill's last chunk ran: it sampled one more token per sample."""
        self.prefilling.remove(group)
        group.run_first_ns = now
        if not group.output:
            # A prefill-only request (SGLang's prompt request, max_new_tokens 0) samples nothing.
            group.join_g = self.G
            self._finish(group, now)
            return
        group.generated += 1
        if group.first_token_ns < 0:
            group.first_token_ns = now
        if group.generated >= group.output:
            group.join_g = self.G
            self._finish(group, now)
            return
        self.kv.share_samples(group)
        self._start_decoding(group, self.G)

    def finish_decoded(self, now: int) -> None:
        """After a decode step: requests that produced their last token finish; dirty families update."""
        heap, g = self.finish_heap, self.G
        while heap and heap[0][0] <= g:
            finish_g, _, epoch, group = heapq.heappop(heap)
            if group.epoch == epoch and group.state == DECODE:
                assert finish_g == g, "a request decoded past its output length"
                self._finish(group, now)
        if self.dirty_groups:
            self._after_dirty_step()

    def _finish(self, group: Group, now: int) -> None:
        if group.state == DECODE:
            group.generated = group.produced(self.G)
            self.decode_seqs -= len(group.seqs)
            if group.dirty:
                self.dirty_groups.remove(group)
        assert group.generated == group.output, f"{group.request_id}: {group.generated} != {group.output}"
        group.end_run(self.G)
        if self.finish_lag:
            self.kv.hold(group, self.G)
            self.held.append((group, self.G))
        else:
            self.kv.free(group, self.G)
            self.running.remove(group)
            self.num_running_seqs -= group.n
        group.state, group.finish_ns = FINISHED, now
        if group.followers is None or not self.finish_lag:
            self._done(group)

    def release_held(self) -> None:
        """The finished requests' outputs are processed: their slots and blocks go back."""
        for group, g in self.held:
            self._release(group, g)
        self.held.clear()

    def release_one(self, group: Group) -> None:
        """A held finished request goes now (V1 preempted it: its blocks are freed at once)."""
        index = next(i for i, (grp, _) in enumerate(self.held) if grp is group)
        self._release(*self.held.pop(index))

    def _release(self, group: Group, g: int) -> None:
        self.kv.free(group, g)
        self.running.remove(group)
        self.num_running_seqs -= group.n
        if group.followers is not None:
            # A prompt request's samples are sent once its output is processed (SGLang's tokenizer manager awaits
            # it, managers/tokenizer_manager.py:2151): with the overlap scheduler, after the next batch is scheduled.
            self._done(group)

    def _done(self, group: Group) -> None:
        """`group` finished or was rejected; a parent of one-sample children is done with its last child."""
        if group.followers is not None:
            # A prompt request (SGLang): its samples are sent now, and may be rejected by the same rule.
            for follower in group.followers:
                self.enqueue(follower)
            group.followers = None
            return
        if group.beam_search is not None:
            # A beam-search round's request (vLLM V1's API server): the next round is sent when the whole
            # round is back (it reaches the engine as `sent`); the user's request is done with its last round.
            following, user_done = group.beam_search.request_done(group)
            self.sent.extend(following)
            self.num_done += user_done
            return
        parent = group.parent
        if parent is None:
            self.num_done += 1
            return
        children = parent.children
        if any(c.state not in (FINISHED, REJECTED) for c in children):
            return
        aggregate_children(parent)
        self.num_done += 1

    def _after_dirty_step(self) -> None:
        """Beams are re-selected; freshly forked samples now own their last blocks."""
        g = self.G
        for group in list(self.dirty_groups):
            if group.is_beam:
                self._select_beams(group)
            elif group.fresh_fork:
                group.dirty = group.fresh_fork = False
                self.dirty_groups.remove(group)
                for seq in group.seqs:
                    self.kv.join(seq, g)

    def _select_beams(self, group: Group) -> None:
        """Beam search keeps n beams: each step some beams lose to candidates of others, which fork."""
        rng, p, kv = group.rng, self.config.beam_replace_prob, self.kv
        dropped = [i for i in range(len(group.seqs)) if rng.random() < p]
        if len(dropped) == len(group.seqs):
            dropped.pop(rng.randrange(len(dropped)))
        if not dropped:
            return
        keep = [s for i, s in enumerate(group.seqs) if i not in dropped]
        for i in dropped:
            kv.drop_seq(group.seqs[i])
        for _ in dropped:
            keep.append(kv.fork_seq(keep[rng.randrange(len(keep))]))
        group.seqs = keep


def _arrival_order(group: Group) -> int:
    return group.idx


def _priority_order(group: Group) -> tuple[int, int, int]:
    return group.priority, group.arrival_ns, group.idx


def aggregate_children(parent: Group) -> None:
    """The user's request from its one-sample children, as vLLM's `ParentRequest` reports it
    (v1/engine/parallel_sampling.py:102-127): finished when the last child is (its finish time), first
    token when the first child streams one; counters summed. A rejected child rejects the request."""
    children = parent.children
    rejected = [c for c in children if c.state == REJECTED]
    parent.preemptions = sum(c.preemptions for c in children)
    parent.recomputed_tokens = sum(c.recomputed_tokens for c in children)
    if rejected:
        parent.state, parent.reason = REJECTED, rejected[0].reason
        return
    parent.state = FINISHED
    parent.generated = parent.output
    parent.first_token_ns = min(c.first_token_ns for c in children)
    parent.finish_ns = max(c.finish_ns for c in children)
