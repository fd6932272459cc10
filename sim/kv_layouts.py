"""The KV layout a policy asks for (`policy.memory`), built once for a replay."""
from __future__ import annotations

from memory import BlockManager

from sim.config import EngineConfig
from sim.kv_contiguous import ContiguousKV
from sim.kv_layout import KVLayout
from sim.kv_paged import PagedKV
from sim.kv_paged_chunked import ChunkedPagedKV
from sim.kv_reserved import ReservedKV
from sim.policies.base import Policy

# policy.memory -> layout class; a new layout registers here. "paged-per-chunk" allocates KV blocks per
# scheduled chunk (V1), "paged" the whole prefill at admission (V0).
LAYOUTS: dict[str, type] = {"paged": PagedKV, "paged-per-chunk": ChunkedPagedKV, "reserved": ReservedKV,
                            "contiguous": ContiguousKV}


def make_kv_layout(config: EngineConfig, policy: Policy, block_manager_cls: type[BlockManager]) -> KVLayout:
    try:
        layout = LAYOUTS[policy.memory]
    except KeyError:
        raise ValueError(f"policy {policy.name}: unknown memory layout {policy.memory!r}; "
                         f"valid names: {', '.join(LAYOUTS)}") from None
    return layout.for_policy(config, policy, block_manager_cls)
