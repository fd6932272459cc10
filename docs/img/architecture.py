"""Draws docs/img/architecture.png: `python docs/img/architecture.py` (matplotlib only)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).with_name("architecture.png")

# name: (x, y, width, height, title, what it owns, colour)
BOXES = {
    "trace": (0.2, 7.6, 2.6, 1.3, "traces.Trace", "requests: arrival, prompt,\noutput, n, sampling, prefix", "#e8f0fe"),
    "engine": (3.6, 7.6, 4.2, 1.3, "sim.engine.Engine", "the simpy clock: arrivals process,\nstep loop (plan, time, hold, apply)", "#fde7e7"),
    "sched": (3.6, 4.5, 4.2, 2.3, "sim.scheduler.Scheduler", "waiting / running / swapped queues,\ncounters, step records\n"
              "schedule() -> SchedulerOutput\nupdate(out, durations, start, end)", "#fff4d6"),
    "policy": (0.2, 4.5, 2.6, 2.3, "sim.policies.*", "a strategy: schedule(view)\n-> StepPlan, via verbs:\nadmit, reserve_decode, swap_in;\nV1: reserve_step, reserve_slots,\npreempt; sglang: retract, abort", "#eef7e8"),
    "kv": (3.6, 1.9, 4.2, 1.8, "KVLayout (sim.kv_layouts.LAYOUTS)", "paged | paged-per-chunk | reserved | contiguous\nlazy decode sums, crossings, prefill\nprogress, prefix cache, swap, beams", "#f3e8fd"),
    "bm": (3.6, 0.1, 4.2, 1.1, "memory.BlockManager", "block tables, refcounts, fork / CoW / swap;\nPrefixCachingBlockManager: one free queue", "#ececec"),
    "timer": (8.6, 4.5, 3.4, 2.3, "StepTimer (sim.timer)", "AnalyticTimer: cost model,\nk decode steps in closed form\n"
              "ExecuteTimer: real kernels\n(sim.execute)", "#e0f5f5"),
    "tables": (8.6, 1.9, 3.4, 1.8, "sim.records / sim.tables", "records -> steps.csv,\nrequests.csv, itl.npy\n(columns: sim.schema)", "#e8f0fe"),
    "metrics": (8.6, 0.1, 3.4, 1.1, "sim.metrics", "one definition: summary.json\nand analysis (compare report)", "#fde7e7"),
}

ARROWS = [
    ("trace", "engine", "arrival i"),
    ("engine", "sched", "add_request / schedule / update"),
    ("policy", "sched", "StepPlan"),
    ("sched", "kv", "allocate, reserve,\npreempt, swap"),
    ("kv", "bm", ""),
    ("sched", "timer", "SchedulerOutput"),
    ("timer", "engine", "durations (ns)"),
    ("sched", "tables", "records"),
    ("tables", "metrics", ""),
]


def centre(box: str, side: str) -> tuple[float, float]:
    x, y, w, h, *_ = BOXES[box]
    return {"top": (x + w / 2, y + h), "bottom": (x + w / 2, y), "left": (x, y + h / 2), "right": (x + w, y + h / 2)}[side]


def sides(a: str, b: str) -> tuple[str, str]:
    ax, ay, aw, ah, *_ = BOXES[a]
    bx, by, bw, bh, *_ = BOXES[b]
    if ax + aw <= bx:
        return "right", "left"
    if bx + bw <= ax:
        return "left", "right"
    return ("bottom", "top") if ay > by else ("top", "bottom")


def main() -> None:
    fig, ax = plt.subplots(figsize=(12.5, 9.4))
    ax.set_xlim(0, 12.2)
    ax.set_ylim(-0.1, 9.1)
    ax.axis("off")
    for x, y, w, h, title, body, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=colour, ec="#444"))
        ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="top", fontsize=11, fontweight="bold")
        ax.text(x + w / 2, y + h - 0.58, body, ha="center", va="top", fontsize=9, linespacing=1.3)
    for a, b, label in ARROWS:
        sa, sb = sides(a, b)
        p, q = centre(a, sa), centre(b, sb)
        if (a, b) == ("timer", "engine"):  # around the scheduler's corner
            p, q = centre("timer", "top"), (BOXES["engine"][0] + BOXES["engine"][2], 8.0)
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=16, lw=1.4, color="#333",
                                     connectionstyle="arc3,rad=0.0" if (a, b) != ("timer", "engine") else "angle,angleA=90,angleB=0"))
        if label:
            mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
            ax.text(mx + 0.08, my + 0.08, label, fontsize=8.5, color="#222", ha="left", va="bottom",
                    bbox={"fc": "white", "ec": "none", "alpha": 0.85, "pad": 1})
    ax.set_title("How a request travels through pagedlab's simulator", fontsize=13)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)


if __name__ == "__main__":
    main()
