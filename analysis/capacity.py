"""Capacity: the highest load at which a policy still meets its SLOs.

A run *meets the SLOs* when its SLO attainment (good requests / all requests, rejected ones counting as not
good) is at least the target, 90% by default (the attainment goal DistServe uses). The capacity of a policy is
the highest tested load L such that every tested load up to L meets the SLOs: a pass above a failure is noise,
not capacity. NaN when even the lowest load fails; a lower bound when every tested load passes.
"""
from __future__ import annotations

import math

import pandas as pd

DEFAULT_ATTAINMENT = 0.9


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


def capacity_by_policy(
    table: pd.DataFrame, *, target: float = DEFAULT_ATTAINMENT, load_column: str = "rate"
) -> pd.DataFrame:
    """One row per policy (first-seen order): `capacity`, `max_load_tested`, `all_loads_met`."""
    rows = []
    for policy, group in table.groupby("policy", sort=False):
        loads = group[load_column].astype(float).tolist()
        attainments = group["slo_attainment"].astype(float).tolist()
        rows.append(
            {
                "policy": policy,
                "capacity": capacity_of(loads, attainments, target),
                "max_load_tested": max(loads),
                "all_loads_met": bool(all(a >= target for a in attainments)),
            }
        )
    return pd.DataFrame(rows, columns=["policy", "capacity", "max_load_tested", "all_loads_met"])


def format_capacity(capacity: float, all_loads_met: bool) -> str:
    """`none`, `1.28`, or `32+` (a lower bound: every tested load met the SLOs)."""
    if math.isnan(capacity):
        return "none"
    return f"{capacity:.3g}" + ("+" if all_loads_met else "")
