"""`pagedlab calibrate`: measure the executor's step times on this GPU and fit a cost profile.

    pagedlab calibrate --gpu-name h200 --force              # replaces sim/profiles/h200.json (+ .csv)
    pagedlab replay --trace T --gpu h200 --cost-profile h200 --out out/

A profile in sim/profiles/ is what `--cost-profile NAME` loads, so an existing one is never replaced, and a
CPU or `--quick` fit (a smoke test, not the GPU's times) never written there, without `--force`.
Heavy imports (torch, triton) happen inside `run`; on the CPU the Triton interpreter is switched on first.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING

from traces.options import seed_arg

if TYPE_CHECKING:  # torch stays out of `pagedlab` start-up
    import torch

    from sim.execute.calibrate import Point
    from sim.presets import ModelSpec

CPU_DEVICE_NAME = "CPU (Triton interpreter)"  # the measurements' device column on the CPU


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="measure step times on the GPU and write a cost profile for the analytic backend",
        description="Run the execute backend's real steps (prefill, decode, mixed; copy-on-write and swap "
                    "copies) over a grid on this device, fit the analytic model's efficiencies and overheads "
                    "to the measured times, and write the profile (JSON) and the measurements (CSV).",
    )
    p.add_argument("--gpu-name", required=True, metavar="NAME",
                   help="GPU preset the efficiencies refer to (h100-sxm, h200, ...); also the profile's name")
    p.add_argument("--model", default="llama-3-8b", metavar="M", help="model preset to measure (default llama-3-8b)")
    p.add_argument("--device", default=None, choices=("cuda", "cpu"),
                   help="default: cuda (an error without a CUDA GPU); cpu runs the Triton interpreter: slow, a "
                        "smoke test, not a GPU profile")
    p.add_argument("--block-size", type=int, default=16, metavar="B", help="tokens per KV block (default 16)")
    p.add_argument("--kv-cache-dtype", default="auto", metavar="auto|fp8",
                   help="KV cache element type: auto = the model's dtype (default), fp8 = e4m3; the fit counts "
                        "attention bytes as stored, so use the profile with the same --kv-cache-dtype")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs per point (default 5)")
    p.add_argument("--quick", action="store_true", help="a few small points (CPU smoke test; give --out)")
    p.add_argument("--seed", type=seed_arg, default=0, metavar="S", help="seed of the random weights (default 0)")
    p.add_argument("--from-csv", metavar="PATH", help="refit from earlier measurements instead of measuring")
    p.add_argument("--out", metavar="PATH", help="profile JSON to write (default: sim/profiles/NAME.json); "
                   "the measurements go next to it as .csv; an existing file is refused unless --force, and so "
                   "is a CPU or --quick fit into sim/profiles/")
    p.add_argument("--force", action="store_true",
                   help="replace an existing profile (a shipped one too), or write a CPU/--quick fit to sim/profiles/")
    p.set_defaults(func=run)


def _check_out_dir(directory: Path) -> None:
    """One line naming --out where the profile's directory cannot be made or written."""
    import os

    from sim.result import check_makeable

    check_makeable(directory)
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise OSError(f"{directory}: out: not a writable directory")


def run(args: argparse.Namespace) -> int:
    from sim.cost import PROFILE_DIR, CostProfile
    from sim.presets import GPUS, KV_CACHE_DTYPES, MODELS, lookup

    gpu, model = lookup("gpu", GPUS, args.gpu_name), lookup("model", MODELS, args.model)
    if args.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype: unknown name {args.kv_cache_dtype!r}; valid names: "
                         f"{', '.join(KV_CACHE_DTYPES)}")
    if args.repeats < 1:
        raise ValueError(f"repeats: must be an integer >= 1, got {args.repeats}")
    out = Path(args.out) if args.out else PROFILE_DIR / f"{args.gpu_name}.json"
    if out.suffix != ".json":
        raise ValueError(f"{out}: out: the profile must be a .json file")
    _check_out_dir(out.parent)  # before minutes of measuring
    csv = out.with_suffix(".csv")
    refit_in_place = bool(args.from_csv) and Path(args.from_csv).resolve() == csv.resolve()
    if args.from_csv:
        points, measured, copy_s, swap_s, device_name = _read_csv(Path(args.from_csv))
        _check_smoke_fit(out, args.gpu_name, device_name == CPU_DEVICE_NAME, _is_quick(points), args.force)
        _check_replace(out, csv, refit_in_place, args.force)
    else:
        device = _device(args.device)
        _check_smoke_fit(out, args.gpu_name, device.type == "cpu", args.quick, args.force)
        _check_replace(out, csv, refit_in_place, args.force)
        points, measured, copy_s, swap_s, device_name = _measure(args, model, device)
    import numpy as np

    from sim.execute.calibrate import fit_profile, predict, profile_dict, rel_errors

    base = CostProfile.load("default")
    kv = args.kv_cache_dtype
    profile = fit_profile(points, measured, model, gpu, args.block_size, base, copy_s, swap_s, kv_cache_dtype=kv)
    predicted = predict(points, profile, model, gpu, args.block_size, kv)
    err = rel_errors(predicted, np.asarray(measured))
    description = (f"Measured by `pagedlab calibrate` on {device_name} ({datetime.date.today().isoformat()}): "
                   f"{model.name} shapes{', fp8 KV cache' if kv == 'fp8' else ''}, {len(points)} steps of the "
                   f"execute backend; fit median |error| "
                   f"{np.median(err):.1%}, max {err.max():.1%}. Efficiencies relative to the {gpu.name} preset's "
                   f"datasheet peak; step times are device time (see docs/execute.md).")
    data = profile_dict(profile) | {"name": args.gpu_name, "description": description}
    CostProfile(**data)  # validate before writing
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    if not refit_in_place:
        _write_csv(csv, points, measured, predicted, copy_s, swap_s, device_name)
    print(f"{args.gpu_name}: {len(points)} points on {device_name}; fit median |error| {np.median(err):.1%}, "
          f"max {err.max():.1%} -> {out}")
    return 0


def _device(name: str | None) -> "torch.device":
    """`--device`, where its default (cuda) is an error without a GPU: it fell back to the CPU silently, and a
    CPU fit is a smoke test, not the profile of the GPU it is named after."""
    import torch

    from sim.execute.device import resolve_device

    if name is None and not torch.cuda.is_available():
        raise ValueError("calibrate: needs a CUDA GPU (none is visible); pass --device cpu to fit on the CPU's "
                         "Triton interpreter (slow, and not a GPU profile: give --out PATH)")
    return resolve_device(name)


def _in_profile_dir(out: Path) -> bool:
    from sim.cost import PROFILE_DIR

    return out.parent.resolve() == PROFILE_DIR.resolve()


def _is_quick(points: list["Point"]) -> bool:
    """Measurements of the `--quick` grid only (read back from a CSV)."""
    from sim.execute.calibrate import quick_grid

    return set(points) <= set(quick_grid())


def _check_smoke_fit(out: Path, gpu_name: str, on_cpu: bool, quick: bool, force: bool) -> None:
    """Refuse to put a fit from the CPU or the quick grid where `--cost-profile NAME` would load it as the
    GPU's: a CPU fit's step times were thousands of times the GPU's (TTFT p50 2444 s against 0.116 s)."""
    if force or not (on_cpu or quick) or not _in_profile_dir(out):
        return
    how = " and ".join(w for w, on in (("on the CPU (Triton interpreter)", on_cpu), ("with --quick", quick)) if on)
    raise ValueError(f"{out}: out: a fit measured {how} is a smoke test, not {gpu_name} timings, yet "
                     f"`--cost-profile {out.stem}` would load it from there; give --out PATH outside sim/profiles/, "
                     "or --force")


def _check_replace(out: Path, csv: Path, refit_in_place: bool, force: bool) -> None:
    """Refuse an existing profile (or measurements CSV) unless `force`: the shipped ones were measured on GPUs
    this machine may not have, and any other is someone's earlier measurement."""
    if force:
        return
    if out.exists():
        what = (f"would replace the {out.stem} profile that `--cost-profile {out.stem}` loads (the shipped ones "
                "were measured on real GPUs)" if _in_profile_dir(out) else "exists")
        raise OSError(f"{out}: out: {what}; give --out PATH to write elsewhere, or --force to replace it")
    if csv.exists() and not refit_in_place:
        raise OSError(f"{csv}: out: exists (the measurements go next to the profile); give --out PATH to write "
                      "elsewhere, or --force to replace it")


def _measure(args: argparse.Namespace, model: "ModelSpec", device: "torch.device",
             ) -> tuple[list["Point"], list[float], tuple[int, float], tuple[int, float], str]:
    from sim.execute.device import check_fits, dtype_for, kv_dtype_for

    import torch

    from sim.execute.calibrate import (
        full_grid, point_tokens, quick_grid, time_copies, time_point, time_swaps, warm_up,
    )
    from sim.execute.model import ModelShapes
    from sim.execute.runner import StepRunner

    points = quick_grid() if args.quick else full_grid()
    bs = args.block_size
    num_blocks = max(point_tokens(p) // bs + len(p[0]) + len(p[1]) for p in points) + 8
    copies, swaps = (4, 4) if args.quick else (64, 64)
    shapes, dtype, kv_dtype = ModelShapes.of(model), dtype_for(device), kv_dtype_for(device, args.kv_cache_dtype)
    # Before the weights are allocated: on the CPU a model larger than host memory got the process killed.
    check_fits(model.name, shapes.num_params() * dtype.itemsize, 2 * shapes.num_layers * num_blocks * bs
               * shapes.num_kv_heads * shapes.head_dim * kv_dtype.itemsize, 0, device)
    runner = StepRunner(shapes, num_blocks, swaps, bs, dtype, device, args.seed, poison=False, kv_dtype=kv_dtype)
    warm_up(runner, num_blocks)
    repeats = 1 if args.quick else args.repeats
    measured = [time_point(runner, p, num_blocks, repeats) for p in points]
    copy_s = (copies, time_copies(runner, copies, repeats))
    swap_s = (swaps, time_swaps(runner, swaps, repeats))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else CPU_DEVICE_NAME
    return points, measured, copy_s, swap_s, name


def _write_csv(path: Path, points, measured, predicted, copy_s, swap_s, device_name: str) -> None:
    lines = ["kind,prefill_chunks,decode_contexts,count,measured_s,predicted_s,device"]
    for (prefills, decodes), t, p in zip(points, measured, predicted):
        chunks = " ".join(f"{c}+{q}" for c, q in prefills)
        ctxs = " ".join(str(c) for c in decodes)
        lines.append(f"step,{chunks},{ctxs},0,{float(t)!r},{float(p)!r},{device_name}")
    lines.append(f"copy,,,{copy_s[0]},{float(copy_s[1])!r},,{device_name}")
    lines.append(f"swap,,,{swap_s[0]},{float(swap_s[1])!r},,{device_name}")
    path.write_text("\n".join(lines) + "\n")


def _read_csv(path: Path):
    try:
        rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line.strip()]
    except OSError as exc:
        raise OSError(f"{path}: {exc.strerror}") from None
    points, measured, copy_s, swap_s, device = [], [], None, None, "?"
    for i, row in enumerate(rows, start=2):
        if len(row) != 7:
            raise ValueError(f"{path}:{i}: expected 7 fields, got {len(row)}")
        kind, chunks, ctxs, count, t, _, device = row
        if kind == "step":
            prefills = tuple(tuple(int(x) for x in c.split("+")) for c in chunks.split())
            points.append((prefills, tuple(int(c) for c in ctxs.split())))
            measured.append(float(t))
        elif kind in ("copy", "swap"):
            value = (int(count), float(t))
            copy_s, swap_s = (value, swap_s) if kind == "copy" else (copy_s, value)
        else:
            raise ValueError(f"{path}:{i}: kind: unknown {kind!r}; valid: step, copy, swap")
    if not points:
        raise ValueError(f"{path}: no step measurements")
    return points, measured, copy_s, swap_s, device
