"""Case 1: one layer's operator times against Vidur's measurements on H100 and A100 (data/vidur/*-mlp.csv).

Measured: the sum of the median times of the operators in `sim.op_times.OPS` (norms, QKV / output / gate-up /
down projections, activation, rotary, residual add) per `num_tokens`, tp=1, tokens 1..4096. Ours (checked): the
per-operator model `sim.op_times.layer_time` with the `h200` constants of `sim/profiles/ops/` (fitted on our own
H200 operator grid, data/ops/, not on these data), carried to H100 and A100 by their datasheet peak FLOP/s and
HBM bandwidth and by the fraction of that bandwidth each card's memory reaches in a published STREAM benchmark
(`sim.hbm_measured`). Diagnostics: what the step cost model charges per layer (`layer_gemm_time`, profiles
`h100-sxm` for H100, the datasheet `default` for A100) and the plain roofline per operator (`op_times`). Vidur's
A100 is taken as the 80 GB part.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.validation.case import CheckResult
from analysis.validation.figures import plot_layer_times

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "vidur"
MAX_TOKENS = 4096
MEDIAN_GOAL, MAX_GOAL = 0.05, 0.15
OP_MODEL = "h200"  # sim/profiles/ops/<name>.json
# (data file stem, our model preset, our GPU preset, cost profile of the step-model diagnostic)
SETTINGS: tuple[tuple[str, str, str, str], ...] = (
    ("h100-Llama-2-7b-hf", "llama-2-7b", "h100-sxm", "h100-sxm"),
    ("a100-Llama-2-7b-hf", "llama-2-7b", "a100-80gb", "default"),
    ("a100-Meta-Llama-3-8B", "llama-3-8b", "a100-80gb", "default"),
)
# Checks the per-operator model meets (set from its first run, 2026-12-02); the others are known misses.
EXPECT_PASS: frozenset[tuple[str, str]] = frozenset({("a100-Llama-2-7b-hf", "median")})
MISS_REASON = (
    "every point over 15% lies at 72-800 tokens, and GEMM time is 77-101% of its error: there Vidur's four GEMMs "
    "take 1.16-1.62x (median 1.23-1.27x) the smooth roofline, in steps of its cuBLAS's tile and kernel choices at "
    "row-tile boundaries (the largest from 128 to 136 tokens: the H100 gate/up GEMM 71 -> 126 us) that our H200 "
    "grid (same 132 SMs, newer cuBLAS) does not show there, so nothing measured here says where they fall. The "
    "rest: its norm, rotary and SiLU-and-mul kernels take 1.5-2x our fused-kernel constants (-2% to -4.5% of the "
    "layer at every size). The medians are set by the 513-1024-token points (half the grid lies above 1024 "
    "tokens, within 3.3%), where the end of the GEMM transition (-2% to -9%) and the elementwise kernels (-2% to "
    "-3%) add up to -4% to -12%. Fix: operator grids measured on an H100 / A100 with Vidur's kernels "
    "(scripts/ops_grid.py, python -m sim.ops_fit), not a fit to these data."
)


def load_measured(stem: str) -> pd.DataFrame:
    """Per num_tokens (tp=1, <= 4096): each operator's median ms and their sum `layer_ms`."""
    from sim.op_times import OPS

    path = DATA_DIR / f"{stem}-mlp.csv"
    table = pd.read_csv(path)
    cols = [f"time_stats.{op}.median" for op in OPS]
    missing = [c for c in cols + ["num_tokens", "num_tensor_parallel_workers"] if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]}")
    table = table[(table["num_tensor_parallel_workers"] == 1) & (table["num_tokens"] <= MAX_TOKENS)]
    # Repeated profiling runs of one point: the median of their medians.
    per_tokens = table.groupby("num_tokens")[cols].median().rename(columns=dict(zip(cols, OPS)))
    per_tokens["layer_ms"] = per_tokens[list(OPS)].sum(axis=1)
    return per_tokens.reset_index()


def compare_points(stem: str, model: str, gpu: str, profile: str) -> pd.DataFrame:
    """Measured and predicted per-layer ms at every measured token count, with relative errors."""
    from sim.cost import CostProfile
    from sim.gemm_time import OpTimeModel
    from sim.op_times import layer_gemm_time, layer_time, op_times
    from sim.presets import GPUS, MODELS

    spec, card, prof, ops = MODELS[model], GPUS[gpu], CostProfile.load(profile), OpTimeModel.load(OP_MODEL)
    measured = load_measured(stem)
    tokens = measured["num_tokens"].astype(int).tolist()
    ops_ms = np.array([layer_time(spec, card, ops, t) for t in tokens]) * 1e3
    layer = np.array([layer_gemm_time(spec, card, prof, t) for t in tokens]) * 1e3
    per_op = np.array([sum(op_times(spec, card, prof, t).values()) for t in tokens]) * 1e3
    return pd.DataFrame({
        "data": stem, "model": model, "gpu": gpu, "profile": profile, "num_tokens": tokens,
        "measured_ms": measured["layer_ms"].to_numpy(), "ops_ms": ops_ms, "layer_ms": layer, "per_op_ms": per_op,
        "ops_error": ops_ms / measured["layer_ms"].to_numpy() - 1.0,
        "layer_error": layer / measured["layer_ms"].to_numpy() - 1.0,
        "per_op_error": per_op / measured["layer_ms"].to_numpy() - 1.0,
    })


def run(quick: bool, out_dir: Path) -> list[CheckResult]:
    points = pd.concat([compare_points(*s) for s in SETTINGS], ignore_index=True)
    points.to_csv(out_dir / "ops_points.csv", index=False, float_format="%.6g")
    plot_layer_times(points, out_dir / "ops_layer_time.png")
    checks = []
    for stem, model, gpu, profile in SETTINGS:
        p = points[points["data"] == stem]
        err, step, per_op = p["ops_error"].abs(), p["layer_error"].abs(), p["per_op_error"].abs()
        worst = p.loc[err.idxmax()]
        setting = (f"{model} on {gpu} (Vidur {stem.split('-')[0].upper()}), tp=1, tokens 1..{MAX_TOKENS} "
                   f"({len(p)} points), per-operator model {OP_MODEL} (sim/profiles/ops/{OP_MODEL}.json)")
        note = (f"worst at {int(worst.num_tokens)} tokens: ours {worst.ops_ms:.3f} ms vs {worst.measured_ms:.3f} ms "
                f"({worst.ops_error:+.0%}); {(err > MAX_GOAL).sum()} of {len(p)} points over {MAX_GOAL:.0%}. "
                f"Step cost model (profile {profile}): median {step.median():.1%}, max {step.max():.1%}; "
                f"per-operator roofline: median {per_op.median():.1%}, max {per_op.max():.1%}. ")
        source = f"Vidur profiling data, data/vidur/{stem}-mlp.csv (microsoft/vidur @7d47513, MIT)"
        for stat, value, goal in (("median", err.median(), MEDIAN_GOAL), ("max", err.max(), MAX_GOAL)):
            expect = (stem, stat) in EXPECT_PASS
            checks.append(CheckResult(
                case="1", check=f"{stem} {stat} abs error", source=source, setting=setting,
                metric=f"{stat} |relative error| of one layer's non-attention time",
                published="measured per-operator medians (sum)", band_lo=None, band_hi=goal, ours=float(value),
                unit="fraction", expect_pass=expect, reason=note if expect else note + MISS_REASON))
    return checks
