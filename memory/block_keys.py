"""Per-block keys for `PrefixCachingBlockManager.allocate(..., block_keys)`: one key per full prompt block.

A key stands for the content of its own block only; the cache chains it over the blocks before it, so
equal keys at position i share a block only when all earlier keys are equal too. Three sources:

- token ids (a real engine): each full block's tuple of token ids;
- a trace's shared-prefix groups (the simulator has no token ids): blocks inside the group's shared
  prefix are keyed by the group, the rest by the request, so requests of one group share the prefix and
  a re-prefill of the same request (recompute after preemption) finds its own prompt cached;
- Mooncake `hash_ids` (one id per 512-token block of the prompt): each block is keyed by the ids of the
  512-token blocks it overlaps.

`ChainKeys` is the compact form the simulator passes: the shared keys as a list, then private blocks
(content only one sequence has) with no key each, found through the sequence's `PrivateChain`.
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
    """Keys from per-`hash_block_tokens` hash ids (Mooncake: 512): block j is keyed by the id of the hash
    block its tokens lie in, or the tuple of the ids of those it straddles (its position needs no key: the
    chain's parent node names it). Full blocks past the listed ids get no key."""
    _check_count("num_tokens", num_tokens, 0)
    _check_count("block_size", block_size, 1)
    _check_count("hash_block_tokens", hash_block_tokens, 1)
    covered = min(num_tokens, len(hash_ids) * hash_block_tokens)
    num_blocks = covered // block_size
    if hash_block_tokens % block_size == 0:  # each block inside one hash block
        per = hash_block_tokens // block_size
        used = list(hash_ids[:-(-num_blocks // per)])
        keys: list[Hashable] = [None] * (len(used) * per)
        for j in range(per):  # every per-th key from j on: one C slice store each
            keys[j::per] = used
        del keys[num_blocks:]
        return keys
    keys: list[Hashable] = []
    for j in range(num_blocks):
        ids = hash_ids[j * block_size // hash_block_tokens:((j + 1) * block_size - 1) // hash_block_tokens + 1]
        keys.append(ids[0] if len(ids) == 1 else tuple(ids))
    return keys


class PrivateChain:
    """The private blocks of one sequence registered in a prefix cache, in position order: `blocks[i]`
    holds position `start + i` and was registered as node `nodes[i]` (still valid while the block's node
    is that one: node ids are never reused), the first one after node `parent`. Owned by whoever holds
    the `ChainKeys`: a request recomputed after preemption finds its own blocks through it."""

    __slots__ = ("owner", "parent", "blocks", "nodes", "memo")

    def __init__(self, owner: Hashable) -> None:
        self.owner = owner
        self.parent = 0
        self.blocks: list[int] = []
        self.nodes: list[int] = []
        # The cache's last answer for the shared keys: (shared, their hit blocks, the stretches of pieces
        # they are, num_evicted_blocks then); see `ChainRegistry.match_chain`.
        self.memo: tuple | None = None


class ChainKeys:
    """Compact keys of one sequence: `shared[i]` for its first blocks (content other sequences may have:
    a prefix group's prompt, Mooncake hash ids; looked up in the cache's registry), then private blocks
    up to `num_blocks` (content nobody else has: the rest of its prompt, its output), found only through
    `chain`. Equivalent to the listed keys `shared + [("own", chain.owner, i), ...]` (`listed()`), but a
    private block costs no key and no registry entry. All keys over one chain share one `shared` list (the
    chain's blocks start at its length)."""

    __slots__ = ("shared", "num_shared", "num_blocks", "chain")

    def __init__(self, shared: Sequence[Hashable], num_blocks: int, chain: PrivateChain) -> None:
        _check_count("num_blocks", num_blocks, 0)
        self.shared = shared                          # never copied: private blocks start at len(shared)
        self.num_shared = min(len(shared), num_blocks)  # ... of which the first num_shared are keyed
        self.num_blocks = num_blocks
        self.chain = chain

    def __len__(self) -> int:
        return self.num_blocks

    def head(self, num_blocks: int) -> "ChainKeys":
        """The keys of the first `num_blocks` blocks (more than today's extends the private part), over
        the same chain."""
        return ChainKeys(self.shared, num_blocks, self.chain)

    def listed(self) -> list[Hashable]:
        """The equivalent plain key list (a reference for tests)."""
        shared = list(self.shared[:self.num_shared])
        return shared + [("own", self.chain.owner, i) for i in range(len(self.shared), self.num_blocks)]
