"""`vllm`: vLLM V1's scheduler (vllm 0.33.0) with `vllm serve` defaults; rules and source lines in
docs/sim.md. There are no prefill and decode phases: every step has one token budget
(`max_num_batched_tokens`) shared by decodes and prefill chunks. Running requests are served first, in
`running` order (a decode one token, an unfinished prefill up to the rest of the budget), then waiting requests
(FCFS, or by (priority, arrival) under `scheduling_policy="priority"`), chunked to the leftover budget;
nobody is admitted in a step that preempted. A waiting request is admitted only if its whole current
sequence fits (`scheduler_reserve_full_isl`), above V1's watermark (0 by default), but KV blocks are
allocated only for the chunk scheduled in each step. When a running request's decode slot or chunk does
not fit, V1's victim is preempted by recompute (V1 has no swap): the last running request (admission
order) under FCFS, the worst (priority, arrival) under priority. Prefix caching is on by default. A request
with n > 1 samples runs as n one-sample requests sharing the prompt through the prefix cache; requests.csv
reports the user's request. Beam search is not part of V1's engine: its API server runs it as rounds of
1-token requests (`sim.v1_beam_search`), which go through this scheduler as any request; requests.csv
reports the user's request. The KV pool is sized as V1 profiles it (`sim.v1_memory`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from sim.config import EngineConfig, with_server_defaults
from sim.policies.base import EnginePolicy, SchedulerView, StepPlan, admit_head
from sim.presets import GIB
from sim.state import DECODE, FINISHED, PREFILL, RECOMPUTE, WAITING, Group
from sim.v1_memory import v1_memory

# vllm/config/cache.py:215 (gpu_memory_utilization), :257 (enable_prefix_caching);
# vllm/config/scheduler.py:196-201 (watermark 0.0).
V1_DEFAULTS = {"gpu_memory_utilization": 0.92, "enable_prefix_caching": True, "watermark": 0.0}


def serve_limits(config: EngineConfig) -> tuple[int, int]:
    """`vllm serve`'s (max_num_batched_tokens, max_num_seqs) for the GPU: >= 160 GiB 16384/1024; 70-160 GiB
    and not an A100 8192/1024; else 2048/256 (vllm/engine/arg_utils.py:2973-3006)."""
    gpu = config.gpu_spec
    if gpu.memory_gib >= 160:
        return 16384, 1024
    if gpu.memory_gib >= 70 and not gpu.name.startswith("a100"):
        return 8192, 1024
    return 2048, 256


def v1_config(config: EngineConfig) -> EngineConfig:
    """`config` with V1's defaults for every field left at the simulator's default; a setting V1 refuses
    raises a one-line ValueError."""
    tokens, seqs = serve_limits(config)
    config = with_server_defaults(config, dict(V1_DEFAULTS, max_num_batched_tokens=tokens, max_num_seqs=seqs))
    if config.enable_chunked_prefill is False and config.token_budget < config.context_len:
        # vllm/config/scheduler.py:318-329
        raise ValueError(f"max_num_batched_tokens: {config.token_budget} is smaller than max_model_len "
                         f"{config.context_len} with chunked prefill off; vLLM V1 refuses this")
    if config.token_budget < config.max_num_seqs:
        # vllm/config/scheduler.py:317-360
        raise ValueError(f"max_num_batched_tokens: {config.token_budget} is smaller than max_num_seqs "
                         f"{config.max_num_seqs}; vLLM V1 refuses this")
    if config.long_prefill_token_threshold > config.context_len:
        raise ValueError(f"long_prefill_token_threshold: {config.long_prefill_token_threshold} exceeds "
                         f"max_model_len {config.context_len}; vLLM V1 refuses this")
    if config.num_gpu_blocks is None:  # V1's profiled budget instead of our constant activation reserve
        memory = v1_memory(config)
        if memory.num_gpu_blocks < 1:
            raise ValueError(f"gpu_memory_utilization: model {config.model} leaves "
                             f"{memory.available / GIB:.2f} GiB for the KV cache on {config.gpu} under vLLM V1's "
                             f"memory profile (no KV block fits)")
        needed = -(-config.context_len // config.block_size)
        if memory.num_gpu_blocks < needed:  # v1/core/kv_cache_planning.py:50-80
            raise ValueError(f"max_model_len: one {config.context_len}-token sequence needs {needed} KV blocks; "
                             f"vLLM V1's memory profile leaves {memory.num_gpu_blocks} on {config.gpu}; vLLM V1 "
                             f"refuses this")
        config = replace(config, num_gpu_blocks=memory.num_gpu_blocks)
    return config


class VllmPolicy(EnginePolicy):
    name = "vllm"
    # KV blocks per scheduled chunk: kv_cache_manager.py:551-588 via sched/scheduler.py:914-918, 1435-1452
    memory = "paged-per-chunk"
    # The watermark only while requests run: sched/scheduler.py:1451; kv_cache_manager.py:518-525, 546
    watermark_while_idle = False
    preemption = RECOMPUTE
    chunked_prefill = True
    beam_search = False            # not in the engine: the API server sends rounds of requests
    beam_search_as_requests = True  # (entrypoints/generate/beam_search/online.py:93-116; sim.v1_beam_search)
    host_engine = "vllm-v1"  # async scheduling on by default (docs/engines.md), CUDA graphs up to 512
    # With async scheduling, step N+1 is scheduled before step N's output is processed (`step_with_batch_queue`,
    # v1/engine/core.py:733-777): a request finishing in step N is skipped, not freed (sched/scheduler.py:800-814),
    # and keeps its slot (1073) and blocks until `update_from_output`, after that schedule.
    finish_lags_a_step = True
    settings = frozenset({"max_num_batched_tokens", "watermark", "enable_prefix_caching", "long_prefill_token_threshold",
                          "scheduling_policy", "enable_chunked_prefill"})
    settings_instead = {"prefill_chunk_tokens": "max_num_batched_tokens (one budget for decodes and chunks)",
                        "chunked_prefill_size": "max_num_batched_tokens", "max_prefill_tokens": "max_num_batched_tokens"}
    running_by_admission = True    # sched/scheduler.py:1549 (admitted and resumed requests are appended)
    samples_as_requests = True     # n > 1: n child requests (v1/engine/async_llm.py:541-563)

    def engine_settings(self, config: EngineConfig) -> EngineConfig:
        """V1's `vllm serve` defaults for the fields left at ours (`v1_config`)."""
        config = v1_config(config)
        self.chunked_prefill = config.enable_chunked_prefill is not False  # config/scheduler.py:134
        return config

    def victim(self, config: EngineConfig) -> Callable[[list[Group]], Group]:
        """Whom V1 preempts when a running request's slots do not fit (sched/scheduler.py:932-938): the
        last of `running` (admission order) under FCFS; under priority the largest (priority, arrival)."""
        if config.scheduling_policy == "priority":
            return lambda running: max(running, key=_priority_key)
        return _last

    def schedule(self, sched: SchedulerView) -> StepPlan:
        cfg = sched.config
        # A per-request cap, ignored while only one request is running or waiting (scheduler.py:757-763).
        cap = cfg.long_prefill_token_threshold
        if cap <= 0 or len(sched.running) + len(sched.waiting) <= 1:
            cap = cfg.token_budget
        # The running loop (scheduler.py:793-1004): its tokens, and their memory at once when the pool
        # holds it; else V1's walk request by request, preempting.
        chunks, budget = _running_tokens(sched, cap)
        preempted = 0
        if not sched.reserve_step(chunks):
            chunks, budget, preempted = _walk(sched, cap, self.victim(cfg), cfg.scheduling_policy == "priority")
        if not preempted:  # scheduler.py:1050
            seqs, waiting = sched.num_running_seqs, sched.waiting
            while waiting and budget > 0:
                group = waiting[0]
                if not self.chunked_prefill and min(sched.prefill_need(group), cap) > budget:
                    break  # a prompt is never split with chunking off (scheduler.py:1332-1344)
                admitted = admit_head(sched, seqs)  # the whole sequence must fit (kv_cache_manager.py:531-548)
                if admitted is None:
                    continue
                if not admitted:
                    break
                chunk = min(group.prefill_len - group.prefill_done, budget, cap)
                if chunk > 0:
                    # Only the first chunk's blocks (scheduler.py:1435-1452); the gate above makes it fit.
                    allocated = sched.allocate_chunk(group, chunk)
                    assert allocated, "admission gate passed but the first chunk's blocks did not fit"
                    chunks.append((group, chunk))
                budget -= chunk
                seqs += group.n
        return StepPlan(
            prefills=chunks,
            decode=sched.decode_seqs > 0,
            steady=not chunks and not preempted,
            arrivals_matter=not sched.waiting,
        )


def _running_tokens(sched: SchedulerView, cap: int) -> tuple[list[tuple[Group, int]], int]:
    """V1's running loop if every allocation succeeds (scheduler.py:795-849, 1002): walking `running` in
    order while budget is left, a decode takes one token and an unfinished prefill `min(rest, cap,
    budget)`. Returns the chunks and the budget left.

    Taken as decodes first, then chunks in running order: the same tokens, because the budget never runs
    out before the last running request. A request was admitted only with budget left after everyone
    before it had its whole share (`min(rest, cap)` or 1), and afterwards those before it only leave or
    need less (appended and resumed requests go to the end), so only the last one can be cut; the
    assertion below holds the simulator to that.
    """
    budget = sched.config.token_budget - sched.decode_seqs
    assert budget >= 0, "max_num_seqs <= max_num_batched_tokens keeps every decode in the budget"
    chunks = []
    for group in sched.prefilling:
        if budget <= 0:
            break
        want = min(group.prefill_len - group.prefill_done, cap)
        q = min(want, budget)
        assert q == want or group is _last_unfinished(sched.running), \
            "V1's budget ran out before the last running request"
        chunks.append((group, q))
        budget -= q
    return chunks, budget


def _walk(sched: SchedulerView, cap: int, victim: Callable[[list[Group]], Group],
          priority: bool) -> tuple[list[tuple[Group, int]], int, int]:
    """V1's running loop with memory (scheduler.py:795-1004), when the step does not fit the pool: each
    request in `running` order takes its tokens and blocks; while they do not fit, the victim is
    preempted by recompute (932-977), and a victim scheduled earlier in this step gives its tokens back
    (944-962); a request that is its own victim ends the loop under FCFS (978-980, 993) and is passed over
    under priority (982-991). Returns the chunks, the budget left and how many were preempted."""
    budget, running = sched.config.token_budget, sched.running
    scheduled: dict[Group, int] = {}
    preempted = i = 0
    while i < len(running) and budget > 0:
        group = running[i]
        if group.state == FINISHED:  # its last step is in flight (async scheduling): skipped (800-814)
            i += 1
            continue
        q = 1 if group.state == DECODE else min(group.prefill_len - group.prefill_done, cap, budget)
        while not sched.reserve_slots(group, q):
            out = victim(running)
            if running.index(out) < i:
                i -= 1
            budget += scheduled.pop(out, 0)
            sched.preempt(out)
            preempted += 1
            if out is group:
                break
        if group.state == WAITING:      # it was its own victim
            if priority:
                continue
            break
        scheduled[group] = q
        budget -= q
        i += 1
    assert all(grp.state == FINISHED for grp in running[i:]), \
        "V1's running loop reaches every running request it does not preempt"
    return [(group, q) for group, q in scheduled.items() if group.state == PREFILL], budget, preempted


def _last(running: list[Group]) -> Group:
    return running[-1]


def _last_unfinished(running: list[Group]) -> Group | None:
    return next((grp for grp in reversed(running) if grp.state != FINISHED), None)


def _priority_key(group: Group) -> tuple[int, int]:
    return group.priority, group.arrival_ns
