"""Step timers: how long a `SchedulerOutput` takes on the simulated clock. One interface, chosen once.

`make_step_timer(config, seed)` picks the timer for `config.backend`: `AnalyticTimer` (the cost model;
here) or the execute backend's `sim.execute.timer.ExecuteTimer` (each step runs for real and its measured
time advances the clock). The engine never asks which one it has.

Analytic times of pure decode steps use the cost model's closed form `base(B) + slope * context`, the
summed context growing by B per step, so a run of k identical decode steps is timed at once and lands
on exactly the clock that k single steps reach (integer nanoseconds). Host time and CUDA-graph padding
(`sim.host_time.HostModel`) enter both paths the same way: a decode step of B sequences costs the device
time at the padded batch, combined with the host time of B requests and B sampled tokens (added, or
overlapped as `max`, as the engine's config says).
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from itertools import accumulate
from typing import TYPE_CHECKING, Protocol

import numpy as np

from memory import BlockManager

from sim.config import EngineConfig
from sim.cost import StepBatch, make_cost_model
from sim.host_time import HostModel
from sim.scheduler_output import RunningView, SchedulerOutput

if TYPE_CHECKING:
    import pandas as pd

SCALAR_RUN = 24  # runs up to this many steps are timed with scalar arithmetic (numpy costs more)


class StepTimer(Protocol):
    name: str
    fast_forward: bool                       # may one output stand for k identical decode steps
    block_manager_cls: type[BlockManager]    # what the KV layout allocates with

    def bind(self, view: RunningView) -> None:
        """The scheduler whose steps this timer times, as much as a timer may read of it (its KV layout
        built with `block_manager_cls`)."""

    def time(self, out: SchedulerOutput, until_arrival_ns: int | None) -> list[int] | np.ndarray:
        """Durations (ns, >= 1) of the step, or of each step of a run of `out.max_decode_steps` identical
        decode steps, cut at the first step ending at or after `until_arrival_ns` (None: no cut)."""

    def describe(self) -> dict:
        """For config.json's `cost_model`."""

    def summary(self) -> dict:
        """Run totals for summary.json (empty when there is nothing to add)."""

    def tables(self) -> "dict[str, pd.DataFrame]":
        """Extra output tables by file name."""


class AnalyticTimer:
    """Step times from the analytic cost model (`sim.cost`)."""

    name = "analytic"
    block_manager_cls = BlockManager

    def __init__(self, config: EngineConfig) -> None:
        self.cost = make_cost_model(config)
        self.host = HostModel.of(config, self.cost.profile)  # the profile the cost model loaded: read once
        self.fast_forward = config.fast_forward
        self._no_host = not (self.host.step_s or self.host.per_request_s or self.host.per_token_s)
        self._decode_terms: dict[int, tuple[float, float, float]] = {}  # b -> (base, slope, host s): see decode_ns

    def bind(self, view: RunningView) -> None:
        return None  # the cost model needs only the output

    def time(self, out: SchedulerOutput, until_arrival_ns: int | None) -> list[int] | np.ndarray:
        if out.num_decode_seqs and out.is_pure_decode:
            return self.decode_run(out.num_decode_seqs, out.decode_context, out.max_decode_steps, until_arrival_ns)
        return [max(int(self.output_s(out) * 1e9 + 0.5), 1)]

    def output_s(self, out: SchedulerOutput) -> float:
        """`step_s(out.step_batch())`, the same arithmetic, without building the batch (every mixed step)."""
        host = self.host
        decode_seqs, prefill_seqs = out.num_decode_seqs, len(out.prefills)
        graph_tokens = host.padded(decode_seqs) if decode_seqs and not out.prefill_tokens else 0
        device = self.cost.step_time_of(out.prefill_tokens, prefill_seqs, out.prefill_attn_pairs,
                                        out.prefill_kv_tokens, decode_seqs, out.decode_context, out.sampled_seqs,
                                        out.cow_copies, out.swap_out_blocks + out.swap_in_blocks, graph_tokens)
        if self._no_host:  # D + 0.0 and max(D, 0.0) are D (D >= 0)
            return device
        return host.combine(device, host.host_s(decode_seqs + prefill_seqs, out.sampled_seqs))

    def step_s(self, batch: StepBatch) -> float:
        """Seconds of one step: device time (decode-only batches at their CUDA graph's size) with host time."""
        host = self.host
        if batch.decode_seqs and not batch.prefill_tokens:
            padded = host.padded(batch.decode_seqs)
            if padded != batch.decode_seqs:
                batch = replace(batch, graph_tokens=padded)
        device = self.cost.step_time(batch)
        return host.combine(device, host.host_s(batch.decode_seqs + batch.prefill_seqs, batch.sampled_seqs))

    def decode_ns(self, b: int, c0: int, k: int) -> np.ndarray | list[int]:
        """Durations (ns) of k pure decode steps of b sequences, the first with summed context c0.
        Short runs use scalar arithmetic, long ones numpy: the same IEEE operations, the same values."""
        host = self.host
        terms = self._decode_terms.get(b)
        if terms is None:  # per batch size: a run asks twice, and the same sizes recur all along
            terms = self._decode_terms[b] = (*self.cost.decode_coefficients(b, host.padded(b)), host.host_s(b, b))
        base, slope, h = terms
        if k <= SCALAR_RUN:
            if host.overlap:
                return [max(int(max(base + slope * (c0 + b * i), h) * 1e9 + 0.5), 1) for i in range(k)]
            return [max(int(((base + slope * (c0 + b * i)) + h) * 1e9 + 0.5), 1) for i in range(k)]
        device = base + slope * (c0 + b * np.arange(k, dtype=np.int64))
        seconds = np.maximum(device, h) if host.overlap else device + h
        ns = (seconds * 1e9 + 0.5).astype(np.int64)
        return np.maximum(ns, 1, out=ns)

    def decode_run(self, b: int, c0: int, k_max: int, wait: int | None) -> np.ndarray | list[int]:
        """Durations of up to k_max decode steps, cut at the first step ending at or after `wait` ns."""
        if wait is None:
            return self.decode_ns(b, c0, k_max)
        first = self.decode_ns(b, c0, 1)[0]
        # Steps only get longer (contexts grow), so the arrival is seen within wait // first + 1 steps.
        n = min(k_max, wait // first + 2)
        while True:
            durations = self.decode_ns(b, c0, n)
            ends = np.cumsum(durations) if n > SCALAR_RUN else list(accumulate(durations))
            i = bisect_left(ends, wait)
            if i < n:
                return durations[: i + 1]
            if n >= k_max:
                return durations
            n = min(k_max, 2 * n)

    def describe(self) -> dict:
        return self.cost.describe() | self.host.describe()

    def summary(self) -> dict:
        return {}

    def tables(self) -> "dict[str, pd.DataFrame]":
        return {}


def make_step_timer(config: EngineConfig, seed: int) -> StepTimer:
    """The timer of `config.backend` (the one place that looks at it)."""
    if config.backend == "execute":
        from sim.execute.timer import ExecuteTimer  # torch and triton load only for this backend

        return ExecuteTimer(config, seed)
    return AnalyticTimer(config)
