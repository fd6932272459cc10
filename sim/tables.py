"""The replay's outputs built from the engine after the run: per-request table, inter-token gaps, summary."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

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
    request by request. `decode_end[g]` is the end (ns) of decode step g."""
    done = [g for g in groups if g.state == FINISHED]
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


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    total = float(weights.sum())
    return float((values * weights).sum() / total) if total > 0 else math.nan


def _pcts(values: np.ndarray) -> tuple[float, float]:
    """Median and 99th percentile (one partition pass)."""
    if not values.size:
        return math.nan, math.nan
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99)


def summarize(steps: pd.DataFrame, requests: pd.DataFrame, itl_s: np.ndarray, *, kv_blocks_total: int,
              block_size: int) -> dict:
    """Run totals and time-weighted memory figures (weights: step durations)."""
    done = requests[requests["status"] == "finished"]
    dur = steps["duration_s"].to_numpy()
    used = steps["kv_blocks_used"].to_numpy(dtype=np.float64)
    reserved = steps["kv_slots_reserved"].to_numpy(dtype=np.float64)
    tokens = steps["kv_tokens"].to_numpy(dtype=np.float64)
    unshared = steps["kv_blocks_unshared"].to_numpy(dtype=np.float64)
    start = float(requests["arrival_s"].min()) if len(requests) else 0.0
    end = float(steps["end_s"].iloc[-1]) if len(steps) else start
    sim_s = max(end - start, 0.0)
    generated = int(done["generated_tokens"].sum())
    reserved_time, unshared_time = float((reserved * dur).sum()), float((unshared * dur).sum())
    ttft, e2e = done["ttft_s"].to_numpy(), done["e2e_s"].to_numpy()
    (ttft50, ttft99), (e2e50, e2e99), (itl50, itl99) = _pcts(ttft), _pcts(e2e), _pcts(itl_s)
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
        "kv_usage_mean": _weighted(used / kv_blocks_total, dur),
        "kv_usage_peak": float(used.max() / kv_blocks_total) if len(steps) else math.nan,
        "kv_token_usage_mean": _weighted(tokens / (kv_blocks_total * block_size), dur),
        "slot_utilization": float((tokens * dur).sum() / reserved_time) if reserved_time > 0 else math.nan,
        "sharing_saved_fraction": 1.0 - float((used * dur).sum()) / unshared_time if unshared_time > 0 else 0.0,
        "sharing_saved_peak_blocks": int((unshared - used).max()) if len(steps) else 0,
        "mean_batch_size": _weighted(steps["batch_size"].to_numpy(dtype=np.float64), dur),
        "busy_fraction": float(dur.sum() / sim_s) if sim_s > 0 else math.nan,
        "output_tokens_per_s": generated / sim_s if sim_s > 0 else math.nan,
        "requests_per_s": len(done) / sim_s if sim_s > 0 else math.nan,
        "ttft_mean_s": float(ttft.mean()) if ttft.size else math.nan,
        "ttft_p50_s": ttft50,
        "ttft_p99_s": ttft99,
        "e2e_p50_s": e2e50,
        "e2e_p99_s": e2e99,
        "itl_p50_s": itl50,
        "itl_p99_s": itl99,
        "itl_max_s": float(itl_s.max()) if itl_s.size else math.nan,
    }
