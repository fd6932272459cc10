"""Serving metrics of one replay, with the names and units of vLLM's serving benchmark.

Inputs are the simulator's `requests` table (one row per request) and `itl_s` (every inter-token gap of every
finished request, seconds). Definitions follow vLLM's `calculate_metrics`:

- `completed`: finished requests; rejected ones count only in `num_requests`/`rejected`.
- throughputs divide by the benchmark duration: first arrival to last finish, or to the last arrival if a
  request refused later makes that later (or a duration passed in).
- TTFT and E2EL per finished request; TPOT = (E2EL - TTFT) / (output_tokens - 1), only for requests with more
  than one output token (a single-token request has no TPOT; for goodput its TPOT counts as 0), as
  `sim.metrics.time_per_output_token` defines it for `summary.json` too.
- percentiles (the median too) use numpy's linear interpolation, as `sim.metrics.percentiles` defines them for
  `summary.json`; latencies are reported in ms.

Differences from vLLM, on purpose: an empty sample gives NaN (not 0), and output throughput counts
`generated_tokens` (every token of every parallel/beam sequence: the work the engine really did).
Normalized latency is the PagedAttention paper's metric: E2EL / output_tokens, in seconds per token.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.slo import SLO
from sim.metrics import percentiles as sim_percentiles
from sim.metrics import time_per_output_token

DEFAULT_PERCENTILES: tuple[float, ...] = (90.0, 99.0)
REQUIRED_REQUEST_COLUMNS: tuple[str, ...] = (
    "arrival_s", "finish_s", "prompt_tokens", "output_tokens", "status", "ttft_s", "e2e_s",
)
LATENCY_METRICS: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el")


def percentile_key(p: float) -> str:
    """vLLM's spelling: 99 -> `p99`, 99.9 -> `p99.9`."""
    return f"p{int(p)}" if float(p).is_integer() else f"p{p:g}"


def check_request_columns(requests: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_REQUEST_COLUMNS if c not in requests.columns]
    if missing:
        raise ValueError(f"requests table: missing columns {', '.join(missing)}")


def request_latencies(requests: pd.DataFrame) -> pd.DataFrame:
    """Per finished request: `ttft_s`, `tpot_s` (NaN with one output token), `e2el_s`, `normalized_latency_s`."""
    check_request_columns(requests)
    done = requests[requests["status"] == "finished"]
    ttft = done["ttft_s"].astype(float)
    e2el = done["e2e_s"].astype(float)
    out_tokens = done["output_tokens"].astype(float)
    tpot = pd.Series(time_per_output_token(ttft, e2el, out_tokens), index=done.index)
    table = pd.DataFrame(
        {
            "request_id": done["request_id"] if "request_id" in done.columns else done.index,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2el_s": e2el,
            "normalized_latency_s": e2el / out_tokens,
        }
    )
    assert not table["ttft_s"].isna().any(), "a finished request has no first-token time"
    return table.reset_index(drop=True)


def good_requests(latencies: pd.DataFrame, slo: SLO) -> pd.Series:
    """True for each finished request meeting every SLO (`<=`; TPOT of a 1-token request counts as 0)."""
    good = pd.Series(True, index=latencies.index)
    columns = {"ttft": "ttft_s", "tpot": "tpot_s", "e2el": "e2el_s"}
    for name, ms in slo.items():
        values = latencies[columns[name]]
        if name == "tpot":
            values = values.fillna(0.0)
        good &= values <= ms / 1000.0
    return good


def benchmark_duration_s(requests: pd.DataFrame) -> float:
    """First arrival to the last finish, or to the last arrival if later (vLLM's benchmark waits for every
    request, a refused one included: it answers when sent); NaN when no request finished."""
    finish = requests.loc[requests["status"] == "finished", "finish_s"]
    if finish.empty:
        return math.nan
    return float(max(finish.max(), requests["arrival_s"].max()) - requests["arrival_s"].min())


def _stats(prefix: str, values_s: np.ndarray, percentiles: Sequence[float], scale: float, unit: str) -> dict:
    """mean/std/median/pXX of `values_s` times `scale`, named `{stat}_{prefix}_{unit}`; NaN when empty."""
    values = np.asarray(values_s, dtype=float)
    values = values[~np.isnan(values)] * scale
    empty = values.size == 0
    median, *pcts = sim_percentiles(values, (50.0, *percentiles))
    out = {
        f"mean_{prefix}_{unit}": math.nan if empty else float(np.mean(values)),
        f"std_{prefix}_{unit}": math.nan if empty else float(np.std(values)),
        f"median_{prefix}_{unit}": median,
    }
    for p, value in zip(percentiles, pcts):
        out[f"{percentile_key(p)}_{prefix}_{unit}"] = value
    return out


def serving_metrics(
    requests: pd.DataFrame,
    itl_s: np.ndarray,
    *,
    duration_s: float | None = None,
    slo: SLO | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> dict[str, float]:
    """vLLM benchmark metrics of one run, plus normalized latency, goodput and SLO attainment.

    `request_goodput` (good requests per second) and `slo_attainment` (good requests over all requests,
    rejected ones included) are NaN when `slo` is None or empty.
    """
    latencies = request_latencies(requests)
    done = requests[requests["status"] == "finished"]
    completed = len(done)
    duration = benchmark_duration_s(requests) if duration_s is None else float(duration_s)
    if completed and not duration > 0:
        raise ValueError(f"benchmark duration must be > 0 s with {completed} finished requests, got {duration}")
    token_column = "generated_tokens" if "generated_tokens" in done.columns else "output_tokens"
    total_input = int(done["prompt_tokens"].sum())
    total_output = int(done[token_column].sum())

    def per_second(count: float) -> float:
        return count / duration if completed else 0.0

    metrics: dict[str, float] = {
        "num_requests": len(requests),
        "completed": completed,
        "rejected": int((requests["status"] == "rejected").sum()),
        "duration_s": duration,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": per_second(completed),
        "output_throughput": per_second(total_output),
        "total_token_throughput": per_second(total_input + total_output),
    }
    if slo is None or slo.is_empty:
        metrics["request_goodput"] = math.nan
        metrics["slo_attainment"] = math.nan
    else:
        num_good = int(good_requests(latencies, slo).sum())
        metrics["request_goodput"] = per_second(num_good)
        metrics["slo_attainment"] = num_good / len(requests) if len(requests) else math.nan
    metrics.update(_stats("ttft", latencies["ttft_s"].to_numpy(), percentiles, 1000.0, "ms"))
    metrics.update(_stats("tpot", latencies["tpot_s"].to_numpy(), percentiles, 1000.0, "ms"))
    metrics.update(_stats("itl", np.asarray(itl_s, dtype=float), percentiles, 1000.0, "ms"))
    metrics.update(_stats("e2el", latencies["e2el_s"].to_numpy(), percentiles, 1000.0, "ms"))
    metrics.update(_stats("normalized_latency", latencies["normalized_latency_s"].to_numpy(), percentiles, 1.0, "s"))
    return metrics
