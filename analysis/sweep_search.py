"""Which loads a configuration replays: a fixed list, or a bisection for its capacity.

Both walk a list of rate scales and hand out the next ones to probe (`take_ready`), each probe an independent
replay, and take back each probe's SLO attainment (`record`), in any order. The bisection walks the grid
low, low + precision, ..., high by index, so its probes are points of the full grid of the same precision and
its answer is the capacity that grid would give (`analysis.capacity.capacity_of`) when attainment falls with
load. Its first two probes (low and high) are independent and go out together; each later one halves the
interval between the highest passing and the lowest failing index.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.capacity import capacity_of, meets_slos
from analysis.sweep_spec import Search


def grid_scales(search: Search) -> list[float]:
    """low, low + precision, ..., high (the last step may be shorter), rounded to 12 significant digits so
    the same spec gives the same floats everywhere."""
    steps = math.ceil((search.high - search.low) / search.precision - 1e-9)
    return [float(f"{min(search.low + k * search.precision, search.high):.12g}") for k in range(steps + 1)]


class LoadWalk:
    """Probes at rate scales; `capacity` is the highest one with every probe up to it meeting the target."""

    def __init__(self, scales: list[float], target: float) -> None:
        assert scales == sorted(scales) and len(set(scales)) == len(scales), "scales ascending, distinct"
        self.scales = scales
        self.target = target
        self.attainment: dict[float, float] = {}
        self._handed_out: set[float] = set()

    def _next_scales(self) -> list[float]:
        raise NotImplementedError

    def take_ready(self) -> list[float]:
        """Scales to replay now (each handed out once)."""
        ready = [s for s in self._next_scales() if s not in self._handed_out]
        self._handed_out.update(ready)
        return ready

    def record(self, scale: float, attainment: float) -> None:
        assert scale in self._handed_out and scale not in self.attainment, f"unexpected probe {scale}"
        self.attainment[scale] = attainment

    def passes(self, scale: float) -> bool:
        return bool(meets_slos(pd.Series([self.attainment[scale]], dtype=float), self.target).iloc[0])

    @property
    def done(self) -> bool:
        fresh = [s for s in self._next_scales() if s not in self._handed_out]
        return len(self.attainment) == len(self._handed_out) and not fresh

    @property
    def capacity_scale(self) -> float:
        probed = sorted(self.attainment)
        return capacity_of(probed, [self.attainment[s] for s in probed], self.target)

    @property
    def lower_bound(self) -> bool:
        """True when every load probed passed: the capacity is at least the highest, perhaps more. (A pass
        above a failure, at fixed loads, does not make one: the capacity stops at the failure.)"""
        return all(self.passes(s) for s in self.attainment)


class FixedLoads(LoadWalk):
    """Every scale, all at once (as `pagedlab compare`)."""

    def _next_scales(self) -> list[float]:
        return self.scales


class Bisection(LoadWalk):
    """The highest grid scale meeting the target: probe both ends, then halve [highest pass, lowest fail]."""

    def __init__(self, search: Search, target: float) -> None:
        super().__init__(grid_scales(search), target)

    def _next_scales(self) -> list[float]:
        low, high = self.scales[0], self.scales[-1]
        if low not in self.attainment or high not in self.attainment:
            return [low, high]
        if not self.passes(low) or self.passes(high):
            return []  # capacity none, or at least `high`
        lo = max(i for i, s in enumerate(self.scales) if s in self.attainment and self.passes(s))
        hi = min(i for i, s in enumerate(self.scales) if s in self.attainment and not self.passes(s))
        assert lo < hi, "a probe passed above a failing one: bisection only probes between them"
        return [] if hi - lo <= 1 else [self.scales[(lo + hi) // 2]]

    @staticmethod
    def max_replays(search: Search) -> int:
        """Replays one search needs at most: both ends, then ceil(log2(steps)) halvings."""
        return 2 + math.ceil(math.log2(len(grid_scales(search)) - 1))
