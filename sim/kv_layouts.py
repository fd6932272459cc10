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

# policy.memory -> layout class; a new layout registers here. Those of a policy that allocates KV blocks
# per scheduled chunk (V1, `policy.allocate_per_chunk`) apart.
LAYOUTS: dict[str, type] = {"paged": PagedKV, "reserved": ReservedKV, "contiguous": ContiguousKV}
PER_CHUNK_LAYOUTS: dict[str, type] = {"paged": ChunkedPagedKV}


def make_kv_layout(config: EngineConfig, policy: Policy, block_manager_cls: type[BlockManager]) -> KVLayout:
    layouts = PER_CHUNK_LAYOUTS if policy.allocate_per_chunk else LAYOUTS
    try:
        layout = layouts[policy.memory]
    except KeyError:
        raise ValueError(f"policy {policy.name}: unknown memory layout {policy.memory!r}; "
                         f"valid names: {', '.join(layouts)}") from None
    return layout.for_policy(config, policy, block_manager_cls)
