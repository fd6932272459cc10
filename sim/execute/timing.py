"""Step timers. GPU: CUDA events around the step's kernels, with the launches queued behind a short GPU
spin so the events measure device execution, not Python launch gaps. CPU: wall clock."""
from __future__ import annotations

import time

import torch

MIN_SPIN_S = 3e-4
MAX_SPIN_S = 0.2     # a Triton compile inside a step makes queueing slow once; do not spin that long after
SPIN_MARGIN = 1.5


class CpuTimer:
    name = "wall clock (CPU)"

    def begin(self) -> None:
        self._t0 = time.perf_counter()

    def end(self) -> tuple[float, bool]:
        return time.perf_counter() - self._t0, False

    def lengthen(self) -> None:
        return None


class CudaTimer:
    """`begin()` spins the GPU about as long as queueing the step's launches took last time, then records
    the start event; `end()` records the end event, waits, and says whether the spin ran out before the
    last launch was queued (the GPU may then have idled inside the step: the caller re-runs it)."""

    name = "CUDA events, launches queued behind a GPU spin"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = torch.cuda.Event(enable_timing=True)
        self.stop = torch.cuda.Event(enable_timing=True)
        self.enqueue_s = 5e-3
        self.cycles_per_s = self._spin_rate()

    def _spin_rate(self) -> float:
        cycles = 20_000_000
        torch.cuda._sleep(cycles // 10)  # wake the clocks
        self.start.record()
        torch.cuda._sleep(cycles)
        self.stop.record()
        self.stop.synchronize()
        return cycles / (self.start.elapsed_time(self.stop) / 1e3)

    def begin(self) -> None:
        spin = min(max(SPIN_MARGIN * self.enqueue_s, MIN_SPIN_S), MAX_SPIN_S)
        torch.cuda._sleep(int(spin * self.cycles_per_s))
        self.start.record()
        self._t0 = time.perf_counter()

    def end(self) -> tuple[float, bool]:
        queued = time.perf_counter() - self._t0
        starved = self.start.query()  # the spin was over before everything was queued
        self.stop.record()
        self.stop.synchronize()
        self.enqueue_s = max(queued, 0.5 * self.enqueue_s)
        return self.start.elapsed_time(self.stop) / 1e3, starved

    def lengthen(self) -> None:
        self.enqueue_s *= 4


def make_timer(device: torch.device) -> CpuTimer | CudaTimer:
    return CudaTimer(device) if device.type == "cuda" else CpuTimer()
