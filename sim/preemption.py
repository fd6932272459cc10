"""`PreemptingQueues`: the request queues under memory pressure.

Each step takes the memory its batch needs: a slot for every decoding sequence's next token (V0:
`reserve_decode`, preempting the newest running request until the older ones fit) or, for vLLM V1's
running loop, the whole step at once (`reserve_step`) else request by request (`reserve_slots`, the policy
choosing victims through `preempt`). A preempted request is recomputed (back to waiting, its blocks freed)
or swapped out; swapped requests come back with `swap_in`. `sim.policy_verbs.PolicyVerbs` extends this.
"""
from __future__ import annotations

from sim.lifecycle import RequestQueues
from sim.state import (DECODE, FINISHED, PREFILL, RECOMPUTE, REJECTED, SWAP, SWAP_GROUPS, SWAPPED, WAITING,
                       Group)


class PreemptingQueues(RequestQueues):
    # ---- decode memory ---------------------------------------------------------------------------
    def reserve_decode(self, mode: str = RECOMPUTE) -> int:
        """Slots for this step's token of every decoding sequence; when the pool runs short, preempt the
        newest running request (recompute or swap) until the older ones fit. Returns how many were
        preempted. A layout whose decodes take no memory (reservations) never runs short."""
        if not self.decode_seqs:
            return 0
        kv, g1 = self.kv, self.G + 1
        need = kv.crossings(g1)
        for group in self.dirty_groups:
            need += kv.group_need(group, g1)
        if need <= kv.bm.num_free_gpu_blocks:
            kv.reserve_bucket(g1)
            for group in self.dirty_groups:
                kv.commit_group(group, g1)
            return 0
        return self._reserve_in_order(g1, mode)

    def _reserve_in_order(self, g1: int, mode: str) -> int:
        kv, running, preempted = self.kv, self.running, []
        i = 0
        while i < len(running):
            group = running[i]
            if group.state == DECODE:
                need = kv.group_need(group, g1)
                while need > kv.bm.num_free_gpu_blocks and running[-1] is not group:
                    preempted.append(self._preempt(running.pop(), mode))
                if need > kv.bm.num_free_gpu_blocks:
                    preempted.append(self._preempt(running.pop(), mode))
                    break
                kv.commit_group(group, g1)
            i += 1
        for group in preempted:  # the oldest ends up first in line
            if group.state == WAITING:
                self.requeue(group)
            else:
                self.swapped.append(group)
        return len(preempted)

    # ---- vLLM V1's running loop (sim/policies/vllm.py walks `running`; these take its memory) -----------
    def reserve_step(self, chunks: list[tuple[Group, int]]) -> bool:
        """The whole step's memory at once, if the pool holds it: a decode slot for every decoding sequence
        and the blocks of the prefill `chunks`. False, taking nothing, when the pool is short (the caller
        then goes request by request with `reserve_slots`)."""
        kv, g1 = self.kv, self.G + 1
        need = sum(kv.chunk_need(group, q) for group, q in chunks)
        if self.decode_seqs:
            need += kv.crossings(g1) + sum(kv.group_need(group, g1) for group in self.dirty_groups)
        if need > kv.bm.num_free_gpu_blocks:
            return False
        if self.decode_seqs:
            kv.reserve_bucket(g1)
            for group in self.dirty_groups:
                kv.commit_group(group, g1)
        for group, q in chunks:
            allocated = kv.allocate_chunk(group, q)
            assert allocated, "the step's need was counted but a chunk's blocks did not fit"
        return True

    def reserve_slots(self, group: Group, tokens: int) -> bool:
        """One running request's memory for this step: its decode slot, or its prefill chunk of `tokens`;
        False, taking nothing, when the pool is short."""
        kv, g1 = self.kv, self.G + 1
        if group.state == DECODE:
            if kv.group_need(group, g1) > kv.bm.num_free_gpu_blocks:
                return False
            kv.commit_group(group, g1)
            return True
        return kv.allocate_chunk(group, tokens)

    def preempt(self, group: Group) -> None:
        """Preempt a running request by recompute (its blocks, this step's included, are freed); it waits
        again at the front (FCFS) or by its key (priority). A finished one still held (V1's async scheduling:
        its last step's output is not processed yet) only frees its blocks: nothing is left to recompute."""
        if group.state == FINISHED:
            group.preemptions += 1
            self.out.preemptions += 1
            # Where the user's row already summed this request (its last child, its beam round), add it there.
            parent, search = group.parent, group.beam_search
            if parent is not None and parent.state in (FINISHED, REJECTED):
                parent.preemptions += 1
            elif search is not None and search.summed(group):
                search.user.preemptions += 1
            self.release_one(group)
            return
        self.running.remove(group)
        self.requeue(self._preempt(group, RECOMPUTE))

    def _preempt(self, group: Group, mode: str, cache_output: bool = True) -> Group:
        kv, g, out = self.kv, self.G, self.out
        if group.state == DECODE:
            self._stop_decoding(group, g)
            group.join_g = g
        else:  # a chunked prefill in progress loses its computed chunks
            assert group.state == PREFILL
            kv.abort_prefill(group)
            self.prefilling.remove(group)
        self.num_running_seqs -= group.n
        group.preemptions += 1
        out.preemptions += 1
        if group.state == DECODE and (mode == SWAP or (mode == SWAP_GROUPS and group.n > 1)):
            if kv.can_swap_out(group):
                out.swap_out_blocks += kv.swap_out(group, g)
                out.swaps_out += 1
                group.swaps += 1
                group.state = SWAPPED
                return group
            # vLLM V0 stops here: "Aborted due to the lack of CPU swap space" (RuntimeError,
            # vllm/core/scheduler.py:1605-1610 @v0.6.6.post1). The replay recomputes instead and counts it.
            self.swap_space_exhausted += 1
        kv.free(group, g, cache_output)
        group.state = WAITING
        group.dirty = group.fresh_fork = False
        group.prefill_done = 0
        return group

    # ---- swap ------------------------------------------------------------------------------------
    def swap_in(self, group: Group) -> None:
        """Bring the swapped head back; it decodes in this step."""
        assert self.swapped and self.swapped[0] is group
        self.swapped.popleft()
        kv, g1, out = self.kv, self.G + 1, self.out
        out.swap_in_blocks += kv.swap_in(group)
        out.swaps_in += 1
        was_dirty, group.dirty = group.dirty, True
        kv.commit_group(group, g1)  # through the block manager: the family may share a partial block
        group.dirty = was_dirty
        self._add_running(group)
        self.num_running_seqs += group.n
        self._start_decoding(group, g1 - 1, join_at=g1)

    def recompute_swapped(self, group: Group) -> None:
        """A swapped request that cannot come back though nothing runs (it needs the watermark's blocks: V0
        would wait forever): drop its blocks, recompute. Counted (`swapped_recomputed`)."""
        self.swapped_recomputed += 1
        self.kv.drop_swapped(group)
        group.state, group.dirty, group.fresh_fork = WAITING, False, False
        self.waiting.appendleft(group)
