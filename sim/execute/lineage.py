"""Which token sits at each position of each sequence, and the deterministic table row it maps to.

A sequence's history is its request's prompt, then tokens produced by the sequences it descends from, then
its own: forks (parallel samples, beams, a recompute's samples) share the parent's first `at` tokens. A
token is named by (owner, position): owner -(request + 1) for prompt tokens, else the id of the sequence
that produced it. A hash of that name picks a row of the model's random input table, so every layer's
K/V for the token is a fixed function of (request or sequence, position, layer, head), whatever blocks
hold it: the shadow check recomputes them from the logical history alone.
"""
from __future__ import annotations

import numpy as np

TABLE_ROWS = 4096       # rows of the random input table (distinct tokens may share a row; harmless)
LAYER_STRIDE = 977      # layer l reads row (r + l * LAYER_STRIDE) % TABLE_ROWS: layers see different inputs

_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x94D049BB133111EB)


def token_rows(owners: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Table row (int64) of each token named by (owner, position): a splitmix-style hash, vectorized."""
    with np.errstate(over="ignore"):
        h = owners.astype(np.int64).astype(np.uint64) * _M1 + positions.astype(np.uint64) * _M2
        h ^= h >> np.uint64(31)
        h *= _M3
        h ^= h >> np.uint64(29)
    return (h % np.uint64(TABLE_ROWS)).astype(np.int64)


def prompt_owner(request: int) -> int:
    return -(request + 1)


class Lineage:
    """Per live sequence: segment starts and owners; position p belongs to the last segment starting <= p."""

    def __init__(self) -> None:
        self._segments: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def __contains__(self, sid: int) -> bool:
        return sid in self._segments

    def __len__(self) -> int:
        return len(self._segments)

    def root(self, sid: int, request: int, prompt: int) -> None:
        """A sequence allocated for a request: the prompt, then its own tokens."""
        self._segments[sid] = ((0, prompt), (prompt_owner(request), sid))

    def fork(self, parent: int, child: int, at: int) -> None:
        """`child` shares the parent's first `at` tokens; its own follow."""
        starts, owners = self._segments[parent]
        keep = sum(1 for s in starts if s < at)
        self._segments[child] = (starts[:keep] + (at,), owners[:keep] + (child,))

    def free(self, sid: int) -> None:
        # Children copied what they share at fork time: nothing else refers to a freed sequence.
        self._segments.pop(sid, None)

    def owners(self, sid: int, length: int) -> np.ndarray:
        """Owner of each position 0 .. length - 1 of the sequence's logical history."""
        starts, owners = self._segments[sid]
        out = np.empty(length, dtype=np.int64)
        bounds = list(starts[1:]) + [length]
        for start, end, owner in zip(starts, bounds, owners):
            if start < length:
                out[start:min(end, length)] = owner
        return out

    def rows(self, sid: int, length: int) -> np.ndarray:
        """Table rows of the sequence's whole history (what the reference attends over)."""
        return token_rows(self.owners(sid, length), np.arange(length, dtype=np.int64))
