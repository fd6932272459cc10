"""What policies may do to the engine (admit, reserve a decode step, preempt, swap), and how requests move
between queues as steps complete. Mixed into `Engine`; every memory change goes through its `kv`."""
from __future__ import annotations

import bisect
import heapq

from memory import AllocStatus

from sim.state import DECODE, FINISHED, PREFILL, SWAPPED, WAITING, Group, Seq

RECOMPUTE, SWAP = "recompute", "swap"


class EngineOps:
    # ---- admission -------------------------------------------------------------------------------
    def admission_status(self, group: Group) -> AllocStatus:
        """Whether the group's (re)prefill fits the KV pool now (OK), later, or never."""
        return self.kv.status(group)

    def prefill_tokens(self, group: Group) -> int:
        """Tokens the group's (re)prefill computes: the prompt, plus each sample's own output after a
        recompute preemption."""
        return group.prompt + group.n * group.generated

    def prefill_need(self, group: Group) -> int:
        """Tokens the group's (re)prefill would compute if admitted now: `prefill_tokens` less the prompt
        blocks found computed in the prefix cache."""
        prefix = getattr(self.kv, "prefix", None)
        need = self.prefill_tokens(group)
        return need if prefix is None else need - prefix.cached_tokens(group)

    def admit(self, group: Group) -> None:
        """Move the waiting head `group` into the running batch with its KV memory allocated; prefix
        cache hits count as already prefilled (`prefill_done` starts at them)."""
        assert group.state == WAITING and self.waiting and self.waiting[0] is group
        self.waiting.popleft()
        cached = self.kv.allocate(group)
        group.state = PREFILL
        group.prefill_len = self.prefill_tokens(group)
        group.prefill_done = cached
        if group.generated:
            group.recomputed_tokens += group.prefill_len - cached
        if self.kv.memory == "paged":
            self.kv.uncomputed += group.prefill_len - cached
        bisect.insort(self.running, group, key=_arrival_order)
        self.prefilling.append(group)
        self.num_running_seqs += group.n

    # ---- decode memory ---------------------------------------------------------------------------
    def reserve_decode(self, mode: str = RECOMPUTE) -> int:
        """Slots for this step's token of every decoding sequence; when the pool runs short, preempt the
        newest running request (recompute or swap) until the older ones fit. Returns how many were
        preempted. Reserved memory (Orca, static) never runs short."""
        kv = self.kv
        if kv.memory != "paged" or not self.decode_seqs:
            return 0
        g1 = self.G + 1
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
                self.waiting.appendleft(group)
            else:
                self.swapped.append(group)
        return len(preempted)

    def _preempt(self, group: Group, mode: str) -> Group:
        kv, g = self.kv, self.G
        if group.state == DECODE:
            group.generated = group.produced(g)
            group.end_run(g)
            group.join_g = g
            group.epoch += 1
            self.decode_seqs -= len(group.seqs)
            if group.dirty:
                self.dirty_groups.remove(group)
        else:  # a chunked prefill in progress loses its computed chunks
            kv.uncomputed -= group.prefill_len - group.prefill_done
            self.prefilling.remove(group)
        self.num_running_seqs -= group.n
        group.preemptions += 1
        self.step_preempted += 1
        if mode == SWAP and group.state == DECODE and kv.can_swap_out(group):
            self.step_swap_out_blocks += kv.swap_out(group, g)
            self.step_swaps_out += 1
            group.swaps += 1
            group.state = SWAPPED
            return group
        kv.free(group, g)
        group.state = WAITING
        group.dirty = group.fresh_fork = False
        group.prefill_done = 0
        return group

    # ---- swap ------------------------------------------------------------------------------------
    def can_swap_in(self, group: Group) -> bool:
        return self.kv.can_swap_in(group)

    def swap_in(self, group: Group) -> None:
        """Bring the swapped head back; it decodes in this step."""
        assert self.swapped and self.swapped[0] is group
        self.swapped.popleft()
        kv, g1 = self.kv, self.G + 1
        self.step_swap_in_blocks += kv.swap_in(group)
        self.step_swaps_in += 1
        was_dirty, group.dirty = group.dirty, True
        kv.commit_group(group, g1)  # through the block manager: the family may share a partial block
        group.dirty = was_dirty
        bisect.insort(self.running, group, key=_arrival_order)
        self.num_running_seqs += group.n
        self._start_decoding(group, g1 - 1, join_at=g1)

    def recompute_swapped(self, group: Group) -> None:
        """A swapped request that cannot come back (only when nothing runs): drop its blocks, recompute."""
        for seq in group.seqs:
            self.kv.bm.free(seq.sid)
        group.seqs = []
        group.state, group.dirty, group.fresh_fork = WAITING, False, False
        self.waiting.appendleft(group)

    # ---- completions -----------------------------------------------------------------------------
    def _start_decoding(self, group: Group, g: int, join_at: int | None = None) -> None:
        """`group` has produced `generated` tokens by decode step g and decodes from g + 1 on."""
        group.state, group.join_g = DECODE, g
        if self.kv.memory == "paged" and group.dirty:
            self.dirty_groups.append(group)
        else:
            for seq in group.seqs:
                self.kv.join(seq, g if join_at is None else join_at)
        self.decode_seqs += len(group.seqs)
        heapq.heappush(self.finish_heap, (g + group.output - group.generated, group.idx, group.epoch, group))

    def _prefill_complete(self, group: Group, now: int) -> None:
        """The (re)prefill's last chunk ran: it sampled one more token per sample."""
        self.prefilling.remove(group)
        group.generated += 1
        group.run_first_ns = now
        if group.first_token_ns < 0:
            group.first_token_ns = now
        if group.generated >= group.output:
            group.join_g = self.G
            self._finish(group, now)
            return
        if self.kv.memory == "paged" and group.n > 1:
            if len(group.seqs) == 1:
                self.kv.fork_samples(group)
                group.fresh_fork = not group.is_beam
            group.dirty = group.fresh_fork or group.is_beam
        self._start_decoding(group, self.G)

    def _finish(self, group: Group, now: int) -> None:
        if group.state == DECODE:
            group.generated = group.produced(self.G)
            self.decode_seqs -= len(group.seqs)
            if group.dirty:
                self.dirty_groups.remove(group)
        assert group.generated == group.output, f"{group.request_id}: {group.generated} != {group.output}"
        group.end_run(self.G)
        self.kv.free(group, self.G)
        self.running.remove(group)
        self.num_running_seqs -= group.n
        group.state, group.finish_ns = FINISHED, now
        if self._progress:
            self._bar.update(1)

    def _after_dirty_step(self) -> None:
        """After a decode step: beams are re-selected; freshly forked samples now own their last blocks."""
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
        bm = kv.bm
        for i in dropped:
            kv.logical -= bm.num_blocks(group.seqs[i].sid)
            bm.free(group.seqs[i].sid)
        for _ in dropped:
            parent = keep[rng.randrange(len(keep))]
            child = Seq(kv.new_sid(), parent.length)
            bm.fork(parent.sid, child.sid)
            kv.logical += bm.num_blocks(parent.sid)
            keep.append(child)
        group.seqs = keep


def _arrival_order(group: Group) -> int:
    return group.idx
