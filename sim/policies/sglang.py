"""`sglang`: SGLang's scheduler (sglang 0.5.23, `managers/scheduler.py`, `managers/schedule_policy.py`).

A step runs a prefill batch whenever one can be formed, instead of decoding (no mixing: SGLang's
`enable_mixed_chunk` is off by default). A prefill batch takes the request being chunked first, then
waiting requests in queue order - FCFS, or longest cached prefix first (`schedule_policy="lpm"`, while at
most 128 wait and the prefix cache is on) - within a chunk budget (`chunked_prefill_size`, by GPU memory)
and `max_prefill_tokens`, and only while SGLang's estimate of free KV tokens allows: running requests are
charged `new_token_ratio` of their remaining output, new ones all of it (clipped at 4096; the charges are
`sglang_charges`), the chunked request its chunk (its output with its last chunk); a beam group is charged as
its leader alone, all of whose output is reserved (it runs with ignore_eos), and without the radix cache a
beam request is admitted by SGLang's rule for ignore_eos requests. The free tokens are the pool as it is
during the pass (`PrefillBudget`): a prefix an admitted request locks stops counting at once, and a
candidate's own cached prefix is pinned while it is checked. The batch's KV is allocated once it is chosen,
each request's chunk only (the layout "paged-per-chunk"). A decode step whose new blocks do not fit retracts
running requests (fewest generated tokens first, ties: longest prompt) to the end of the waiting queue and
raises the ratio; when even the last one's does not fit, it is aborted. Beam search runs in
the scheduler (a beam group of `beam_width` rows decoding in lockstep over the shared prompt); beam groups
are retracted last and, since they cannot be requeued, aborted.

With the radix cache on, the waiting requests' cached prefixes are refreshed in the LRU order as SGLang's prefix
matches refresh them: under FCFS every 32 passes, the first 128 waiting requests' (head last); under LPM every
waiting request's, each pass; and a head the estimate refuses.

With the overlap scheduler on (SGLang's default; `async_scheduling`) a request finishing in a step keeps its
KV blocks, its request slot and its place in the estimate's running batch while the next step is scheduled,
and is never retracted: when the next decode does not fit before it leaves, that decode waits for it.

A parallel-sampling request (n > 1) is not forked: SGLang's tokenizer manager first sends its prompt as a
prefill-only request (max_new_tokens 0) and, once that returns, n one-sample requests, which find the prompt
in the radix cache (`managers/tokenizer_manager.py:2130-2151, 2163-2183`); the simulator's child requests
(as under `vllm`), the user's request reported from them as vLLM reports it.

Settings left at the simulator's defaults take SGLang's (`sglang_defaults.sglang_config`): the radix cache
on, no watermark, the KV pool from SGLang's `mem_fraction_static` (`sglang_memory`), `max_running_requests`
from the pool.

Modelling choices (docs/sim.md, "sglang"): the radix cache is the block manager's prefix cache at the
engine's block size (hits rounded down to whole blocks; eviction least recently released first, a
chain's tail before its head); `max_new_tokens` is the request's true output length; `max_running_requests`
is `max_num_seqs`.
"""
from __future__ import annotations

from itertools import islice

from sim.config import EngineConfig
from sim.policies.base import EnginePolicy, SchedulerView, StepPlan
from sim.policies.sglang_adder import next_chunk, select_prefills
from sim.policies.sglang_budget import WAITING_PREFIX_REFRESH_INTERVAL, WAITING_QUEUE_PREFIX_MATCH_MAX, NewTokenRatio
from sim.policies.sglang_charges import new_tokens, paged_input
from sim.policies.sglang_defaults import sglang_config
from sim.policies.sglang_retract import retract_for_decode
from sim.state import RECOMPUTE, Group


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
    # KV per scheduled chunk: a pass allocates each request's extend only (mem_cache/allocation.py:374-489)
    memory = "paged-per-chunk"
    preemption = RECOMPUTE
    chunked_prefill = True
    beam_search = True   # beam groups in the scheduler (beam_search/coordinator.py:14-35, 119-180)
    # n > 1 (parallel): n one-sample requests sharing the prompt through the radix cache
    # (managers/tokenizer_manager.py:2163-2183); beam groups stay one group.
    samples_as_requests = True
    prompt_request_first = True   # ... sent after the prompt alone (tokenizer_manager.py:2130-2151)
    host_engine = "sglang"  # overlap scheduler on by default; CUDA graphs up to 256 on H100/H200
    # With the overlap scheduler the next batch is scheduled before the batch in flight's result is processed
    # (managers/scheduler.py:2083-2120): a request finishing in it is not finished yet, so it stays in the running
    # batch - its KV, its request slot, its place in the estimate - until then (its `release_kv_cache`,
    # scheduler_components/batch_result_processor.py:1466). It is never retracted: see `schedule`.
    finish_lags_a_step = True
    settings = frozenset({"watermark", "enable_prefix_caching", "schedule_policy", "chunked_prefill_size",
                          "max_prefill_tokens"})
    settings_instead = {"max_num_batched_tokens": "chunked_prefill_size and max_prefill_tokens",
                        "prefill_chunk_tokens": "chunked_prefill_size", "swap_space_gib": "retraction (recompute)",
                        "long_prefill_token_threshold": "chunked_prefill_size"}

    def __init__(self) -> None:
        self.ratio = NewTokenRatio()
        # SGLang's `running_batch.batch_is_full`: set when the estimate stops a prefill pass with a batch running
        # (scheduler.py:4281-4284); no pass runs while it is set and no request is half prefilled (4098-4101),
        # until the running batch shrinks (a request finishes, 3967, or is retracted, 4545). Running
        # sequences only grow by admission, which the latch stops: fewer than when it was set means one left.
        self.batch_is_full = False
        self._seqs_when_full = 0
        # Monitoring (tests): (decode step, retracted request idxs, ratio before, ratio after).
        self.retractions: list[tuple[int, list[int], float, float]] = []
        # Monitoring (tests): decode steps that waited for requests finishing in the batch in flight.
        self.waited_for_finishing: list[int] = []
        # SGLang's `_waiting_prefix_refresh_calls`: prefill passes that ordered the queue FCFS with the radix
        # cache on (managers/schedule_policy.py:282-304); every 32nd, from the first, refreshes prefixes.
        self.fcfs_passes = 0

    def engine_settings(self, config: EngineConfig) -> EngineConfig:
        """SGLang's server defaults for the fields left at ours (`sglang_config`): the radix cache on, no
        watermark, SGLang's KV pool, `max_running_requests` from the pool."""
        return sglang_config(super().engine_settings(config))

    def schedule(self, sched: SchedulerView) -> StepPlan:
        if not sched.running:
            self.ratio.reset(sched.G)
        if self.batch_is_full and (not sched.running or sched.num_running_seqs < self._seqs_when_full):
            self.batch_is_full = False
        prefills: list[tuple[Group, int]] = []
        blocked_by_estimate, passes = False, self.fcfs_passes
        if not self.batch_is_full or sched.prefilling:
            prefills, blocked_by_estimate = self._prefill_batch(sched)
            if blocked_by_estimate and (prefills or sched.running):
                self.batch_is_full, self._seqs_when_full = True, sched.num_running_seqs
        if prefills:
            return StepPlan(prefills=prefills)
        if _finishing_in_flight(sched) and sched.decode_need() > sched.num_free_blocks():
            # The decode does not fit while requests finishing in the batch in flight still hold their KV: SGLang
            # runs nothing rather than retract (managers/scheduler.py:4463-4474), and decodes once their result
            # is processed. An empty plan has the scheduler release them and ask again.
            self.waited_for_finishing.append(sched.G + 1)
            return StepPlan()
        retracted = self._retract_for_decode(sched)
        if retracted:
            self.batch_is_full = False
            if not sched.decode_seqs:
                # The last request was aborted: SGLang runs nothing this tick and forms a batch on the next one
                # (managers/scheduler.py:3996-4003); the pass may now fit a waiting request.
                return self.schedule(sched)
        preempted = sched.reserve_decode(RECOMPUTE)
        lpm = self._lpm_active(sched)
        return StepPlan(
            decode=True,
            # Latched, nothing changes until a request leaves; unlatched, a head held back by the estimate
            # may fit after a later step's ratio decay. A pass that ordered the queue FCFS counts toward the
            # prefix refresh, so each is a step of its own (LPM's touches repeat alike in a run: no need).
            steady=not retracted and not preempted and not blocked_by_estimate and self.fcfs_passes == passes,
            # Under LPM a newcomer with a longer cached prefix may go first.
            arrivals_matter=not sched.waiting or lpm,
        )

    # ---- prefill batch (PrefillAdder) ------------------------------------------------------------------
    def _lpm_active(self, sched: SchedulerView) -> bool:
        # schedule_policy.py:304-315, 324-340: cache-aware order needs the cache, and <= 128 waiting.
        cfg = sched.config
        return (cfg.schedule_policy == "lpm" and cfg.enable_prefix_caching
                and len(sched.waiting) <= WAITING_QUEUE_PREFIX_MATCH_MAX)

    def _order_waiting(self, sched: SchedulerView) -> None:
        """SGLang's `calc_priority` (managers/schedule_policy.py:213-280) with the prefix matches it makes, each
        of which refreshes the matched path's LRU time in the radix cache (its `match_prefix`/`touch_prefix`:
        every node of the path gets the current time, mem_cache/unified_cache/unified_tree_core.py:1030-1034)."""
        if not sched.config.enable_prefix_caching:
            return  # FCFS (LPM is FCFS without the cache, 324-340) and nothing cached to refresh (286-292)
        waiting = sched.waiting
        if self._lpm_active(sched):
            # LPM matches every waiting request, in queue order (346-354), the last refreshed last; then it
            # sorts: longest cached prefix first, stable, so FCFS among equals (240-243).
            for group in waiting:
                sched.touch_prefix(group)
            sched.sort_waiting(lambda grp: sched.prefill_need(grp) - sched.prefill_tokens(grp))
            return
        # FCFS (or LPM above 128 waiting) matches nothing; every 32nd such pass, the first included, touches the
        # prefixes of the first 128 waiting requests, the head last, so LRU evicts in reverse queue order
        # (`_touch_waiting_prefixes`, 280-304; active with the default cache: its `supports_fast_match_prefix()` is
        # False, mem_cache/unified_radix_cache.py:644-645, unified_cache/unified_tree_core_interface.py:506-508).
        refresh = self.fcfs_passes % WAITING_PREFIX_REFRESH_INTERVAL == 0
        self.fcfs_passes += 1
        if refresh:
            for group in reversed(list(islice(waiting, WAITING_QUEUE_PREFIX_MATCH_MAX))):
                sched.touch_prefix(group)

    def idle_refusal(self, sched: SchedulerView, group: Group) -> str:
        """The budget check of `_select_prefills` that an idle engine's whole pool still fails."""
        bs, free = sched.config.block_size, sched.num_free_blocks() * sched.config.block_size
        charged = paged_input(sched.prefill_need(group), bs)
        if group.is_beam and not sched.config.enable_prefix_caching:
            if charged <= free:
                return super().idle_refusal(sched, group)
            return (f"SGLang admits a beam leader (ignore_eos) only if its page-ceiled prompt plus one page, "
                    f"{charged} tokens, fits the {free} free tokens of the idle pool (prefill_budget.py:132-140)")
        pinned = sched.evictable_prefix_tokens(group)
        if charged + new_tokens(group) < free - pinned:
            return super().idle_refusal(sched, group)
        of_prefix = f" less the {pinned} of its cached prefix" if pinned else ""
        return (f"SGLang admits a request only if its page-ceiled prompt plus one page plus max_new_tokens, "
                f"{charged} + {new_tokens(group)} tokens, stays below the {free} free tokens of the idle pool"
                f"{of_prefix} (prefill_budget.py:114-131)")

    def _prefill_batch(self, sched: SchedulerView) -> tuple[list[tuple[Group, int]], bool]:
        """The prefill batch and whether the estimate stopped it. Its KV is allocated once it is chosen, each
        request's chunk only (`prepare_for_extend`, managers/scheduler.py:4357 -> `alloc_for_extend`,
        managers/schedule_batch.py:2914-2916, mem_cache/allocation.py:374-489), so no request of the pass finds
        another's chunk in the prefix cache (SGLang inserts it at the next schedule, scheduler.py:3911-3919)."""
        prefills, blocked = self._select_prefills(sched)
        for group, chunk in prefills:
            # The budget keeps every chunk within the pool: SGLang's allocation has no fallback (`alloc_token_slots`
            # raises "Out of memory", allocation.py:152-172).
            allocated = sched.allocate_chunk(group, chunk)
            assert allocated, f"SGLang's budget chose a chunk of {chunk} tokens the KV pool cannot hold"
        return prefills, blocked

    def _select_prefills(self, sched: SchedulerView) -> tuple[list[tuple[Group, int]], bool]:
        """The PrefillAdder pass (`sim.policies.sglang_adder`) at this step's new-token ratio."""
        return select_prefills(sched, self.ratio.value(sched.G), self._order_waiting)

    _next_chunk = staticmethod(next_chunk)

    # ---- decode and retraction -----------------------------------------------------------------------
    def _retract_for_decode(self, sched: SchedulerView) -> int:
        """Retract until the next decode step fits (`sim.policies.sglang_retract`); returns how many left."""
        retracted = retract_for_decode(sched, self.ratio)
        if retracted is None:
            return 0
        victims, before, after = retracted
        self.retractions.append((sched.G + 1, victims, before, after))
        return len(victims)

def _finishing_in_flight(sched: SchedulerView) -> bool:
    """Whether a request finishing in the batch in flight is still held: SGLang's `_reqs_finishing_inflight`
    (managers/scheduler.py:4444-4457), which leaves out beam groups (their rows decode one more tick)."""
    return any(not group.is_beam for group, _ in sched.held)
