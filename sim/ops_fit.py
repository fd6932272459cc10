"""Fit `sim.gemm_time.OpTimeModel` on a per-operator timing grid measured on one GPU.

`python -m sim.ops_fit data/ops/ops-grid-h200.csv --gpu h200 --out sim/profiles/ops/h200.json
--plot docs/img/ops-fit-h200.png` made the shipped constants and their figure. The grid has rows
`kind,op,tokens,k,n,us`: `linear` rows are [tokens, k] x [k, n] GEMMs; `elementwise` rows are kernels over
[tokens, k] tensors, of which the fused single kernels enter the fit (`rms_norm`: a norm moving 2 tensors,
`add`: an in-place add moving 3); the other elementwise rows (the executor's unfused torch SiLU-and-mul and
rotary embedding) are kept in the file for reference only. Each part is fitted by grid search for the least
mean relative error; efficiencies are relative to the `--gpu` preset's datasheet peak.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from sim.gemm_time import OpTimeModel
from sim.presets import GPUS, GpuSpec, lookup

GRID_COLUMNS = ("kind", "op", "tokens", "k", "n", "us")
ELEMENTWISE_FIT = {"rms_norm": ("norm", 2), "add": ("pointwise", 3)}  # op -> (kernel kind, tensors moved)
GEMM_SMOOTHNESS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0)


def load_grid(path: Path) -> pd.DataFrame:
    """The grid with its columns checked; comment lines start with '#'."""
    table = pd.read_csv(path, comment="#")
    missing = [c for c in GRID_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]}")
    bad = table[(table["tokens"] < 1) | ~(table["us"] > 0)]
    if len(bad):
        raise ValueError(f"{path}:{int(bad.index[0]) + 3}: tokens/us: must be >= 1 / > 0")
    return table


def _errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(predicted / measured - 1.0)


def fit_gemm(tokens: np.ndarray, k: np.ndarray, n: np.ndarray, seconds: np.ndarray, gpu: GpuSpec,
             dtype_bytes: int = 2, smoothness: tuple[float, ...] = GEMM_SMOOTHNESS,
             launch_us: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """(e_c, e_m, p, launch_s) minimising the mean relative error of `launch + (c^p + m^p)^(1/p)`."""
    c1 = 2.0 * tokens * k * n / gpu.peak_flops
    m1 = (k * n + tokens * (k + n)) * dtype_bytes / gpu.hbm_bandwidth
    launch = np.arange(0.0, 10.01, 0.25) if launch_us is None else launch_us
    best = (np.inf, 0.0, 0.0, 0.0, 0.0)
    for step, span in ((0.01, None), (0.0025, 0.02)):
        if span is None:
            ecs, ems, ps, fs = np.arange(0.3, 1.0001, step), np.arange(0.3, 1.0001, step), smoothness, launch
        else:
            _, ec0, em0, p0, f0 = best
            ecs = np.clip(np.arange(ec0 - span, ec0 + span + 1e-9, step), 0.01, 1.0)
            ems = np.clip(np.arange(em0 - span, em0 + span + 1e-9, step), 0.01, 1.0)
            ps, fs = (p0 * 0.9, p0, p0 * 1.1), np.arange(max(0.0, f0 - 0.3), f0 + 0.31, 0.05)
        for p in ps:
            p = max(1.0, p)
            terms = (c1[None, None, :] / ecs[:, None, None]) ** p + (m1[None, None, :] / ems[None, :, None]) ** p
            smooth = terms ** (1.0 / p)
            for f in fs:
                score = _errors(f * 1e-6 + smooth, seconds).mean(axis=2)
                i, j = np.unravel_index(int(score.argmin()), score.shape)
                if score[i, j] < best[0]:
                    best = (float(score[i, j]), float(ecs[i]), float(ems[j]), float(p), float(f))
    _, ec, em, p, f = best
    return ec, em, p, f * 1e-6


def fit_elementwise(nbytes: np.ndarray, seconds: np.ndarray, gpu: GpuSpec) -> tuple[float, float]:
    """(e, launch_s) minimising the mean relative error of `launch + bytes / (bandwidth * e)`."""
    es, fs = np.arange(0.05, 1.0001, 0.005), np.arange(0.0, 15.001, 0.05) * 1e-6
    pred = fs[None, :, None] + nbytes[None, None, :] / (gpu.hbm_bandwidth * es[:, None, None])
    score = _errors(pred, seconds).mean(axis=2)
    i, j = np.unravel_index(int(score.argmin()), score.shape)
    return float(es[i]), float(fs[j])


def fit_grid(grid: pd.DataFrame, gpu: GpuSpec, name: str, source: str, dtype_bytes: int = 2) -> OpTimeModel:
    """The model fitted on `grid`, with a description stating the source and the fit's errors."""
    lin = grid[grid["kind"] == "linear"]
    if lin.empty:
        raise ValueError("grid: no 'linear' rows to fit the GEMM constants on")
    arrays = [lin[c].to_numpy(np.float64) for c in ("tokens", "k", "n")]
    seconds = lin["us"].to_numpy(np.float64) * 1e-6
    ec, em, p, launch = fit_gemm(*arrays, seconds, gpu, dtype_bytes)
    fitted: dict[str, float] = dict(gemm_compute_efficiency=ec, gemm_memory_efficiency=em, gemm_smoothness=p,
                                    gemm_launch_s=launch)
    for op, (kind, tensors) in ELEMENTWISE_FIT.items():
        rows = grid[(grid["kind"] == "elementwise") & (grid["op"] == op)]
        if rows.empty:
            raise ValueError(f"grid: no elementwise '{op}' rows to fit the {kind} constants on")
        nbytes = tensors * rows["tokens"].to_numpy(np.float64) * rows["k"].to_numpy(np.float64) * dtype_bytes
        e, f = fit_elementwise(nbytes, rows["us"].to_numpy(np.float64) * 1e-6, gpu)
        fitted[f"{kind}_memory_efficiency"], fitted[f"{kind}_launch_s"] = e, f
    model = OpTimeModel(name=name, fitted_gpu=gpu.name, **fitted)
    gemm_err = _errors(np.array([model.gemm_s(gpu, t, int(k), int(n), dtype_bytes) for t, k, n in zip(*arrays)]),
                       seconds)
    description = (f"Fitted by `python -m sim.ops_fit` on {source} ({len(lin)} GEMM points): GEMM |error| "
                   f"median {np.median(gemm_err):.1%}, mean {gemm_err.mean():.1%}, max {gemm_err.max():.1%}. "
                   f"Efficiencies relative to the {gpu.name} preset's datasheet peak.")
    return OpTimeModel(name=name, description=description, fitted_gpu=gpu.name, **fitted)


def plot_fit(grid: pd.DataFrame, model: OpTimeModel, gpu: GpuSpec, path: Path, dtype_bytes: int = 2) -> Path:
    """Measured grid points against the fitted model, one panel per GEMM shape and one for the fitted
    elementwise kernels (log-log)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lin = grid[grid["kind"] == "linear"]
    ops = list(dict.fromkeys(lin["op"]))
    cols = 5
    rows = -(-(len(ops) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, constrained_layout=True)
    flat = list(axes.flat)
    for ax, op in zip(flat, ops):
        g = lin[lin["op"] == op].sort_values("tokens")
        k, n = int(g["k"].iloc[0]), int(g["n"].iloc[0])
        tokens = np.unique(np.geomspace(1, g["tokens"].max(), 200).astype(int))
        ax.loglog(g["tokens"], g["us"], "k.", ms=4, label="measured")
        ax.loglog(tokens, [model.gemm_s(gpu, t, k, n, dtype_bytes) * 1e6 for t in tokens], "-", label="model")
        ax.set_title(f"{op} ({k}x{n})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    ax = flat[len(ops)]
    for op, (kind, tensors) in ELEMENTWISE_FIT.items():
        g = grid[(grid["kind"] == "elementwise") & (grid["op"] == op)].sort_values("tokens")
        line = [model.kernel_s(gpu, kind, t, tensors * int(k), 0, dtype_bytes) * 1e6
                for t, k in zip(g["tokens"], g["k"])]
        ax.loglog(g["tokens"], g["us"], ".", ms=4, label=f"{op} measured")
        ax.loglog(g["tokens"], line, "-", label=f"{op} model")
    ax.set_title("fused elementwise kernels", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    for extra in flat[len(ops) + 1:]:
        extra.set_visible(False)
    flat[0].legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("us per call")
    for ax in axes[-1, :]:
        ax.set_xlabel("tokens")
    fig.suptitle(f"{model.name}: measured per-operator times and the fitted model ({gpu.name} datasheet peak)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.ops_fit", description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("--gpu", required=True, help="GPU preset the grid was measured on")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, help="also write a PNG of the grid against the fitted model")
    args = parser.parse_args(argv)
    try:
        gpu = lookup("gpu", GPUS, args.gpu)
        grid = load_grid(args.grid)
        header = args.grid.read_text().splitlines()[0]
        source = f"{args.grid} ({header.lstrip('# ')})" if header.startswith("#") else str(args.grid)
        model = fit_grid(grid, gpu, args.out.stem, source)
    except (ValueError, OSError) as exc:
        print(f"python -m sim.ops_fit: error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({k: (round(v, 9) if isinstance(v, float) else v)
                                    for k, v in asdict(model).items()}, indent=2) + "\n")
    if args.plot is not None:
        plot_fit(grid, model, gpu, args.plot)
    print(model.description)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
