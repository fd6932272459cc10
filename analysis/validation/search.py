"""Shared pieces of the load-based cases: one replay's metrics row, and a capacity search by bisection.

The capacity is `analysis.capacity.capacity_of` over the loads the search tried (the highest load with every
tried load at or below it passing), so it means the same as in `pagedlab compare`; bisection on a log scale only
chooses which loads to try, as Sarathi-Serve's and Vidur's capacity searches do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from analysis.capacity import capacity_of


def replay_metrics(trace: Any, rate: float, policy: str, seed: int = 0, **engine: Any) -> dict[str, float]:
    """Replay `trace` rescaled to mean `rate` req/s under `policy`; the vLLM-named metrics row of the run."""
    from sim import EngineConfig, replay

    from analysis.compare import load_points, trace_rate
    from analysis.runs import RunData, run_metrics

    point = load_points(trace_rate(trace), rates=[rate], source=trace.source)[0]
    result = replay(trace.scale_rate(point.scale), EngineConfig(**engine), policy=policy, seed=seed)
    row = run_metrics(RunData.from_result(result))
    row.update(slot_utilization=result.summary["slot_utilization"], preemptions=result.summary["preemptions"])
    return row


@dataclass
class Search:
    """Loads tried and whether each passed; `capacity` follows `capacity_of` with target 1 (pass or not)."""

    loads: list[float] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    @property
    def capacity(self) -> float:
        return capacity_of(self.loads, [1.0 if ok else 0.0 for ok in self.passed], target=1.0)


def bisect_capacity(evaluate: Callable[[float], tuple[bool, dict]], lo: float, hi: float, steps: int,
                    max_expand: int = 4) -> Search:
    """Find the highest passing load between `lo` and `hi` (widened by factors of 2 up to `max_expand` times
    when an end is on the wrong side), then `steps` geometric bisections."""
    assert 0 < lo < hi and steps >= 0
    search = Search()

    def check(load: float) -> bool:
        ok, row = evaluate(load)
        search.loads.append(load)
        search.passed.append(ok)
        search.rows.append({"load": load, "passed": ok, **row})
        return ok

    for _ in range(max_expand + 1):
        if check(lo):
            break
        hi, lo = lo, lo / 2
    else:
        return search  # even the lowest load fails: capacity NaN
    for _ in range(max_expand + 1):
        if not check(hi):
            break
        lo, hi = hi, hi * 2
    else:
        return search  # a lower bound: every load passed
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if check(mid):
            lo = mid
        else:
            hi = mid
    return search
