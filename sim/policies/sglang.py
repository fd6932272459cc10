"""`sglang`: SGLang's scheduler (sglang 0.5.23, `managers/scheduler.py`, `managers/schedule_policy.py`).

A step runs a prefill batch whenever one can be formed, instead of decoding (no mixing: SGLang's
`enable_mixed_chunk` is off by default). A prefill batch takes the request being chunked first, then
waiting requests in queue order - FCFS, or longest cached prefix first (`schedule_policy="lpm"`, while at
most 128 wait and the prefix cache is on) - within a chunk budget (`chunked_prefill_size`, by GPU memory)
and `max_prefill_tokens`, and only while SGLang's estimate of free KV tokens allows: running requests are
charged `new_token_ratio` of their remaining output, new ones all of it (clipped at 4096). A decode step
whose new blocks do not fit retracts running requests (fewest generated tokens first, ties: longest
prompt) to the end of the waiting queue and raises the ratio. Beam search runs in the scheduler (a beam
group of `beam_width` rows decoding in lockstep over the shared prompt); beam groups are retracted last
and, since they cannot be requeued, aborted.

Modelling choices (docs/sim.md, "sglang"): the radix cache is the block manager's prefix cache at the
engine's block size (hits rounded down to whole blocks; eviction least recently released first, a
chain's tail before its head); the whole prompt is allocated at admission as in the other paged policies;
`max_new_tokens` is the request's true output length; `max_running_requests` is `max_num_seqs`.
"""
from __future__ import annotations

from memory import AllocStatus

from sim.policies.base import EnginePolicy, SchedulerView, StepPlan
from sim.policies.sglang_budget import (CLIP_MAX_NEW_TOKENS, WAITING_QUEUE_PREFIX_MATCH_MAX, NewTokenRatio,
                                        default_chunked_prefill_size)
from sim.state import DECODE, RECOMPUTE, Group


def check_schedule_policy(policies: tuple[str, ...], schedule_policy: str | None,
                          enable_prefix_caching: bool | None) -> None:
    """A one-line ValueError where `--schedule-policy lpm` would change nothing: no `sglang` among the
    policies, or no prefix cache (cache-aware order needs one: schedule_policy.py:304-315)."""
    if schedule_policy != "lpm":
        return
    if "sglang" not in policies:
        hint = " (vllm's queue order is --scheduling-policy)" if policies == ("vllm",) else ""
        raise ValueError(f"schedule_policy: lpm is sglang's waiting-queue order; {', '.join(policies)} would ignore "
                         f"it{hint}")
    if not enable_prefix_caching:
        raise ValueError("schedule_policy: lpm orders the queue by cached prefix and needs the prefix cache "
                         "(--enable-prefix-caching; without its radix cache SGLang serves fcfs)")


class SGLangPolicy(EnginePolicy):
    name = "sglang"
    memory = "paged"
    preemption = RECOMPUTE
    chunked_prefill = True
    beam_search = True   # beam groups in the scheduler (beam_search/coordinator.py:14-35, 119-180)
    host_engine = "sglang"  # overlap scheduler on by default; CUDA graphs up to 256 on H100/H200

    def __init__(self) -> None:
        self.ratio = NewTokenRatio()
        # Monitoring (tests): (decode step, retracted request idxs, ratio before, ratio after).
        self.retractions: list[tuple[int, list[int], float, float]] = []

    def schedule(self, sched: SchedulerView) -> StepPlan:
        if not sched.running:
            self.ratio.reset(sched.G)
        prefills, blocked_by_estimate = self._prefill_batch(sched)
        if prefills:
            return StepPlan(prefills=prefills)
        retracted = self._retract_for_decode(sched)
        preempted = sched.reserve_decode(RECOMPUTE)
        lpm = self._lpm_active(sched)
        return StepPlan(
            decode=True,
            # The ratio decays every decode step: a head held back by the estimate may fit a later one.
            steady=not retracted and not preempted and not blocked_by_estimate,
            # Under LPM a newcomer with a longer cached prefix may go first.
            arrivals_matter=not sched.waiting or lpm,
        )

    # ---- prefill batch (PrefillAdder) ------------------------------------------------------------------
    def _lpm_active(self, sched: SchedulerView) -> bool:
        # schedule_policy.py:304-315, 324-340: cache-aware order needs the cache, and <= 128 waiting.
        cfg = sched.config
        return (cfg.schedule_policy == "lpm" and cfg.enable_prefix_caching
                and len(sched.waiting) <= WAITING_QUEUE_PREFIX_MATCH_MAX)

    def _prefill_batch(self, sched: SchedulerView) -> tuple[list[tuple[Group, int]], bool]:
        cfg, bs = sched.config, sched.config.block_size
        rem_chunk = cfg.chunked_prefill_size or default_chunked_prefill_size(cfg.gpu_spec.memory_gib)
        rem_input = cfg.max_prefill_tokens
        prefills: list[tuple[Group, int]] = []
        for group in sched.prefilling:  # the chunked request goes first (scheduler.py:4179-4184)
            chunk = min(group.prefill_len - group.prefill_done, rem_chunk)
            if chunk <= 0:
                break
            prefills.append((group, chunk))
            rem_chunk -= chunk
            rem_input -= chunk
        if not sched.waiting:
            return prefills, False
        if self._lpm_active(sched):
            # Longest cached prefix first; stable, so FCFS among equals (schedule_policy.py:240-243).
            sched.sort_waiting(lambda grp: sched.prefill_need(grp) - sched.prefill_tokens(grp))
        rem_total = sched.num_free_blocks() * bs - self._running_reserve(sched)
        seqs, waiting = sched.num_running_seqs, sched.waiting
        while waiting and rem_chunk > 0 and rem_input > 0:
            group = waiting[0]
            if seqs + group.n > cfg.max_num_seqs:
                break
            need = sched.prefill_need(group)
            if prefills and need >= rem_input:  # schedule_policy.py:1645-1675
                break
            max_new = group.n * min(group.output - group.generated, CLIP_MAX_NEW_TOKENS)
            # Page-ceiled extend + one page + max_new must stay below the estimate (prefill_budget.py:114-131).
            charge = -(-need // bs) * bs + bs + max_new
            if charge >= rem_total:
                return prefills, True
            status = sched.admission_status(group)
            if status is AllocStatus.NEVER:
                sched.reject_head("its KV blocks can never fit the pool")
                continue
            if status is AllocStatus.LATER:
                break
            sched.admit(group)
            chunk = min(group.prefill_len - group.prefill_done, rem_chunk)
            prefills.append((group, chunk))
            rem_chunk -= chunk
            rem_input -= chunk
            rem_total -= charge
            seqs += group.n
            if chunk < group.prefill_len - group.prefill_done:
                break  # it is now the chunked request
        return prefills, False

    def _running_reserve(self, sched: SchedulerView) -> float:
        """KV tokens the estimate keeps for running requests' remaining output (schedule_policy.py:785-799)."""
        ratio, g = self.ratio.value(sched.G), sched.G
        reserve = 0.0
        for group in sched.running:
            if group.state == DECODE:
                left = group.output - group.produced(g)
                reserve += group.n * min(left, CLIP_MAX_NEW_TOKENS) * ratio
            else:  # the chunked request: its last chunk charges its whole output (schedule_policy.py:1140-1223)
                reserve += group.n * min(group.output - group.generated, CLIP_MAX_NEW_TOKENS)
        return reserve

    # ---- decode and retraction -----------------------------------------------------------------------
    def _retract_for_decode(self, sched: SchedulerView) -> int:
        """Retract until the next decode step's new blocks fit (schedule_batch.py:3451-3539)."""
        if sched.decode_need() <= sched.num_free_blocks():
            return 0
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
        if victims:
            before = self.ratio.value(g)
            generated = sum(grp.n * grp.produced(g) for grp in decoding)
            max_new = sum(grp.n * grp.output for grp in decoding)
            after = self.ratio.after_retraction(g + 1, generated, max_new, sum(grp.n for grp in decoding))
            self.retractions.append((g + 1, victims, before, after))
        return len(victims)
