"""Fast-forward: how many identical decode steps follow a steady one, and how long each takes.

A steady decode step repeats until a request finishes, the free blocks no longer cover the sequences that
cross a block boundary, or (when the policy would admit it) a request arrives. Step times are the cost
model's closed form `base(B) + slope * context`, the summed context growing by B per step.
"""
from __future__ import annotations

import heapq
from bisect import bisect_left
from itertools import accumulate

import numpy as np

from sim.state import DECODE

NEVER = 1 << 62
SCALAR_RUN = 24  # runs up to this many steps are timed with scalar arithmetic (numpy costs more)


class FastForward:
    def _decode_context(self, g: int) -> int:
        context = self.kv.lazy_context(g)
        for group in self.dirty_groups:
            for seq in group.seqs:
                context += seq.length
        return context

    def _decode_ns(self, b: int, c0: int, k: int) -> np.ndarray | list[int]:
        """Durations (ns) of k pure decode steps of b sequences, the first with summed context c0.
        Short runs use scalar arithmetic, long ones numpy: the same IEEE operations, the same values."""
        if k <= SCALAR_RUN and self._linear is not None:
            base, slope = self._linear(b)
            return [max(int((base + slope * (c0 + b * i)) * 1e9 + 0.5), 1) for i in range(k)]
        context = c0 + b * np.arange(k, dtype=np.int64)
        ns = (self.cost.decode_times(b, context) * 1e9 + 0.5).astype(np.int64)
        return np.maximum(ns, 1, out=ns)

    def _steps_to_finish(self, g1: int) -> int:
        """Steps from g1 up to and including the first in which a decoding request finishes."""
        heap = self.finish_heap
        while heap:
            finish_g, _, epoch, group = heap[0]
            if group.epoch == epoch and group.state == DECODE:
                return finish_g - g1 + 1
            heapq.heappop(heap)
        return NEVER

    def _steps_memory_allows(self, g1: int) -> int:
        """Step g1 (already reserved) plus the following steps whose new blocks fit in the free pool."""
        counts, bs, lazy_b = self.kv.counts, self.bs, self.kv.lazy_b
        free = self.kv.bm.num_free_gpu_blocks
        if lazy_b == 0:
            return NEVER
        cycles = free // lazy_b
        left, steps = free - cycles * lazy_b, cycles * bs
        for i in range(1, bs + 1):
            need = counts[(g1 + i) % bs]
            if need > left:
                break
            left -= need
            steps += 1
        return steps + 1

    def _horizon(self, b: int, c0: int, k_max: int, arrivals_matter: bool) -> np.ndarray | list[int]:
        """Durations of the run's steps: up to k_max, cut at the first step starting at or after the
        next arrival when an arrival could change the plan."""
        if not arrivals_matter or self.cursor >= self.num_requests:
            return self._decode_ns(b, c0, k_max)
        wait = self.arrival_ns[self.cursor] - self.env.now
        first = self._decode_ns(b, c0, 1)[0]
        # Steps only get longer (contexts grow), so the arrival is seen within wait // first + 1 steps.
        n = min(k_max, wait // first + 2)
        while True:
            durations = self._decode_ns(b, c0, n)
            ends = np.cumsum(durations) if n > SCALAR_RUN else list(accumulate(durations))
            i = bisect_left(ends, wait)
            if i < n:
                return durations[: i + 1]
            if n >= k_max:
                return durations
            n = min(k_max, 2 * n)
