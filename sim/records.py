"""Monitoring, kept apart from the engine: one record per step or per run of identical decode steps,
expanded into the per-step table only after the replay (numpy, no per-step Python objects)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.schema import STEP_COLUMNS

# Fields of a record, in order. Values are those of the run's first step; within a run of k decode steps
# only time, KV tokens (+ batch per step) and blocks (+ the run's block crossings) change.
FIELDS = (
    "k", "start_ns", "g_first", "decode_seqs", "prefill_tokens", "prefill_seqs", "generated", "running",
    "waiting", "swapped", "blocks_used", "kv_tokens", "reserved", "logical", "cow", "preempt", "swaps_out",
    "swaps_in", "swap_out_blocks", "swap_in_blocks", "growing", "counts_id",
)
_F = {name: i for i, name in enumerate(FIELDS)}


class StepRecorder:
    def __init__(self, capacity: int = 1 << 16) -> None:
        self.records: list[tuple[int, ...]] = []
        self.counts: list[tuple[int, ...]] = []     # block-crossing counts per phase, for runs of k > 1
        self.durations = np.empty(capacity, dtype=np.int64)
        self.num_rows = 0

    def add(self, record: tuple[int, ...], durations: np.ndarray | int) -> None:
        k = record[0]
        end = self.num_rows + k
        if end > len(self.durations):
            grown = np.empty(max(2 * len(self.durations), end), dtype=np.int64)
            grown[: self.num_rows] = self.durations[: self.num_rows]
            self.durations = grown
        self.durations[self.num_rows:end] = durations
        self.num_rows = end
        self.records.append(record)

    def add_counts(self, counts: list[int]) -> int:
        self.counts.append(tuple(counts))
        return len(self.counts) - 1

    def build(self, block_size: int, total_blocks: int, queued_arrivals_ns: np.ndarray
              ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """The per-step table, and each decode step's end time in ns indexed by decode step (index 0
        unused), and each step's end in ns. `queued_arrivals_ns` (sorted): arrival times of the requests
        that joined the waiting queue; within a run they join it while the batch goes on."""
        n = self.num_rows
        if not self.records:
            empty = pd.DataFrame({c: pd.Series(dtype=float if c.endswith("_s") else np.int64) for c in STEP_COLUMNS})
            return empty, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
        rec = np.array(self.records, dtype=np.int64)
        k = rec[:, _F["k"]]
        seg = np.repeat(np.arange(len(rec)), k)
        first_row = np.cumsum(k) - k
        j = np.arange(n, dtype=np.int64) - first_row[seg]
        dur = self.durations[:n]
        before = np.cumsum(dur) - dur
        start = rec[seg, _F["start_ns"]] + before - before[first_row][seg]
        end = start + dur
        cross = self._crossings(rec, seg, j, block_size)
        arrived = np.searchsorted(queued_arrivals_ns, start, side="right")
        waiting = rec[seg, _F["waiting"]] + arrived - arrived[first_row][seg]

        col = lambda name: rec[seg, _F[name]]  # noqa: E731 - per-row copy of a record field
        decode = col("decode_seqs")
        used = col("blocks_used") + cross
        g_first = col("g_first")
        steps = pd.DataFrame({
            "step": np.arange(n, dtype=np.int64),
            "start_s": start / 1e9,
            "end_s": end / 1e9,
            "duration_s": dur / 1e9,
            "num_prefill_tokens": col("prefill_tokens"),
            "num_prefill_seqs": col("prefill_seqs"),
            "num_decode_seqs": decode,
            "batch_size": decode + col("prefill_seqs"),
            "num_generated_tokens": col("generated"),
            "num_running": col("running"),
            "num_waiting": waiting,
            "num_swapped": col("swapped"),
            "kv_blocks_used": used,
            "kv_blocks_free": total_blocks - used,
            "kv_tokens": col("kv_tokens") + decode * j,
            "kv_slots_reserved": col("reserved") + block_size * cross,
            "kv_blocks_unshared": col("logical") + cross,
            "cow_copies": col("cow"),
            "preemptions": col("preempt"),
            "swaps_out": col("swaps_out"),
            "swaps_in": col("swaps_in"),
            "swap_out_blocks": col("swap_out_blocks"),
            "swap_in_blocks": col("swap_in_blocks"),
        })
        # Decode step g's end time, for inter-token gaps.
        is_decode = g_first > 0
        decode_index = (g_first + j)[is_decode]
        decode_end = np.zeros(int(decode_index.max()) + 1 if decode_index.size else 1, dtype=np.int64)
        decode_end[decode_index] = end[is_decode]
        return steps, decode_end, end

    def _crossings(self, rec: np.ndarray, seg: np.ndarray, j: np.ndarray, block_size: int) -> np.ndarray:
        """Blocks taken by lazy sequences from a run's second step to its j-th: sum over i = 1..j of
        counts[(g_first + i) % block_size], i.e. (j // bs) * lazy_b + prefix[j % bs]."""
        cross = np.zeros(len(seg), dtype=np.int64)
        if not self.counts:
            return cross
        counts = np.array(self.counts, dtype=np.int64)                       # (runs, bs)
        runs = np.flatnonzero(rec[:, _F["counts_id"]] >= 0)
        ids = rec[runs, _F["counts_id"]]
        shift = (rec[runs, _F["g_first"]][:, None] + np.arange(1, block_size + 1)[None, :]) % block_size
        prefix = np.zeros((len(runs), block_size + 1), dtype=np.int64)
        prefix[:, 1:] = np.cumsum(np.take_along_axis(counts[ids], shift, axis=1), axis=1)
        run_of_seg = np.full(len(rec), -1, dtype=np.int64)
        run_of_seg[runs] = np.arange(len(runs))
        rows = np.flatnonzero(run_of_seg[seg] >= 0)
        r = run_of_seg[seg[rows]]
        jj = j[rows]
        cross[rows] = (jj // block_size) * rec[runs[r], _F["growing"]] + prefix[r, jj % block_size]
        return cross
