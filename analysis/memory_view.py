"""The memory view of one replay: KV-cache usage, slots held but unused, preemptions, swaps, copies.

Computed from the simulator's `steps` table (one row per engine step) with the definitions of `sim.metrics`,
the same ones `summary.json` uses. Means are time-weighted by each step's `duration_s`, over the time the engine
was busy (idle gaps between steps hold no step). `kv_usage` is the fraction of the pool's KV blocks held (why
blocks held: see `sim.metrics`), `kv_token_usage` the fraction of its slots holding a token; `kv_unused_fraction`
is the share of reserved slots holding no token, the waste PagedAttention attacks (reservation, internal
fragmentation).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from sim.metrics import kv_token_usage, kv_usage, memory_figures, time_weighted_mean

REQUIRED_STEP_COLUMNS: tuple[str, ...] = (
    "start_s", "duration_s", "batch_size", "num_running", "kv_blocks_used", "kv_blocks_free", "kv_tokens", "kv_slots_reserved",
    "cow_copies", "preemptions", "swaps_out", "swaps_in",
)
EVENT_COLUMNS: tuple[str, ...] = ("preemptions", "swaps_out", "swaps_in", "cow_copies")


def check_step_columns(steps: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_STEP_COLUMNS if c not in steps.columns]
    if missing:
        raise ValueError(f"steps table: missing columns {', '.join(missing)}")


def total_kv_blocks(steps: pd.DataFrame, summary: Mapping[str, Any]) -> int:
    """GPU KV blocks: `kv_blocks_total` from the summary (blocks used + free if it lacks the total)."""
    if "kv_blocks_total" in summary:
        blocks = int(summary["kv_blocks_total"])
    else:
        blocks = int((steps["kv_blocks_used"] + steps["kv_blocks_free"]).max())
    block_size = int(summary["block_size"])
    assert blocks > 0 and block_size > 0, f"no KV memory: {blocks} blocks of {block_size} slots"
    return blocks


def kv_timeline(steps: pd.DataFrame, summary: Mapping[str, Any]) -> pd.DataFrame:
    """Per step: `time_s` (step start), `kv_usage`, `kv_token_usage`, `batch_size`."""
    check_step_columns(steps)
    blocks = total_kv_blocks(steps, summary)
    return pd.DataFrame(
        {
            "time_s": steps["start_s"].astype(float).to_numpy(),
            "kv_usage": kv_usage(steps, blocks),
            "kv_token_usage": kv_token_usage(steps, blocks, int(summary["block_size"])),
            "batch_size": steps["batch_size"].to_numpy(dtype=float),
        }
    )


def memory_metrics(steps: pd.DataFrame, summary: Mapping[str, Any]) -> dict[str, float]:
    """KV usage (mean, peak), unused held slots, batch and running sequences, and event counts of one run.

    `mean_batch_size` counts the sequences a step computes; `mean_num_running` the requests admitted and not
    finished (the simulator's `num_running`: a parallel/beam request counts once), whose KV fills memory. Under
    vLLM's prefill-first schedule many admitted requests wait out prefill-only steps, so the two differ a lot."""
    check_step_columns(steps)
    figures = memory_figures(steps, total_kv_blocks(steps, summary), int(summary["block_size"]))
    weights = steps["duration_s"].to_numpy(dtype=float)
    reserved = steps["kv_slots_reserved"].to_numpy(dtype=float)
    tokens = steps["kv_tokens"].to_numpy(dtype=float)
    metrics: dict[str, float] = {
        "num_steps": len(steps),
        "mean_batch_size": figures["mean_batch_size"],
        "mean_num_running": time_weighted_mean(steps["num_running"].to_numpy(dtype=float), weights),
        "kv_usage_mean": figures["kv_usage_mean"],
        "kv_usage_peak": figures["kv_usage_peak"],
        "kv_token_usage_mean": figures["kv_token_usage_mean"],
        "kv_slots_unused_mean": time_weighted_mean(reserved - tokens, weights),
        "kv_unused_fraction": 1.0 - figures["slot_utilization"],
    }
    # A slot holds at most one token, so tokens > held slots means the simulator's tables disagree; count
    # such steps instead of failing, so the report can flag the token-based metrics of that run.
    metrics["kv_overfull_steps"] = int((tokens > reserved).sum())
    for column in EVENT_COLUMNS:
        metrics[column] = int(steps[column].sum())
    saved = summary.get("sharing_saved_fraction")  # JSON writes NaN as null
    metrics["sharing_saved_fraction"] = math.nan if saved is None else float(saved)
    return metrics
