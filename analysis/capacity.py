"""Capacity: the highest load at which a policy still meets its SLOs.

A run *meets the SLOs* when its SLO attainment (good requests / all requests, rejected ones counting as not
good) is at least the target, 90% by default (the attainment goal DistServe uses). The capacity of a policy is
the highest tested load L such that every tested load up to L meets the SLOs: a pass above a failure is noise,
not capacity. NaN when even the lowest load fails; a lower bound when every tested load passes. The true
capacity lies between L and the first failing load, which the report shows as a range (`16-24`), `< 4` when
the lowest load fails and `40+` when none does.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.slo import DEFAULT_ATTAINMENT


def check_attainment_target(target: float) -> float:
    if not 0.0 < target <= 1.0:
        raise ValueError(f"slo-attainment: must be in (0, 1], got {target}")
    return float(target)


def meets_slos(slo_attainment: pd.Series, target: float = DEFAULT_ATTAINMENT) -> pd.Series:
    """True where a run's attainment reaches the target (NaN attainment, i.e. no SLO given, is False)."""
    check_attainment_target(target)
    return slo_attainment.fillna(-1.0) >= target


def capacity_of(loads: list[float], attainments: list[float], target: float = DEFAULT_ATTAINMENT) -> float:
    """Highest load with every load at or below it meeting `target`; NaN if the lowest fails."""
    check_attainment_target(target)
    assert len(loads) == len(attainments), "one attainment per load"
    capacity = math.nan
    for load, attainment in sorted(zip(loads, attainments)):
        if not (attainment >= target):  # NaN fails too
            break
        capacity = float(load)
    return capacity


def first_failing_load(loads: list[float], attainments: list[float], target: float = DEFAULT_ATTAINMENT) -> float:
    """The lowest tested load that misses `target` (NaN when every load meets it): capacity is below it."""
    failing = [load for load, attainment in zip(loads, attainments) if not (attainment >= target)]
    return float(min(failing)) if failing else math.nan


CAPACITY_COLUMNS = ["policy", "capacity", "first_failing_load", "max_load_tested", "all_loads_met"]


def capacity_by_policy(
    table: pd.DataFrame, *, target: float = DEFAULT_ATTAINMENT, load_column: str = "rate"
) -> pd.DataFrame:
    """One row per policy (first-seen order): `capacity`, `first_failing_load`, `max_load_tested`, `all_loads_met`."""
    rows = []
    for policy, group in table.groupby("policy", sort=False):
        loads = group[load_column].astype(float).tolist()
        attainments = group["slo_attainment"].astype(float).tolist()
        rows.append(
            {
                "policy": policy,
                "capacity": capacity_of(loads, attainments, target),
                "first_failing_load": first_failing_load(loads, attainments, target),
                "max_load_tested": max(loads),
                "all_loads_met": bool(all(a >= target for a in attainments)),
            }
        )
    return pd.DataFrame(rows, columns=CAPACITY_COLUMNS)


def format_capacity(capacity: float, all_loads_met: bool, first_failing: float = math.nan) -> str:
    """Where the capacity lies among the tested loads: `16-24` (16 passed, 24 failed), `< 4` (even the
    lowest, 4, failed), `40+` (every tested load passed, 40 the highest); `none` when nothing is known. A trace
    whose requests all arrive at once has no rate (every scale of it is infinite): only met or not met."""
    if math.isinf(capacity) or math.isinf(first_failing):
        return "met (all at once)" if all_loads_met else "not met (all at once)"
    if math.isnan(capacity):
        return "none" if math.isnan(first_failing) else f"< {first_failing:.3g}"
    if all_loads_met or math.isnan(first_failing):
        return f"{capacity:.3g}+"
    return f"{capacity:.3g}-{first_failing:.3g}"
