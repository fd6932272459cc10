"""pagedlab kernels: Triton paged attention (one-pass decode, two-pass baseline, chunked prefill), KV-cache
writes and copy-on-write block copies, a `PagedAttention` layer and its `KVCache`.

Names are imported lazily (PEP 562) so `kernels.bench_cli` can be imported by the `pagedlab` dispatcher
without loading torch or triton.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "paged_decode": "kernels.decode",
    "paged_decode_ref": "kernels.decode",
    "choose_num_splits": "kernels.decode_config",
    "choose_launch": "kernels.decode_config",
    "DecodeConfig": "kernels.decode_config",
    "PrefillConfig": "kernels.prefill",
    "fp8_scales": "kernels._common",
    "FP8_DTYPE": "kernels._common",
    "paged_decode_two_pass": "kernels.decode_two_pass",
    "paged_decode_two_pass_ref": "kernels.decode_two_pass",
    "paged_prefill": "kernels.prefill",
    "paged_prefill_ref": "kernels.prefill",
    "write_kv": "kernels.cache_ops",
    "write_kv_ref": "kernels.cache_ops",
    "copy_blocks": "kernels.cache_ops",
    "copy_blocks_ref": "kernels.cache_ops",
    "paged_read": "kernels.paged_read",
    "paged_read_ref": "kernels.paged_read",
    "PagedAttention": "kernels.layer",
    "KVCache": "kernels.layer",
    "AttentionMetadata": "kernels.layer",
    "SUPPORTED_BLOCK_SIZES": "kernels._common",
    "SUPPORTED_HEAD_DIMS": "kernels._common",
    "SUPPORTED_DTYPES": "kernels._common",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
