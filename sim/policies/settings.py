"""The engine settings that only some policies read (`POLICY_SETTINGS`), and which of them a policy
ignores when the user sets them (`ignored_settings`). Each policy lists those it reads in its class
attribute `settings`, and what it reads in place of one it ignores in `settings_instead`; a test replays
every policy with each setting changed and holds both to the code."""
from __future__ import annotations

from typing import Iterable

# Settings every policy reads (max_num_seqs, block_size, the pool, the model, ...) are not listed.
POLICY_SETTINGS: tuple[str, ...] = (
    "max_num_batched_tokens", "prefill_chunk_tokens", "swap_space_gib", "watermark", "max_output_tokens",
    "enable_prefix_caching", "long_prefill_token_threshold", "scheduling_policy", "enable_chunked_prefill",
    "schedule_policy", "chunked_prefill_size", "max_prefill_tokens",
)


def ignored_settings(policy: type, names: Iterable[str]) -> list[str]:
    """Of `names` (settings the user set), those `policy` never reads, in `POLICY_SETTINGS` order."""
    given = set(names)
    return [name for name in POLICY_SETTINGS if name in given and name not in policy.settings]


def ignored_note(policy: type, name: str) -> str:
    """`name: policy P ignores it (it uses X)`, one line."""
    instead = policy.settings_instead.get(name)
    return (f"{name}: policy {policy.name} ignores it "
            f"({f'it uses {instead} instead' if instead else 'it has no such setting'})")


def ignored_warnings(policies: Iterable[str], given: Iterable[str]) -> list[str]:
    """One line per setting in `given` (set by the user) that a policy of `policies` ignores, naming the
    policies and what each uses instead."""
    from sim.policies import POLICIES

    classes = [POLICIES[name] for name in policies if name in POLICIES]  # unknown names are refused elsewhere
    given = list(given)
    lines = []
    for name in POLICY_SETTINGS:
        if name in given:
            deaf = [cls for cls in classes if ignored_settings(cls, (name,))]
            if deaf:
                lines.append(f"{name}: " + "; ".join(ignored_note(cls, name).removeprefix(f"{name}: ") for cls in deaf))
    return lines
