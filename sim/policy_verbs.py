"""`PolicyVerbs`: the verbs a policy calls (`policies.base.SchedulerView`) beyond `admit` (of
`RequestQueues`) and `reserve_decode`, `reserve_step`, `reserve_slots`, `preempt`, `swap_in` (of
`PreemptingQueues`): what the pool holds for a request, the waiting head's rejection, and for policies that
order the queue or choose their own victims (sglang) sorting, retraction and abort.

Each asks the `KVLayout` (`kv`) or moves a request between the queues; none decides anything (the policy
does). `sim.scheduler.Scheduler` extends this with arrivals, planning and applying steps.
"""
from __future__ import annotations

from typing import Any, Callable

from memory import AllocStatus

from sim.preemption import PreemptingQueues
from sim.state import DECODE, RECOMPUTE, REJECTED, Group


class PolicyVerbs(PreemptingQueues):
    # ---- asking about memory, the waiting head ------------------------------------------------------
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
        return self.prefill_tokens(group) - self.kv.cached_tokens(group)

    def allocate_chunk(self, group: Group, tokens: int) -> bool:
        """The blocks of a scheduled prefill chunk (a no-op where admission took the whole prefill)."""
        return self.kv.allocate_chunk(group, tokens)

    def reject_head(self, reason: str) -> None:
        """The waiting head can never run: it leaves with `reason`."""
        self.reject(self.waiting.popleft(), reason)

    def swap_in_status(self, group: Group) -> AllocStatus:
        """Whether the swapped group fits back now (OK), later, or never."""
        return self.kv.swap_in_status(group)

    def fail_swapped(self, reason: str) -> None:
        """The swapped head can never come back: its CPU blocks are freed and it leaves with `reason`."""
        group = self.swapped.popleft()
        self.kv.drop_swapped(group)
        self.reject(group, reason)

    # ---- for policies that order the queue or pick their own victims (sim/policies/sglang.py) ---------
    def sort_waiting(self, key: Callable[[Group], Any]) -> None:
        """Reorder the waiting queue by `key` (stable): SGLang sorts its queue in place each prefill round."""
        ordered = sorted(self.waiting, key=key)
        self.waiting.clear()
        self.waiting.extend(ordered)

    def touch_prefix(self, group: Group) -> None:
        """SGLang matched a waiting request's prefix against its radix cache, which refreshes the matched
        path's LRU time: the request's evictable cached prefix becomes the most recently used."""
        self.kv.touch_prefix(group)

    def evictable_prefix_tokens(self, group: Group) -> int:
        """Tokens of the group's computed cached prefix in blocks no request holds (counted free)."""
        return self.kv.evictable_prefix_blocks(group) * self.config.block_size

    def decode_need(self) -> int:
        """Blocks the next decode step of every decoding sequence would take."""
        if not self.decode_seqs:
            return 0
        kv, g1 = self.kv, self.G + 1
        return kv.crossings(g1) + sum(kv.group_need(group, g1) for group in self.dirty_groups)

    def num_free_blocks(self) -> int:
        """Free GPU blocks, evictable prefix-cache blocks included."""
        return self.kv.bm.num_free_gpu_blocks

    def retract(self, group: Group) -> None:
        """Preempt the chosen decoding request by recompute; it joins the END of the waiting queue. SGLang
        frees its KV without inserting the unfinished part into the radix tree (`release_kv_cache(...,
        checkpoint=False)`, managers/schedule_batch.py:2389; mem_cache/common.py:422-433): its prompt, inserted
        after its prefill, stays cached, its output does not."""
        assert group.state == DECODE
        self.running.remove(group)
        self.waiting.append(self._preempt(group, RECOMPUTE, cache_output=False))

    def abort(self, group: Group, reason: str) -> None:
        """End a decoding request early, without its output (SGLang aborts a beam group it would have to
        retract): its memory is freed and it leaves with `reason`, counted with the rejected."""
        assert group.state == DECODE
        g = self.G
        self._stop_decoding(group, g)
        self.kv.free(group, g)
        self.running.remove(group)
        self.num_running_seqs -= group.n
        self.reject(group, reason)

    def reject(self, group: Group, reason: str) -> None:
        """The request leaves unfinished with `reason` (on arrival, at the waiting head, or aborted)."""
        group.state, group.reason = REJECTED, reason
        self._done(group)
