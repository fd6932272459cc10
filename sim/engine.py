"""The engine: one model replica stepping through a trace under a policy, as two simpy processes.

`arrivals` delivers each request at its arrival time; `loop` runs steps: the policy picks the batch (and
does its memory through the engine), the engine times the step with the cost model, holds the simulated
clock for that long, then retires what the step finished. Times are integer nanoseconds, so a run of k
decode steps advanced at once lands on exactly the clock that k single steps reach.

Fast-forward: when the policy reports a *steady* decode step (nothing could be admitted, nothing was
preempted), the next steps repeat it until a request finishes, the block pool runs out, or (if the
policy would admit one) a request arrives. The engine computes that horizon, takes the blocks for all of
those steps at once (`PagedKV.reserve_run`) and records them as one run. `fast_forward=False` schedules
every step; both give the same tables (tested).
"""
from __future__ import annotations

import heapq
import random
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import simpy
from simpy.core import URGENT

from memory import BlockManager

from sim.config import EngineConfig
from sim.checks import check_engine
from sim.cost import StepBatch, make_cost_model
from sim.engine_ops import EngineOps
from sim.fastforward import FastForward
from sim.kv_paged import PagedKV
from sim.kv_prefix import request_block_keys
from sim.kv_reserved import ReservedKV
from sim.records import StepRecorder
from sim.state import DECODE, PREFILL, REJECTED, Group

if TYPE_CHECKING:
    from sim.policies.base import Policy
    from traces import Trace


class _Arrival(simpy.events.Event):
    """A timeout that fires before same-time engine events: a step starting at t sees arrivals at t."""

    def __init__(self, env: simpy.Environment, delay: int) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, URGENT, delay)


class Engine(EngineOps, FastForward):
    def __init__(self, trace: "Trace", config: EngineConfig, policy: "Policy", seed: int = 0,
                 progress: bool = False) -> None:
        self.config, self.policy, self.seed = config, policy, seed
        self.bs = config.block_size
        bm_cls = BlockManager
        if config.backend == "execute":  # the real cache needs every copy, swap and fork: log them
            from sim.execute.recording import RecordingBlockManager
            bm_cls = RecordingBlockManager
        if config.enable_prefix_caching and policy.memory != "paged":
            raise ValueError(f"enable_prefix_caching: needs a paged policy (vllm, vllm-swap, sarathi), "
                             f"not {policy.name!r}")
        if policy.memory == "paged":
            self.kv: PagedKV | ReservedKV = PagedKV(config, swap=policy.preemption == "swap", block_manager_cls=bm_cls)
        else:
            self.kv = ReservedKV(config, reserve_true_output=policy.reserve_true_output, block_manager_cls=bm_cls)
        self.cost = make_cost_model(config)
        # execute backend: each step really runs (sim/execute); its measured time advances the clock, and
        # steps go one by one (no fast-forward: every step has its own batch on the GPU).
        self.executor = None
        if config.backend == "execute":
            from sim.execute.executor import Executor
            self.executor = Executor(config, self.kv.bm, seed)
        self._fast_forward = config.fast_forward and self.executor is None
        # (base, slope) of a linear decode-time model, if the cost model has one: scalar fast path.
        self._linear = getattr(self.cost, "decode_coefficients", None)
        self.recorder = StepRecorder()
        arrival = np.asarray(trace.column("arrival_s"), dtype=np.float64)
        self.arrival_ns: list[int] = np.rint(arrival * 1e9).astype(np.int64).tolist()
        self.num_requests = len(self.arrival_ns)
        self._prompt = trace.column("prompt_tokens").tolist()
        self._output = trace.column("output_tokens").tolist()
        self._n = trace.column("n").tolist()
        self._sampling = trace.column("sampling").tolist()
        self._ids = trace.column("request_id").tolist()
        self._prefix_cols = None
        if config.enable_prefix_caching:
            self._prefix_cols = (trace.column("prefix_group").tolist(), trace.column("prefix_tokens").tolist(),
                                 trace.column("hash_ids").tolist())
        self.groups: list[Group | None] = [None] * self.num_requests
        self.waiting: deque[Group] = deque()
        self.running: list[Group] = []          # admitted (prefilling or decoding), by arrival
        self.swapped: deque[Group] = deque()
        self.prefilling: list[Group] = []       # admitted, prefill not complete, in admission order
        self.dirty_groups: list[Group] = []     # decoding groups whose appends go through the block manager
        self.finish_heap: list[tuple[int, int, int, Group]] = []
        self.G = 0                              # decode steps so far (a step with any decode counts)
        self.cursor = 0                         # requests delivered
        self.num_running_seqs = 0               # sequences of running groups (for max_num_seqs)
        self.decode_seqs = 0                    # sequences decoding
        self.num_segments = 0
        self._wake: simpy.Event | None = None
        self._completions: list[Group] = []
        self._stepped_decode = False
        self._next_check = config.check_every or (1 << 62)
        self._progress = progress
        self._reset_step_counters()

    # ---- simpy processes -------------------------------------------------------------------------
    def run(self) -> None:
        self.env = env = simpy.Environment()
        env.process(self._arrivals(env))
        env.process(self._loop(env))
        bar = None
        if self._progress:
            from tqdm import tqdm
            bar = tqdm(total=self.num_requests, unit="req", desc="replay")
            self._bar = bar
        env.run()
        if bar is not None:
            bar.close()
        if self.config.check_every:
            self._check(final=True)

    def _arrivals(self, env: simpy.Environment):
        arrival_ns = self.arrival_ns
        for i in range(self.num_requests):
            delay = arrival_ns[i] - env.now
            if delay > 0:
                yield _Arrival(env, delay)
            self._deliver(i)
            self.cursor = i + 1
            if self._wake is not None and not self._wake.triggered:
                self._wake.succeed()

    def _loop(self, env: simpy.Environment):
        while True:
            if not (self.running or self.waiting or self.swapped):
                if self.cursor >= self.num_requests:
                    return
                self._wake = env.event()
                yield self._wake
                self._wake = None
                continue
            duration = self._step()
            if duration:
                yield env.timeout(duration)
            self._after_step()
            if self.recorder.num_rows >= self._next_check:
                self._check()

    def _deliver(self, i: int) -> None:
        group = Group(i, self._ids[i], self.arrival_ns[i], self._prompt[i], self._output[i], self._n[i],
                      self._sampling[i])
        self.groups[i] = group
        reason = self._never_fits(group)
        if reason is not None:
            group.rejected_on_arrival = True
            self.reject(group, reason)
            return
        if group.is_beam:
            group.rng = random.Random(self.seed * 1_000_003 + i)
        if self._prefix_cols is not None:
            prefix_group, prefix_tokens, hash_ids = self._prefix_cols
            # The request's own blocks are keyed by its index: request ids need not be unique.
            group.block_keys = request_block_keys(group.prompt, self.bs, i, prefix_group[i], prefix_tokens[i],
                                                  hash_ids[i])
        self.waiting.append(group)

    def queued_arrivals_ns(self) -> np.ndarray:
        """Arrival times of the requests that joined the waiting queue (not rejected on arrival)."""
        return np.array([g.arrival_ns for g in self.groups if g is not None and not g.rejected_on_arrival],
                        dtype=np.int64)

    def _never_fits(self, group: Group) -> str | None:
        cfg = self.config
        if group.prompt + group.output > cfg.context_len:
            return (f"prompt_tokens + output_tokens = {group.prompt + group.output} exceeds max_model_len "
                    f"{cfg.context_len}")
        if group.n > cfg.max_num_seqs:
            return f"n={group.n} exceeds max_num_seqs {cfg.max_num_seqs}"
        if not self.policy.chunked_prefill and group.prompt > cfg.token_budget:
            return f"prompt of {group.prompt} tokens exceeds max_num_batched_tokens {cfg.token_budget}"
        return self.kv.never_fits(group)

    # ---- one step ----------------------------------------------------------------------------------
    def _reset_step_counters(self) -> None:
        self.kv.step_copies = 0
        self.step_preempted = self.step_swaps_out = self.step_swaps_in = 0
        self.step_swap_out_blocks = self.step_swap_in_blocks = 0

    def _step(self) -> int:
        self._reset_step_counters()
        plan = self.policy.schedule(self)
        has_decode = plan.decode and self.decode_seqs > 0
        self._stepped_decode = has_decode
        if not plan.prefills and not has_decode:
            self._unstick()
            return 0
        if not plan.prefills and not self.kv.step_copies and not self.step_swap_out_blocks \
                and not self.step_swap_in_blocks and self.executor is None:
            return self._decode_run(plan.steady and not self.step_preempted, plan.arrivals_matter)
        return self._mixed_step(plan.prefills, has_decode)

    def _decode_run(self, steady: bool, arrivals_matter: bool) -> int:
        """Pure decode: one step, or k identical ones when steady."""
        g1 = self.G + 1
        b, c0 = self.decode_seqs, self._decode_context(g1)
        if steady and self._fast_forward and not self.dirty_groups:
            k_max = self._steps_to_finish(g1)
            if self.kv.memory == "paged":
                k_max = min(k_max, self._steps_memory_allows(g1))
            durations = self._horizon(b, c0, k_max, arrivals_matter)
        else:
            durations = self._decode_ns(b, c0, 1)
        k = len(durations)
        paged = self.kv.memory == "paged"
        counts_id = self.recorder.add_counts(self.kv.counts) if k > 1 and paged else -1
        self._record(k, g1, b, 0, 0, b, g1, counts_id, durations)
        if k > 1 and paged:
            self.kv.reserve_run(g1 + 1, g1 + k - 1)
        self.G = g1 + k - 1
        return int(sum(durations)) if type(durations) is list else int(durations.sum())

    def _mixed_step(self, prefills: list[tuple[Group, int]], has_decode: bool) -> int:
        kv = self.kv
        g_now = self.G + 1 if has_decode else self.G
        exec_batch = None
        if self.executor is not None:  # read before the chunks advance `prefill_done`
            from sim.execute.batch import build_exec_batch
            exec_batch = build_exec_batch(self, prefills, has_decode, g_now)
        tokens, pairs, kv_read, sampled = 0, 0.0, 0, 0
        self._completions = []
        for group, q in prefills:
            c = group.prefill_done
            tokens += q
            pairs += q * (c + (q + 1) / 2)
            kv_read += c + q
            group.prefill_done = c + q
            if kv.memory == "paged":
                kv.uncomputed -= q
                if group.pending:
                    kv.prefix.progress(group)
            else:
                kv.computed(group, q)
            if group.prefill_done == group.prefill_len:
                self._completions.append(group)
                sampled += group.n
        b = self.decode_seqs if has_decode else 0
        context = self._decode_context(g_now) if has_decode else 0
        batch = StepBatch(tokens, len(prefills), pairs, kv_read, b, context, b + sampled, kv.step_copies,
                          self.step_swap_out_blocks + self.step_swap_in_blocks)
        if exec_batch is None:
            duration = max(int(self.cost.step_time(batch) * 1e9 + 0.5), 1)
        else:
            duration = self.executor.run(exec_batch, self.recorder.num_rows, batch, self.cost.step_time(batch))
        self._record(1, g_now if has_decode else 0, b, tokens, len(prefills), b + sampled, g_now, -1, duration)
        self.G = g_now
        return duration

    def _record(self, k: int, g_first: int, b: int, prefill_tokens: int, prefill_seqs: int, generated: int,
                g_now: int, counts_id: int, durations) -> None:
        kv = self.kv
        used = kv.used_blocks()
        logical = kv.logical if kv.memory == "paged" else used
        self.recorder.add((
            k, self.env.now, g_first, b, prefill_tokens, prefill_seqs, generated, len(self.running),
            len(self.waiting), len(self.swapped), used, kv.kv_tokens(g_now), kv.reserved_slots(), logical,
            kv.step_copies, self.step_preempted, self.step_swaps_out, self.step_swaps_in,
            self.step_swap_out_blocks, self.step_swap_in_blocks, kv.lazy_b if counts_id >= 0 else 0, counts_id,
        ), durations)
        self.num_segments += 1

    # ---- after a step ------------------------------------------------------------------------------
    def _after_step(self) -> None:
        now = self.env.now
        if self._stepped_decode:
            heap, g = self.finish_heap, self.G
            while heap and heap[0][0] <= g:
                finish_g, _, epoch, group = heapq.heappop(heap)
                if group.epoch == epoch and group.state == DECODE:
                    assert finish_g == g, "a request decoded past its output length"
                    self._finish(group, now)
            if self.dirty_groups:
                self._after_dirty_step()
        completions, self._completions = self._completions, []
        for group in completions:
            if group.state == PREFILL:
                self._prefill_complete(group, now)

    def _unstick(self) -> None:
        """Nothing could run: the queue heads can never be scheduled on this engine. Never deadlock."""
        if self.swapped:
            self.recompute_swapped(self.swapped.popleft())
        elif self.waiting and not self.running:
            self.reject(self.waiting.popleft(), "cannot be scheduled even on an idle engine")
        elif not self.waiting and not self.running:
            return
        else:
            raise AssertionError(f"policy {self.policy.name} scheduled nothing with requests running")

    def reject(self, group: Group, reason: str) -> None:
        group.state, group.reason = REJECTED, reason
        if self._progress:
            self._bar.update(1)

    def _check(self, final: bool = False) -> None:
        self._next_check = self.recorder.num_rows + self.config.check_every
        check_engine(self, final)
