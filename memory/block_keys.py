"""Per-block keys for `PrefixCachingBlockManager.allocate(..., block_keys)`: one key per full prompt block.

A key stands for the content of its own block only; the cache chains it over the blocks before it, so
equal keys at position i share a block only when all earlier keys are equal too. Three sources:

- token ids (a real engine): each full block's tuple of token ids;
- a trace's shared-prefix groups (the simulator has no token ids): blocks inside the group's shared
  prefix are keyed by the group, the rest by the request, so requests of one group share the prefix and
  a re-prefill of the same request (recompute after preemption) finds its own prompt cached;
- Mooncake `hash_ids` (one id per 512-token block of the prompt): each block is keyed by the ids of the
  512-token blocks it overlaps.
"""
from __future__ import annotations

from typing import Hashable, Sequence

from memory.block_allocator import _check_count


def token_block_keys(token_ids: Sequence[int], block_size: int) -> list[tuple[int, ...]]:
    """The token ids of each full block."""
    _check_count("block_size", block_size, 1)
    return [tuple(token_ids[i:i + block_size])
            for i in range(0, len(token_ids) - block_size + 1, block_size)]


def prefix_group_block_keys(
    num_tokens: int, block_size: int, request_key: Hashable,
    prefix_group: Hashable | None = None, prefix_tokens: int = 0,
) -> list[Hashable]:
    """Keys of a prompt whose first `prefix_tokens` tokens are its group's shared prefix: blocks wholly
    inside the prefix are `("prefix", group, i)`, the other full blocks `("own", request_key, i)`."""
    _check_count("num_tokens", num_tokens, 0)
    _check_count("block_size", block_size, 1)
    _check_count("prefix_tokens", prefix_tokens, 0)
    if prefix_tokens > num_tokens:
        raise ValueError(f"prefix_tokens: {prefix_tokens} exceeds the prompt's {num_tokens} tokens")
    if prefix_tokens and prefix_group is None:
        raise ValueError("prefix_tokens: a shared prefix needs a prefix_group")
    shared = prefix_tokens // block_size
    return [("prefix", prefix_group, i) if i < shared else ("own", request_key, i)
            for i in range(num_tokens // block_size)]


def hash_id_block_keys(
    hash_ids: Sequence[int], num_tokens: int, block_size: int, hash_block_tokens: int = 512
) -> list[Hashable]:
    """Keys from per-`hash_block_tokens` hash ids (Mooncake: 512): block j is keyed by its position and
    the ids of the hash blocks its tokens overlap. Full blocks past the listed ids get no key."""
    _check_count("num_tokens", num_tokens, 0)
    _check_count("block_size", block_size, 1)
    _check_count("hash_block_tokens", hash_block_tokens, 1)
    covered = min(num_tokens, len(hash_ids) * hash_block_tokens)
    return [(j, tuple(hash_ids[j * block_size // hash_block_tokens:
                               ((j + 1) * block_size - 1) // hash_block_tokens + 1]))
            for j in range(covered // block_size)]
