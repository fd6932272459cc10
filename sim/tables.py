"""The replay's outputs built from the engine after the run: per-request table, inter-token gaps, summary."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.metrics import latency_figures, memory_figures
from sim.schema import REQUEST_COLUMNS
from sim.state import FINISHED, Group


def requests_table(groups: list[Group]) -> pd.DataFrame:
    """One row per request in trace order; rejected rows have NaN times and a reason."""
    finished = np.array([g.state == FINISHED for g in groups], dtype=bool)
    arrival = np.array([g.arrival_ns for g in groups], dtype=np.int64) / 1e9
    first = np.where(finished, np.array([g.first_token_ns for g in groups], dtype=np.int64) / 1e9, np.nan)
    finish = np.where(finished, np.array([g.finish_ns for g in groups], dtype=np.int64) / 1e9, np.nan)
    n = np.array([g.n for g in groups], dtype=np.int64)
    generated = np.where(finished, np.array([g.generated for g in groups], dtype=np.int64) * n, 0)
    return pd.DataFrame({
        "request_id": [g.request_id for g in groups],
        "arrival_s": arrival,
        "first_token_s": first,
        "finish_s": finish,
        "prompt_tokens": np.array([g.prompt for g in groups], dtype=np.int64),
        "output_tokens": np.array([g.output for g in groups], dtype=np.int64),
        "n": n,
        "sampling": [g.sampling for g in groups],
        "status": np.where(finished, "finished", "rejected"),
        "reason": [g.reason for g in groups],
        "ttft_s": first - arrival,
        "e2e_s": finish - arrival,
        "preemptions": np.array([g.preemptions for g in groups], dtype=np.int64),
        "swaps": np.array([g.swaps for g in groups], dtype=np.int64),
        "generated_tokens": generated,
        "recomputed_tokens": np.array([g.recomputed_tokens for g in groups], dtype=np.int64),
    }, columns=list(REQUEST_COLUMNS))


def inter_token_gaps(groups: list[Group], decode_end: np.ndarray) -> np.ndarray:
    """Every gap between consecutive token-producing steps of every finished request, in seconds,
    request by request. `decode_end[g]` is the end (ns) of decode step g. A sample whose sibling was rejected
    finished, but its request did not: its gaps are left out, as the request is from the latency figures."""
    done = [g for g in groups if g.state == FINISHED and (g.parent is None or g.parent.state == FINISHED)]
    # A run (first token ns, a, b) produced its first token at `first` (or at decode step a + 1 after a
    # swap-in), then one per decode step a + 1 .. b: those gaps are a slice of the step-to-step gaps.
    step_gaps = np.diff(decode_end) / 1e9         # step_gaps[g] = end of step g + 1 - end of step g
    lengths = [g.generated - 1 for g in done]      # gaps of a request: its tokens per sample, less one
    out = np.empty(sum(lengths), dtype=np.float64)
    pos = 0
    for group, length in zip(done, lengths):
        runs = group.runs
        if len(runs) == 1 and runs[0][0] >= 0:
            first, a, b = runs[0]
            if b > a:
                out[pos] = (decode_end[a + 1] - first) / 1e9
                out[pos + 1: pos + b - a] = step_gaps[a + 1: b]
        else:
            times = []
            for first, a, b in runs:
                if first >= 0:
                    times.append(np.array([first], dtype=np.int64))
                times.append(decode_end[a + 1: b + 1])
            out[pos: pos + length] = np.diff(np.concatenate(times)) / 1e9
        pos += length
    return out


def summarize(steps: pd.DataFrame, requests: pd.DataFrame, itl_s: np.ndarray, *, kv_blocks_total: int,
              block_size: int) -> dict:
    """Run totals, and the memory and latency figures of `sim.metrics` (memory: time-weighted by step)."""
    done = requests[requests["status"] == "finished"]
    dur = steps["duration_s"].to_numpy()
    start = float(requests["arrival_s"].min()) if len(requests) else 0.0
    end = float(steps["end_s"].iloc[-1]) if len(steps) else start
    sim_s = max(end - start, 0.0)
    generated = int(done["generated_tokens"].sum())
    return {
        "num_requests": int(len(requests)),
        "num_finished": int(len(done)),
        "num_rejected": int((requests["status"] == "rejected").sum()),
        "sim_duration_s": sim_s,
        "num_steps": int(len(steps)),
        "total_prompt_tokens": int(done["prompt_tokens"].sum()),
        "total_generated_tokens": generated,
        "total_prefill_tokens": int(steps["num_prefill_tokens"].sum()),
        "recomputed_tokens": int(requests["recomputed_tokens"].sum()),
        "preemptions": int(steps["preemptions"].sum()),
        "swaps_out": int(steps["swaps_out"].sum()),
        "swaps_in": int(steps["swaps_in"].sum()),
        "swap_out_blocks": int(steps["swap_out_blocks"].sum()),
        "swap_in_blocks": int(steps["swap_in_blocks"].sum()),
        "cow_copies": int(steps["cow_copies"].sum()),
        "kv_blocks_total": int(kv_blocks_total),
        "block_size": int(block_size),
        **memory_figures(steps, kv_blocks_total, block_size),
        "busy_fraction": float(dur.sum() / sim_s) if sim_s > 0 else math.nan,
        "output_tokens_per_s": generated / sim_s if sim_s > 0 else math.nan,
        "requests_per_s": len(done) / sim_s if sim_s > 0 else math.nan,
        **latency_figures(requests, itl_s),
    }
