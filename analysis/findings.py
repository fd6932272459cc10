"""A comparison's findings: plain sentences read off the table (capacity, the highest load's winners and
ties, memory, preemptions, rejected requests) and the check that a run's memory tables agree.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from analysis.capacity import format_capacity
from analysis.report_context import ReportContext
from analysis.runs import RunData
from analysis.tables import format_value

TIE_TOLERANCE = 0.01  # figures this close are reported as a tie, not as one policy winning


def rejection_reasons(runs: Mapping[tuple[str, float], RunData]) -> dict[str, dict[str, int]]:
    """Per policy, each reason a request was rejected (or aborted) for and how many, over all its runs."""
    out: dict[str, dict[str, int]] = {}
    for (policy, _), run in runs.items():
        req = run.requests
        counts = out.setdefault(policy, {})
        for reason, count in req.loc[req["status"] == "rejected", "reason"].value_counts(sort=False).items():
            counts[str(reason)] = counts.get(str(reason), 0) + int(count)
    return out


def rejection_finding(table: pd.DataFrame, reasons: Mapping[str, Mapping[str, int]]) -> str | None:
    """One sentence: how many requests each policy rejected per load and why (None if no policy did)."""
    per_load = table.groupby("policy", sort=False)["rejected"].agg(["min", "max"])
    if not (per_load["max"] > 0).any():
        return None
    total = int(table["num_requests"].max())
    parts, clean = [], []
    for policy, r in per_load.iterrows():
        if r["max"] == 0:
            clean.append(str(policy))
            continue
        count = f"{r['min']}" if r["min"] == r["max"] else f"{r['min']}-{r['max']}"
        top = sorted(reasons.get(str(policy), {}).items(), key=lambda item: -item[1])[:2]
        why = "; ".join(f"'{reason}'" for reason, _ in top)
        parts.append(f"{policy} {count} of {total} at each load ({why})" if why else f"{policy} {count} of {total}")
    return ("Rejected requests, which count as missing the SLOs in goodput and SLO attainment: " + "; ".join(parts)
            + (f"; none under {', '.join(clean)}" if clean else "") + ".")


def _fewer_requests(row: pd.Series) -> str:
    """A caveat for a policy named best or worst in a run where it rejected requests: its latencies and
    throughput cover only the requests it ran, so it did less work than a policy that ran them all."""
    rejected = int(row.get("rejected", 0) or 0)
    if rejected <= 0:
        return ""
    return f", over the requests it ran: it rejected {rejected} of {int(row['num_requests'])}"


def findings(table: pd.DataFrame, capacity: pd.DataFrame, ctx: ReportContext,
             reasons: Mapping[str, Mapping[str, int]] | None = None) -> list[str]:
    """Plain sentences read off the numbers: who has the most capacity, who wins at the highest load, memory,
    and which requests were rejected (with `reasons`, from `rejection_reasons`)."""
    out: list[str] = []
    caps = capacity.dropna(subset=["capacity"]).sort_values("capacity", ascending=False)
    lowest = min(capacity["first_failing_load"].min(), capacity["capacity"].min()) if len(capacity) else float("nan")
    if caps.empty:
        out.append(f"No policy meets the SLOs ({ctx.slo.describe()}) for {100 * ctx.target:g}% of requests at any tested "
                   f"load: every capacity is below the lowest tested rate ({lowest:.3g} req/s).")
    else:
        parts = [f"{r.policy} {format_capacity(r.capacity, r.all_loads_met, r.first_failing_load)}"
                 for r in caps.itertuples()]
        none = capacity[capacity["capacity"].isna()]
        below = ", ".join(f"{r.policy} {format_capacity(r.capacity, r.all_loads_met, r.first_failing_load)}"
                          for r in none.itertuples())
        out.append(
            f"Capacity (req/s with >= {100 * ctx.target:g}% of requests within {ctx.slo.describe()}; between the highest "
            "tested rate that passes and the first that fails): "
            + ", ".join(parts) + (f"; {below}" if below else "")
            + ". `R+` means every tested rate passed (R the highest); `< R` that even the lowest failed."
        )
    top = table[table["load"] == max(ctx.loads)]
    if not top.empty and not (top["completed"] > 0).any():
        out.append(f"At the highest load ({ctx.load_label} {max(ctx.loads):g}, {top['rate'].iloc[0]:.3g} req/s) no "
                   "policy finished a request.")
    elif not top.empty:
        best_tput = top.loc[top["output_throughput"].idxmax()]
        where = f"At the highest load ({ctx.load_label} {max(ctx.loads):g}, {best_tput['rate']:.3g} req/s)"
        # Policies that all keep up with the load deliver the same throughput: no policy wins by a rounding error.
        tied = top[top["output_throughput"] >= (1 - TIE_TOLERANCE) * best_tput["output_throughput"]]
        if len(tied) > 1:
            out.append(f"{where} {', '.join(tied['policy'])} share the highest output throughput "
                       f"({best_tput['output_throughput']:.0f} tok/s, within {TIE_TOLERANCE:.0%} of each other).")
        else:
            out.append(f"{where} {best_tput['policy']} has the highest output throughput "
                       f"({best_tput['output_throughput']:.0f} tok/s{_fewer_requests(best_tput)}).")
        for column, what, unit in (("p99_ttft_ms", "p99 TTFT", "ms"), ("p99_tpot_ms", "p99 TPOT", "ms"),
                                   ("mean_normalized_latency_s", "mean normalized latency", "s/token")):
            valid = top.dropna(subset=[column])
            if len(valid) > 1 and valid[column].max() <= (1 + TIE_TOLERANCE) * valid[column].min():
                who = "every policy" if len(valid) == len(top) else ", ".join(valid["policy"])
                out.append(f"At that load the {what} is the same for {who} "
                           f"({format_value(column, valid[column].min())} {unit}, within {TIE_TOLERANCE:.0%}).")
            elif len(valid) == 1:  # the others finished no request there: nothing to rank
                only = valid.iloc[0]
                out.append(f"At that load only {only['policy']} has a {what} "
                           f"({format_value(column, only[column])} {unit}{_fewer_requests(only)}).")
            elif not valid.empty:
                best = valid.loc[valid[column].idxmin()]
                worst = valid.loc[valid[column].idxmax()]
                out.append(f"At that load the lowest {what} is {best['policy']}'s ({format_value(column, best[column])} {unit}"
                           f"{_fewer_requests(best)}), the highest {worst['policy']}'s "
                           f"({format_value(column, worst[column])} {unit}{_fewer_requests(worst)}).")
        batch = ", ".join(f"{r.policy} {r.mean_batch_size:.0f}/{r.mean_num_running:.0f}" for r in top.itertuples()
                          if r.mean_batch_size == r.mean_batch_size)  # no step ran: no batch to show (NaN)
        if batch:
            out.append(f"Sequences computed per step / requests admitted and unfinished there (time-weighted means; "
                       f"a parallel or beam request counts once, its sequences each): {batch}.")
    waste = table.groupby("policy", sort=False)["kv_unused_fraction"].mean().dropna()
    if not waste.empty:
        out.append("Held but unused KV slots (mean over loads): "
                   + ", ".join(f"{p} {100 * v:.1f}%" for p, v in waste.sort_values().items()) + ".")
    events = table.groupby("policy", sort=False)[["preemptions", "swaps_out", "cow_copies"]].sum()
    busy = events[(events > 0).any(axis=1)]
    if not busy.empty:
        out.append("Preemptions / swap-outs / copy-on-write copies over all loads: "
                   + ", ".join(f"{p} {int(r.preemptions)}/{int(r.swaps_out)}/{int(r.cow_copies)}" for p, r in busy.iterrows()) + ".")
    rejected = rejection_finding(table, reasons or {})
    if rejected:
        out.append(rejected)
    overfull = table[table["kv_overfull_steps"] > 0]
    if not overfull.empty:
        out.append(check_failed_message(overfull))
    return out


def check_failed_message(overfull: pd.DataFrame) -> str:
    """What to say about runs whose steps hold more tokens than reserved slots (the simulator's tables disagree)."""
    runs = ", ".join(f"{r.policy}@{r.load:g}" for r in overfull.itertuples())
    return (f"CHECK FAILED: in {len(overfull)} run(s) ({runs}) some steps report more KV tokens than reserved KV slots, "
            "which cannot happen; kv_token_usage_mean and kv_unused_fraction of those runs are not trustworthy.")
