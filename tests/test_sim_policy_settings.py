"""Each policy's `settings` (the engine settings it reads, of `POLICY_SETTINGS`) against its code: every
policy replays a small trace with each setting changed; the tables change exactly for the settings it lists
(a setting a policy refuses is not silently ignored either)."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from sim import POLICIES, EngineConfig, replay
from sim.policies.settings import POLICY_SETTINGS, ignored_note, ignored_settings
from traces import Request, Trace

# 24 requests within 24 ms, prompts of 300 sharing one of two prefixes, outputs of 40 to 200, priorities 0-3,
# every eighth parallel sampling (n=2): the token budget, the chunk size, the pool, the reservations, the
# queue orders and the swapping of forked groups all bind.
TRACE = Trace([Request(f"r{i}", 0.001 * i, 300, 40 + 7 * i, priority=(24 - i) % 4, prefix_group="ab"[i % 3 > 0],
                       prefix_tokens=160 if i % 3 else 240, n=2 if i % 8 == 5 else 1,
                       sampling="parallel" if i % 8 == 5 else "greedy") for i in range(24)])
BASE = EngineConfig(max_model_len=1024, num_gpu_blocks=500, max_num_seqs=16)
# setting -> (other settings that let it bind, its changed value)
CHANGES: dict[str, tuple[dict, object]] = {
    "max_num_batched_tokens": ({}, 1024),
    "prefill_chunk_tokens": ({}, 64),
    "swap_space_gib": ({"num_gpu_blocks": 60}, 0.0),
    "watermark": ({"num_gpu_blocks": 100}, 0.3),
    "max_output_tokens": ({"max_num_batched_tokens": 8192}, 200),
    "enable_prefix_caching": ({"enable_prefix_caching": False}, True),
    "long_prefill_token_threshold": ({}, 64),
    "scheduling_policy": ({}, "priority"),
    "enable_chunked_prefill": ({"max_num_batched_tokens": 1024}, False),
    "schedule_policy": ({"enable_prefix_caching": True}, "lpm"),
    "chunked_prefill_size": ({}, 64),
    "max_prefill_tokens": ({}, 400),
}


def tables(config: EngineConfig, policy: str) -> pd.DataFrame | None:
    """The requests table, or None where the policy refuses the settings."""
    try:
        return replay(TRACE, config, policy=policy).requests
    except ValueError:
        return None


def test_every_listed_setting_has_a_change() -> None:
    assert set(CHANGES) == set(POLICY_SETTINGS)
    for cls in POLICIES.values():
        assert cls.settings <= set(POLICY_SETTINGS), cls.name


def effects(policy: str) -> dict[str, str]:
    """Each setting's effect under `policy`: "read" (the tables change), "refused" or "ignored"."""
    out = {}
    for name, (context, value) in CHANGES.items():
        base = replace(BASE, **context)
        before, after = tables(base, policy), tables(replace(base, **{name: value}), policy)
        if before is None or after is None:
            out[name] = "refused"
        else:
            out[name] = "ignored" if before.equals(after) else "read"
    return out


@pytest.mark.parametrize("policy", list(POLICIES))
def test_a_policy_reads_exactly_the_settings_it_lists(policy: str) -> None:
    cls = POLICIES[policy]
    found = effects(policy)
    assert {n for n, e in found.items() if e == "read"} == set(cls.settings), found
    assert ignored_settings(cls, POLICY_SETTINGS) == [n for n in POLICY_SETTINGS if n not in cls.settings]


def test_the_note_names_the_setting_the_policy_and_what_it_uses() -> None:
    assert ignored_note(POLICIES["sglang"], "max_num_batched_tokens") == (
        "max_num_batched_tokens: policy sglang ignores it (it uses chunked_prefill_size and max_prefill_tokens instead)")
    assert ignored_note(POLICIES["static"], "watermark") == "watermark: policy static ignores it (it has no such setting)"
