"""Case 6: published vLLM latencies of Llama-3.1-8B on one H100 at fixed concurrency.

Published: InferenceBench "Recipe: concurrency sweep" (https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/),
1x H100-80GB-HBM3, vLLM 0.21.0, fp16, Llama-3.1-8B-Instruct, workload `llm.inference.chatbot-short`, captured
2026-05-16: p50 TTFT / p50 TPOT (ms) 13.98 / 6.48 at concurrency 1, 22.75 / 6.59 at 4, 41.69 / 10.94 at 16,
86.92 / 46.91 at 64. The workload (yobitelcomm/bench: plugins/llm-inference/.../benchmarks/chatbot-short.yaml,
datasets.py, harness/.../drivers/closed_loop.py) is a closed loop of c Python threads over ten one-sentence
built-in prompts; the lengths are not recorded: we take 64 prompt tokens (one sentence in Llama-3.1's chat
template) and 128 output tokens (an envelope of the same suite at concurrency 1 gives total / TPOT = 128).
Ours: llama-3-8b (Llama-3.1-8B has the same shapes), h100-sxm with its measured profile, policy `vllm-v0`
(V0-style; vLLM 0.21 runs the V1 engine). The closed loop of c users is emulated by constant arrivals at the
rate at which Little's law puts c requests in flight (rate x mean E2E latency = c within 3%), found by a
damped fixed-point iteration from the single-request latency. Band: published +- 15%.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.validation.case import VLLM_V0, CheckResult

SOURCE = ("InferenceBench, 'Recipe: concurrency sweep' (yobitelcomm.github.io/bench/recipes/concurrency-sweep/), "
          "vLLM 0.21.0 on 1x H100-80GB-HBM3, 2026-05-16")
ENGINE = {"model": "llama-3-8b", "gpu": "h100-sxm", "cost_profile": "h100-sxm"}
PROMPT, OUTPUT = 64, 128  # assumed (see the docstring)
PUBLISHED = {1: (13.98, 6.48), 4: (22.75, 6.59), 16: (41.69, 10.94), 64: (86.92, 46.91)}  # c -> TTFT, TPOT ms
TOLERANCE = 0.15
QUICK_CONCURRENCY = (1,)
ITERATIONS = 8
IN_FLIGHT_TOLERANCE = 0.03
HOST_MISS = ("the model has no host time: vLLM's TTFT includes the HTTP server, tokenization, scheduling, input "
             "preparation and detokenization, and each step's CPU work that CUDA graphs and async scheduling do not "
             "hide; our step_overhead_s (1.5 ms, fitted on our eager executor's device time) is the only fixed "
             "term. Fix: host-time terms in the cost model (per request: API + tokenize; per step: schedule + "
             "prepare, overlapped or not by the policy's engine), calibrated on a real vLLM server, not on this sweep.")
DECODE_NOTE = ("in band, but partly by compensation: our decode step is device time of our eager executor (1.5 ms "
               "fixed per step, no CUDA graphs) with memory efficiency fitted on our kernels, while vLLM replays "
               "CUDA graphs and pays host time instead; the model is about 12% slow here.")
LOAD_MISS = ("under load the published TPOT grows far more than ours (10.9 ms at 16 and 46.9 ms at 64, where "
             "throughput falls below that at 16): vLLM's per-step host work grows with the batch, and the client is "
             "one Python thread per user streaming through LiteLLM, whose own per-chunk cost at 64 streams may be "
             "part of the figure (not verified); our V0-style policy with no host time keeps decode steps "
             "weight-bound and short. Fix: host-time terms (per step and per scheduled request) and the V1 policy.")


def closed_loop(concurrency: int, seed: int = 0) -> dict:
    """Median TTFT/TPOT (ms) with about `concurrency` requests in flight."""
    from traces import generate

    from analysis.validation.search import replay_metrics

    requests = max(32, 8 * concurrency)
    trace = generate(requests, rate=1.0, arrival="constant", lengths="fixed", input_len=PROMPT,
                     output_len=OUTPUT, seed=seed)
    single = replay_metrics(trace, 1.0 / 1e3, VLLM_V0, seed, **ENGINE)  # one request at a time
    rate = concurrency / (single["mean_e2el_ms"] / 1e3)
    for _ in range(ITERATIONS):
        row = replay_metrics(trace, rate, VLLM_V0, seed, **ENGINE)
        in_flight = rate * row["mean_e2el_ms"] / 1e3
        if abs(in_flight / concurrency - 1.0) <= IN_FLIGHT_TOLERANCE:
            break
        rate *= (concurrency / in_flight) ** 0.5  # damped: latency grows with the rate
    return {"concurrency": concurrency, "rate": rate, "requests": requests,
            "in_flight": in_flight, **row}


def run(quick: bool, out_dir: Path) -> list[CheckResult]:
    levels = QUICK_CONCURRENCY if quick else tuple(PUBLISHED)
    rows = [closed_loop(c) for c in levels]
    pd.DataFrame(rows)[["concurrency", "rate", "requests", "in_flight", "median_ttft_ms", "median_tpot_ms",
                        "output_throughput"]].to_csv(out_dir / "vllm_h100_concurrency.csv", index=False,
                                                     float_format="%.6g")
    checks = []
    for row in rows:
        c = row["concurrency"]
        for metric, published, ours in (("TTFT", PUBLISHED[c][0], row["median_ttft_ms"]),
                                        ("TPOT", PUBLISHED[c][1], row["median_tpot_ms"])):
            miss = HOST_MISS if metric == "TTFT" else ("" if c < 16 else LOAD_MISS)
            checks.append(CheckResult(
                case="6", check=f"p50 {metric} at concurrency {c}", source=SOURCE,
                setting=f"Llama-3-8B / H100-SXM, profile h100-sxm, {VLLM_V0}, {PROMPT} prompt / {OUTPUT} output "
                        f"tokens (assumed), {row['in_flight']:.1f} in flight at {row['rate']:.3g} req/s",
                metric=f"median {metric} (ms)", published=f"{published:g} ms",
                band_lo=published * (1 - TOLERANCE), band_hi=published * (1 + TOLERANCE), ours=float(ours),
                unit="ms", expect_pass=not miss, reason=miss or DECODE_NOTE))
    return checks
