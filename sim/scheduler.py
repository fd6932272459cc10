"""`Scheduler`: owns the request queues, the KV layout and the counters; plans each step and applies it.

    out = scheduler.schedule()       # the policy picks the batch; memory is taken (admit, decode slots,
                                     # preemptions, swaps); a plain `SchedulerOutput`
    durations = timer.time(out, ...)  # the engine's step timer
    scheduler.update(out, durations, start_ns, end_ns)   # prefill progress, first tokens, finished requests

Policies are strategies over this object's read-only state and a few verbs (`policies.base.SchedulerView`:
admit, reserve_decode (preempting as needed), swap_in, reject_head). Memory work goes through `kv`, a
`KVLayout`; the queues, counters and request moves between them are `sim.lifecycle.RequestQueues`, the
memory each step takes (decode slots, preemption, swap) `sim.preemption.PreemptingQueues`, the rest of the
verbs `sim.policy_verbs.PolicyVerbs` (this class's direct base).

Fast-forward: when a pure decode step is *steady* (the policy says nothing could be admitted, nothing was
preempted) the next steps repeat it until a request finishes, the block pool runs out, or (if the policy
would admit one) a request arrives. `schedule` bounds that run (`max_decode_steps`), the timer cuts it at
the next arrival, and `update` takes the blocks of all its steps at once (`KVLayout.reserve_run`) and
records it as one record.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Hashable, Sequence

import numpy as np

from memory import BlockManager

from sim.config import EngineConfig
from sim.host_time import overlaps
from sim.kv_layout import KVLayout
from sim.kv_lazy import NEVER
from sim.policies.base import Policy
from sim.policy_verbs import PolicyVerbs
from sim.records import StepRecorder
from sim.scheduler_output import SchedulerOutput
from sim.state import DECODE, FINISHED, PREFILL, WAITING, Group, beam_rng
from sim.v1_beam_search import BeamFrontEnd

if TYPE_CHECKING:
    from traces.trace import Trace


class Scheduler(PolicyVerbs):
    def __init__(self, trace: Trace, config: EngineConfig, policy: Policy, kv: KVLayout, seed: int = 0,
                 fast_forward: bool = True) -> None:
        super().__init__(config, kv)
        self.policy, self.seed = policy, seed
        self.running_by_admission = policy.running_by_admission
        self.finish_lag = policy.finish_lags_a_step and overlaps(config)
        self.priority_order = config.scheduling_policy == "priority"
        self.split_samples = policy.samples_as_requests
        self.prompt_first = policy.prompt_request_first
        self.num_spawned = 0   # requests the trace does not hold (samples, beam-search rounds' requests)
        self.bs, self.fast_forward = config.block_size, fast_forward
        arrival = np.asarray(trace.column("arrival_s"), dtype=np.float64)
        self.arrival_ns: list[int] = np.rint(arrival * 1e9).astype(np.int64).tolist()
        self.num_requests = len(self.arrival_ns)
        self._columns = tuple(trace.column(c).tolist() for c in (
            "request_id", "prompt_tokens", "output_tokens", "n", "sampling", "prefix_group", "prefix_tokens",
            "hash_ids", "priority"))
        self.groups: list[Group | None] = [None] * self.num_requests
        self.recorder = StepRecorder()   # monitoring: one plain record per step or run of decode steps
        # vLLM V1 runs beam search in its API server, as rounds of requests (`sim.v1_beam_search`).
        self.beam_front_end = (BeamFrontEnd(config, kv, seed, self._new_index, self._never_fits)
                               if policy.beam_search_as_requests else None)

    # ---- requests ----------------------------------------------------------------------------------
    def add_request(self, i: int) -> None:
        """Request i (trace order) arrives: its engine requests join the waiting queue, or it is rejected if
        it can never run."""
        rid, prompt, output, n, sampling, prefix_group, prefix_tokens, hash_ids, priority = (
            c[i] for c in self._columns)
        group = Group(i, rid, self.arrival_ns[i], prompt, output, n, sampling, priority)
        self.groups[i] = group
        if group.is_beam and self.beam_front_end is not None:
            reason, requests = self.beam_front_end.start(group, prefix_group, prefix_tokens, hash_ids)
        else:
            reason, requests = self._engine_requests(group, prefix_group, prefix_tokens, hash_ids)
        if reason is not None:
            group.rejected_on_arrival = True
            self.reject(group, reason)
        for request in requests:
            self.enqueue(request)

    def _engine_requests(self, group: Group, prefix_group: Hashable | None, prefix_tokens: int,
                         hash_ids: Sequence[int] | None) -> tuple[str | None, list[Group]]:
        """None and the requests that run `group` (itself, or its samples), to be queued in this order; or
        why it can never run and none."""
        split = self.split_samples and group.n > 1 and not group.is_beam
        reason = self._never_fits(self._child(group) if split else group)
        if reason is not None:
            return reason, []
        if split:
            # vLLM V1 fans a request with n > 1 out into n one-sample requests (v1/engine/async_llm.py:
            # 541-563); they share the prompt only through the prefix cache (keyed by the parent).
            group.children = [self._child(group) for _ in range(group.n)]
            for child in group.children:
                self.kv.assign_block_keys(child, group.idx, prefix_group, prefix_tokens, hash_ids)
            if not self.prompt_first:
                return None, group.children
            # SGLang first runs the prompt alone, a prefill-only request (max_new_tokens 0), and sends the
            # samples once it returns (managers/tokenizer_manager.py:2130-2151, 2163-2183).
            prompt_request = self._child(group, output=0)
            self.kv.assign_block_keys(prompt_request, group.idx, prefix_group, prefix_tokens, hash_ids)
            prompt_request.followers = group.children
            return None, [prompt_request]
        if group.is_beam:
            group.rng = beam_rng(self.seed, group.idx)
        # The request's own blocks are keyed by its index: request ids need not be unique.
        self.kv.assign_block_keys(group, group.idx, prefix_group, prefix_tokens, hash_ids)
        return None, [group]

    def _new_index(self) -> int:
        """An index for a request the trace does not hold: past the trace's, so that it keeps apart."""
        self.num_spawned += 1
        return self.num_requests + self.num_spawned

    def _child(self, parent: Group, output: int | None = None) -> Group:
        """One sample of `parent` as its own request."""
        child = Group(self._new_index(), parent.request_id, parent.arrival_ns, parent.prompt,
                      parent.output if output is None else output, 1, parent.sampling, parent.priority)
        child.parent = parent
        return child

    def token_streams(self) -> list[Group]:
        """Every request that produced its own tokens, in trace order (a parent's children in its place)."""
        return [c for g in self.groups if g is not None for c in (g.children or (g,))]

    def _never_fits(self, group: Group) -> str | None:
        cfg = self.config
        if group.prompt + group.output > cfg.context_len:
            return (f"prompt_tokens + output_tokens = {group.prompt + group.output} exceeds max_model_len "
                    f"{cfg.context_len}")
        if group.is_beam and not self.policy.beam_search:
            return (f"beam search: policy {self.policy.name}'s engine has none (its clients run beam search as "
                    f"separate requests)")
        if group.n > cfg.max_num_seqs:
            return f"n={group.n} exceeds max_num_seqs {cfg.max_num_seqs}"
        if not self.policy.chunked_prefill and group.prompt > cfg.token_budget:
            return f"prompt of {group.prompt} tokens exceeds max_num_batched_tokens {cfg.token_budget}"
        return self.kv.never_fits(group)

    def has_unfinished(self) -> bool:
        return bool(self.running or self.waiting or self.swapped)

    def queued_arrivals_ns(self) -> np.ndarray:
        """Arrival times of the requests that joined the waiting queue on arrival (not rejected on arrival).
        Under `prompt_first` (SGLang) a parallel request's arrival queues its prompt-only request alone; its
        samples join when that returns, at a step boundary the engine records itself."""
        fan_out = not self.prompt_first
        return np.array([g.arrival_ns for g in self.groups if g is not None and not g.rejected_on_arrival
                         for _ in (g.children if g.children and fan_out else (g,))], dtype=np.int64)

    @property
    def block_manager(self) -> BlockManager:
        """The KV layout's block manager (the execute backend reads its block tables: `RunningView`)."""
        return self.kv.bm

    # ---- planning ----------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput | None:
        """The next step, its memory taken; None when nothing can run (see `unstick`)."""
        kv = self.kv
        kv.step_copies = 0
        g = self.G
        self.out = out = SchedulerOutput(g, self.recorder.num_rows)
        plan = self.policy.schedule(self)
        has_decode = plan.decode and self.decode_seqs > 0
        held = bool(self.held)
        if held and not plan.prefills and not has_decode:
            # Nothing to run beside them: the engine waits for the last step's output, which frees them.
            self.release_held()
            held = False
            plan = self.policy.schedule(self)
            has_decode = plan.decode and self.decode_seqs > 0
        if not plan.prefills and not has_decode:
            self.out = None
            return None
        out.prefills, out.arrivals_matter, out.cow_copies = plan.prefills, plan.arrivals_matter, kv.step_copies
        out.num_waiting = len(self.waiting)
        if has_decode:
            out.g = g = g + 1
            out.num_decode_seqs = out.sampled_seqs = b = self.decode_seqs
            out.decode_context = self._decode_context(g)
        for group, q in plan.prefills:  # before the chunks run: `prefill_done` is what is cached
            c = group.prefill_done
            out.prefill_tokens += q
            out.prefill_attn_pairs += q * (c + (q + 1) / 2)
            out.prefill_kv_tokens += c + q
            if c + q == group.prefill_len and group.output:  # a prefill-only request samples nothing
                out.sampled_seqs += group.n
        # Requests in transit arrive during the next step, and held memory returns after it: no run past it.
        if (has_decode and plan.steady and not out.preemptions and self.fast_forward and not self.dirty_groups
                and out.is_pure_decode and not self.num_in_transit and not held):
            out.max_decode_steps = min(self._steps_to_finish(g), kv.steps_memory_allows(g))
            assert b and out.max_decode_steps >= 1
        if held:  # this step is scheduled: the previous one's output is processed now
            self.release_held()
        return out

    def _decode_context(self, g: int) -> int:
        context = self.kv.lazy_context(g)
        for group in self.dirty_groups:
            for seq in group.seqs:
                context += seq.length
        return context

    def _steps_to_finish(self, g1: int) -> int:
        """Steps from g1 up to and including the first in which a decoding request finishes."""
        heap = self.finish_heap
        while heap:
            finish_g, _, epoch, group = heap[0]
            if group.epoch == epoch and group.state == DECODE:
                return finish_g - g1 + 1
            heapq.heappop(heap)
        return NEVER

    def unstick(self) -> None:
        """Nothing could run: the queue heads can never be scheduled on this engine. Never deadlock."""
        if self.swapped:
            self.recompute_swapped(self.swapped.popleft())
        elif self.waiting and not self.running:
            self.reject(head := self.waiting.popleft(), self.policy.idle_refusal(self, head))
        elif self.waiting or self.running:
            raise AssertionError(f"policy {self.policy.name} scheduled nothing with requests running")

    # ---- applying a step ---------------------------------------------------------------------------
    def update(self, out: SchedulerOutput, durations: Sequence[int] | np.ndarray, start_ns: int, end_ns: int) -> None:
        """The step (k = len(durations) identical decode steps when fast-forwarded) ran from `start_ns` to
        `end_ns`: record it, then retire what it finished."""
        kv, k, g, prefills = self.kv, len(durations), out.g, out.prefills
        completions = []
        for group, q in prefills:
            group.prefill_done += q
            kv.computed(group, q)
            if group.prefill_done == group.prefill_len:
                completions.append(group)
        b = out.num_decode_seqs
        if k > 1:
            counts_id, growing = self.recorder.add_counts(kv.counts), kv.growing
        else:
            counts_id, growing = -1, 0
        self.recorder.add((
            k, start_ns, g if b else 0, b, out.prefill_tokens, len(prefills), out.sampled_seqs,
            len(self.running) - len(self.held), out.num_waiting, len(self.swapped), kv.used_blocks(), kv.kv_tokens(g),
            kv.reserved_slots(), kv.logical_blocks(), out.cow_copies, out.preemptions, out.swaps_out,
            out.swaps_in, out.swap_out_blocks, out.swap_in_blocks, growing, counts_id,
        ), durations)
        if k > 1:
            kv.reserve_run(g + 1, g + k - 1)
        self.G = g + k - 1
        if b:
            self.finish_decoded(end_ns)
        for group in completions:
            if group.state == PREFILL:
                self.prefill_complete(group, end_ns)
        self.out = None

    # ---- checks ------------------------------------------------------------------------------------
    def check_invariants(self, final: bool = False) -> None:
        """The block manager's invariants, and the running counters against a recount (tests)."""
        kv = self.kv
        kv.sync_all(self.G)
        kv.bm.check_invariants()
        assert kv.used_blocks() <= kv.bm.num_gpu_blocks
        assert {id(grp) for grp in self.running if grp.state == FINISHED} == {id(grp) for grp, _ in self.held}
        kv.check([grp for grp in self.running if grp.state in (DECODE, PREFILL, FINISHED)], self.G)
        assert self.decode_seqs == sum(len(grp.seqs) for grp in self.running if grp.state == DECODE)
        if final:
            assert not self.running and not self.waiting and not self.swapped
            assert kv.used_blocks() == 0 and kv.kv_tokens(self.G) == 0
        assert all(grp.state == WAITING for grp in self.waiting)
