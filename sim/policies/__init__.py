"""Scheduler policies, one module each, selectable by name (`POLICIES`)."""
from __future__ import annotations

from sim.policies.base import Policy, StepPlan
from sim.policies.orca_max import OrcaMaxPolicy
from sim.policies.orca_oracle import OrcaOraclePolicy
from sim.policies.orca_pow2 import OrcaPow2Policy
from sim.policies.sarathi import SarathiPolicy
from sim.policies.sglang import SGLangPolicy
from sim.policies.static import StaticPolicy
from sim.policies.vllm import VllmPolicy
from sim.policies.vllm_v0 import VllmV0Policy
from sim.policies.vllm_swap import VllmSwapPolicy

POLICIES: dict[str, type] = {
    cls.name: cls
    for cls in (VllmPolicy, VllmV0Policy, VllmSwapPolicy, SarathiPolicy, OrcaMaxPolicy, OrcaOraclePolicy,
                OrcaPow2Policy, StaticPolicy, SGLangPolicy)
}


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"policy: unknown name {name!r}; valid names: {', '.join(POLICIES)}") from None


__all__ = ["POLICIES", "Policy", "StepPlan", "make_policy"]
