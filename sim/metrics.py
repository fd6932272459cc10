"""Metric definitions, once: the replay's `summary.json` and the comparison report (`analysis.metrics`,
`analysis.memory_view`) both compute their latency and memory figures with these functions.

They live in `sim` because `sim.replay` writes the summary and `sim` never imports `analysis` (the
layering is analysis -> sim -> memory). Inputs are the replay's tables (`sim.schema` columns): memory
figures are time-weighted by each step's `duration_s`, over the time the engine was busy.

KV usage is *blocks held* over the pool (`kv_blocks_used / kv_blocks_total`), under every policy. Blocks
held are what no other request can be given: the allocator's view, and vLLM's own KV-cache usage gauge
(`gpu_cache_usage`: 1 - free blocks / total blocks). Reserved slots (`kv_slots_reserved`) count an
Orca/static reservation to the token, not rounded to its blocks, so they understate the memory taken;
they remain the denominator of slot utilization (tokens held over slots reserved), the waste that
PagedAttention attacks.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd


def percentiles(values: np.ndarray, ps: Sequence[float]) -> list[float]:
    """Percentiles (numpy's linear interpolation) of `values`, NaNs dropped; NaN for an empty sample."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not values.size:
        return [math.nan] * len(ps)
    return [float(x) for x in np.percentile(values, list(ps))]


def time_weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """Mean of per-step `values` weighted by step durations; NaN without steps, a plain mean if every
    step took no time."""
    values = np.asarray(values, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if values.size == 0:
        return math.nan
    if weights.sum() <= 0:
        return float(values.mean())
    return float(np.average(values, weights=weights))


def _time_sum(values: np.ndarray, weights: np.ndarray) -> float:
    """Integral over the busy time (a plain sum if every step took no time)."""
    return float((values * weights).sum()) if weights.sum() > 0 else float(values.sum())


def kv_usage(steps: pd.DataFrame, kv_blocks_total: int) -> np.ndarray:
    """Per step: KV blocks held over the pool (see the module docstring for why blocks held)."""
    assert kv_blocks_total > 0, f"no KV memory: {kv_blocks_total} blocks"
    return steps["kv_blocks_used"].to_numpy(dtype=float) / kv_blocks_total


def kv_token_usage(steps: pd.DataFrame, kv_blocks_total: int, block_size: int) -> np.ndarray:
    """Per step: slots holding a computed token over the pool's slots."""
    return steps["kv_tokens"].to_numpy(dtype=float) / (kv_blocks_total * block_size)


def memory_figures(steps: pd.DataFrame, kv_blocks_total: int, block_size: int) -> dict[str, float]:
    """KV usage (mean, peak), token usage, slot utilization, memory saved by sharing, mean batch size."""
    dur = steps["duration_s"].to_numpy(dtype=float)
    usage = kv_usage(steps, kv_blocks_total)
    tokens = steps["kv_tokens"].to_numpy(dtype=float)
    reserved = steps["kv_slots_reserved"].to_numpy(dtype=float)
    token_time, reserved_time = _time_sum(tokens, dur), _time_sum(reserved, dur)
    out = {
        "kv_usage_mean": time_weighted_mean(usage, dur),
        "kv_usage_peak": float(usage.max()) if len(steps) else math.nan,
        "kv_token_usage_mean": time_weighted_mean(kv_token_usage(steps, kv_blocks_total, block_size), dur),
        # Tokens held over slots reserved; 1 - this is the unused fraction of what was taken.
        "slot_utilization": token_time / reserved_time if reserved_time > 0 else math.nan,
    }
    if "kv_blocks_unshared" in steps.columns:  # blocks the sequences would hold without sharing
        used = steps["kv_blocks_used"].to_numpy(dtype=float)
        unshared = steps["kv_blocks_unshared"].to_numpy(dtype=float)
        unshared_time = _time_sum(unshared, dur)
        out["sharing_saved_fraction"] = 1.0 - _time_sum(used, dur) / unshared_time if unshared_time > 0 else 0.0
        out["sharing_saved_peak_blocks"] = int((unshared - used).max()) if len(steps) else 0
    out["mean_batch_size"] = time_weighted_mean(steps["batch_size"].to_numpy(dtype=float), dur)
    return out


def time_per_output_token(ttft_s: np.ndarray, e2e_s: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """Per request, seconds per output token after the first: (E2E - TTFT) / (output_tokens - 1); NaN for a
    request of one output token, which has none (vLLM's benchmark leaves it out)."""
    ttft, e2e, outputs = (np.asarray(x, dtype=float) for x in (ttft_s, e2e_s, output_tokens))
    several = outputs > 1
    tpot = np.full(outputs.shape, math.nan)
    tpot[several] = (e2e[several] - ttft[several]) / (outputs[several] - 1)
    return tpot


def latency_figures(requests: pd.DataFrame, itl_s: np.ndarray) -> dict[str, float]:
    """TTFT (mean, p50, p99), time per output token after the first (p50, p99; requests of one output
    token have none, as in vLLM's benchmark), end-to-end latency (p50, p99) of finished requests;
    inter-token gaps (p50, p99, max), in seconds."""
    done = requests[requests["status"] == "finished"]
    ttft, e2e = done["ttft_s"].to_numpy(dtype=float), done["e2e_s"].to_numpy(dtype=float)
    tpot = time_per_output_token(ttft, e2e, done["output_tokens"].to_numpy(dtype=float))
    itl = np.asarray(itl_s, dtype=float)
    (ttft50, ttft99), (tpot50, tpot99), (e2e50, e2e99), (itl50, itl99) = (
        percentiles(v, (50, 99)) for v in (ttft, tpot, e2e, itl))
    return {
        "ttft_mean_s": float(ttft.mean()) if ttft.size else math.nan,
        "ttft_p50_s": ttft50,
        "ttft_p99_s": ttft99,
        "tpot_p50_s": tpot50,
        "tpot_p99_s": tpot99,
        "e2e_p50_s": e2e50,
        "e2e_p99_s": e2e99,
        "itl_p50_s": itl50,
        "itl_p99_s": itl99,
        "itl_max_s": float(itl.max()) if itl.size else math.nan,
    }
