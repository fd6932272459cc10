"""Fidelity of the analytic model against measured execution: `python -m sim.execute.fidelity EXEC ANALYTIC`.

EXEC is a `pagedlab replay --backend execute` output directory (its `exec_steps.csv` pairs every measured
step with the analytic prediction of the same batch); ANALYTIC is a `--backend analytic` replay of the
same trace and settings. Per-step errors compare identical batches; request latency percentiles compare
the two replays end to end (their schedules may differ as their step times do).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from sim.cost import AnalyticCostModel, CostProfile, StepBatch
from sim.host_time import HOST_FIELDS
from sim.schema import CONFIG_JSON, EXEC_STEPS_CSV, REQUESTS_CSV


def step_errors(exec_steps: pd.DataFrame) -> dict[str, float]:
    measured, predicted = exec_steps["measured_s"].to_numpy(), exec_steps["predicted_s"].to_numpy()
    rel = np.abs(predicted - measured) / measured
    prefill = exec_steps["prefill_tokens"].to_numpy() > 0
    out = {
        "steps": float(len(rel)),
        "step_median_abs_rel_err": float(np.median(rel)),
        "step_p90_abs_rel_err": float(np.percentile(rel, 90)),
        "step_median_signed_rel_err": float(np.median((predicted - measured) / measured)),
        "busy_time_rel_err": float(predicted.sum() / measured.sum() - 1),
    }
    for name, mask in (("prefill", prefill), ("decode", ~prefill)):
        if mask.any():
            out[f"{name}_steps"] = float(mask.sum())
            out[f"{name}_step_median_abs_rel_err"] = float(np.median(rel[mask]))
    return out


def latency_errors(exec_requests: pd.DataFrame, analytic_requests: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    done_e = exec_requests[exec_requests["status"] == "finished"]
    done_a = analytic_requests[analytic_requests["status"] == "finished"]
    for col in ("e2e_s", "ttft_s"):
        for pct in (50, 99):
            measured = float(np.percentile(done_e[col], pct))
            predicted = float(np.percentile(done_a[col], pct))
            key = f"{col[:-2]}_p{pct}"
            out[f"{key}_measured_s"], out[f"{key}_predicted_s"] = measured, predicted
            out[f"{key}_rel_err"] = predicted / measured - 1
    return out


STEP_FIELDS = tuple(f.name for f in fields(StepBatch))  # the analytic model's inputs, columns of exec_steps.csv


def repredict(exec_steps: pd.DataFrame, config: dict, profile: str) -> pd.DataFrame:
    """The same measured steps with predictions from another cost profile (name or JSON path)."""
    from sim.presets import GPUS, MODELS

    cost = AnalyticCostModel(MODELS[config["model"]], GPUS[config["gpu"]], CostProfile.load(profile),
                             config["block_size"], config.get("kv_cache_dtype", "auto"))
    rows = exec_steps[list(STEP_FIELDS)].itertuples(index=False)
    out = exec_steps.copy()
    out["predicted_s"] = [cost.step_time(StepBatch(*row)) for row in rows]
    return out


def host_time_note(analytic_dir: Path) -> str | None:
    """One line when the analytic replay added host time, which the execute backend's steps do not hold
    (they are device time): its latencies then run long by the host model, not by an error of the device's."""
    cost = json.loads((analytic_dir / CONFIG_JSON).read_text()).get("cost_model", {})
    added = {k: cost[k] for k in HOST_FIELDS if cost.get(k)}
    if not added:
        return None
    terms = ", ".join(f"{k} {v:g}" for k, v in added.items())
    return (f"{analytic_dir}: its steps add host time ({terms}) that the measured steps do not hold; replay it "
            "with --host-engine device-only to compare device time with device time")


def fidelity(exec_dir: Path, analytic_dir: Path, profile: str | None = None) -> dict[str, float]:
    steps = pd.read_csv(exec_dir / EXEC_STEPS_CSV)
    if profile is not None:
        steps = repredict(steps, json.loads((exec_dir / CONFIG_JSON).read_text()), profile)
    out = step_errors(steps)
    out |= latency_errors(pd.read_csv(exec_dir / REQUESTS_CSV), pd.read_csv(analytic_dir / REQUESTS_CSV))
    return out


def markdown(result: dict[str, float]) -> str:
    pct = lambda x: f"{x:+.1%}"  # noqa: E731
    rows = [
        ("per-step time, median \\|error\\| (all steps)", f"{result['step_median_abs_rel_err']:.1%}"),
        ("per-step time, 90th percentile \\|error\\|", f"{result['step_p90_abs_rel_err']:.1%}"),
        ("per-step time, median signed error", pct(result["step_median_signed_rel_err"])),
    ]
    for name in ("prefill", "decode"):
        if f"{name}_steps" in result:
            rows.append((f"per-step time, median \\|error\\|, {int(result[name + '_steps'])} {name} steps",
                         f"{result[name + '_step_median_abs_rel_err']:.1%}"))
    rows.append(("busy time (sum of steps)", pct(result["busy_time_rel_err"])))
    for key, label in (("e2e_p50", "p50 request latency"), ("e2e_p99", "p99 request latency"),
                       ("ttft_p50", "p50 time to first token"), ("ttft_p99", "p99 time to first token")):
        rows.append((f"{label} ({result[key + '_measured_s']:.3f} s measured, "
                     f"{result[key + '_predicted_s']:.3f} s predicted)", pct(result[key + "_rel_err"])))
    lines = ["| quantity (analytic prediction vs. measured) | error |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.execute.fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("exec_dir", type=Path)
    parser.add_argument("analytic_dir", type=Path)
    parser.add_argument("--profile", help="re-predict the measured steps with this cost profile (name or path)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    result = fidelity(args.exec_dir, args.analytic_dir, args.profile)
    note = host_time_note(args.analytic_dir)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
