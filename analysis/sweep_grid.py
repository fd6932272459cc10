"""A sweep's grid expanded into configurations, each checked against its policy's rules before any replay.

`expand_grid` builds every combination's `EngineConfig` (a bad value fails at its line in the spec);
`grid_warnings` refuses a grid key no policy of the sweep reads and warns about settings some ignore.
"""
from __future__ import annotations

import itertools
from typing import Any

from sim.config import DEFAULT_POLICY

from analysis.spec_locator import Locator
from analysis.sweep_spec import SweepConfig


def expand_grid(where: Locator, engine: dict[str, Any], grid: dict[str, list[Any]]) -> list[SweepConfig]:
    """Every combination, in grid order; each one's EngineConfig is built now so a bad value fails up front."""
    from sim import EngineConfig
    from sim.policies import make_policy
    from sim.policies.sglang import check_schedule_policy

    policies = tuple(grid.get("policy", [engine.get("policy", DEFAULT_POLICY)]))
    if "lpm" in grid.get("schedule_policy", [engine.get("schedule_policy")]):
        try:  # sglang's queue order; no other policy reads it
            check_schedule_policy(tuple(map(str, policies)), "lpm", True)
        except ValueError as exc:
            raise where.error("grid.schedule_policy" if "schedule_policy" in grid else "engine.schedule_policy",
                              str(exc).removeprefix("schedule_policy: ")) from None
    configs = []
    for index, values in enumerate(itertools.product(*grid.values())):
        params = dict(zip(grid, values))
        options = {**engine, **params}
        policy = options.pop("policy", DEFAULT_POLICY)
        try:
            # the policy's own rules too (vLLM V1 refuses a token budget below max_num_seqs, ...)
            make_policy(policy).configure(EngineConfig(**options))
            if policy == "sglang":  # lpm without a prefix cache is fcfs
                check_schedule_policy((policy,), options.get("schedule_policy"), options.get("enable_prefix_caching"))
        except (ValueError, TypeError) as exc:
            message = " ".join(str(exc).split())
            # the key the message starts with; else one it names
            culprit = next((k for k in params if message.startswith(f"{k}:")), None) or \
                next((k for k in params if f" {k} " in f" {message} "), None)
            key = f"grid.{culprit}" if culprit else next((f"engine.{k}" for k in engine if message.startswith(f"{k}:")),
                                                         "grid")
            shown = " ".join(f"{k}={v}" for k, v in params.items())
            raise where.error(key, f"configuration {shown}: {message}") from None
        configs.append(SweepConfig(index=index, params=params, policy=policy, engine=options))
    return configs


def grid_warnings(where: Locator, engine: dict[str, Any], grid: dict[str, list[Any]]) -> list[str]:
    """A grid key that no policy of the sweep reads is refused at its line: every value would give the same
    results. One that some policies ignore, or an [engine] setting they ignore, is a warning (those
    configurations repeat each other)."""
    from sim.policies import POLICIES
    from sim.policies.settings import ignored_note, ignored_settings

    policies = [POLICIES[p] for p in grid.get("policy", [engine.get("policy", DEFAULT_POLICY)])]
    warnings = []
    for table, keys in (("grid", grid), ("engine", engine)):
        for name in keys:
            deaf = [cls for cls in policies if ignored_settings(cls, (name,))]
            if not deaf:
                continue
            notes = "; ".join(ignored_note(cls, name).removeprefix(f"{name}: ") for cls in deaf)
            if table == "grid" and len(deaf) == len(policies) and len(keys[name]) > 1:
                raise where.error(f"grid.{name}", f"{notes}: every value gives the same results; set it for a "
                                                  f"policy that reads it, or drop it")
            where_line = where.error(f"{table}.{name}", "").args[0].rstrip(": ")
            warnings.append(f"{where_line}: {notes}" + (": those configurations repeat each other"
                                                         if table == "grid" and len(keys[name]) > 1 else ""))
    return warnings
