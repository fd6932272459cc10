"""Case 6: published vLLM latencies of Llama-3.1-8B on one H100 at fixed concurrency.

Published: InferenceBench "Recipe: concurrency sweep" (https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/),
1x H100-80GB-HBM3, vLLM 0.21.0, fp16, Llama-3.1-8B-Instruct, workload `llm.inference.chatbot-short`, captured
2026-05-16: p50 TTFT / p50 TPOT (ms) 13.98 / 6.48 at concurrency 1, 22.75 / 6.59 at 4, 41.69 / 10.94 at 16,
86.92 / 46.91 at 64. The workload (yobitelcomm/bench: plugins/llm-inference/.../benchmarks/chatbot-short.yaml,
datasets.py, harness/.../drivers/closed_loop.py) is a closed loop of c Python threads over ten one-sentence
built-in prompts; the lengths are not recorded: we take 64 prompt tokens (one sentence in Llama-3.1's chat
template) and 128 output tokens (an envelope of the same suite at concurrency 1 gives total / TPOT = 128).
Ours: llama-3-8b (Llama-3.1-8B has the same shapes), h100-sxm with its measured profile, policy `vllm` (vLLM V1,
which vLLM 0.21 runs; async scheduling became its default with vLLM PR #27614, cited by vllm-project/vllm-gaudi
PR #768, before 0.21: the release is not verified) and the cost model's published host terms (`sim/host_time.py`, none taken from this sweep). The closed loop of c users is emulated by constant
arrivals at the rate at which Little's law puts c requests in flight (rate x mean E2E latency = c within 3%),
found by a damped fixed-point iteration from the single-request latency. Band: published +- 15%.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.validation.case import CheckResult

SOURCE = ("InferenceBench, 'Recipe: concurrency sweep' (yobitelcomm.github.io/bench/recipes/concurrency-sweep/), "
          "vLLM 0.21.0 on 1x H100-80GB-HBM3, 2026-05-16")
POLICY = "vllm"  # vLLM V1: the engine of vLLM 0.21
ENGINE = {"model": "llama-3-8b", "gpu": "h100-sxm", "cost_profile": "h100-sxm"}
PROMPT, OUTPUT = 64, 128  # assumed (see the docstring)
PUBLISHED = {1: (13.98, 6.48), 4: (22.75, 6.59), 16: (41.69, 10.94), 64: (86.92, 46.91)}  # c -> TTFT, TPOT ms
TOLERANCE = 0.15
QUICK_CONCURRENCY = (1,)
ITERATIONS = 8
IN_FLIGHT_TOLERANCE = 0.03
HOST_MISS = ("our TTFT is the engine's prefill step (about 7 ms, a 64-token prompt reads the weights once); the "
             "published one adds the request's path outside the engine core: the client's LiteLLM streaming call, the "
             "HTTP server, tokenization and detokenization, which the cost model has no term for (its host terms are "
             "per step, per scheduled request and per sampled token, and under V1's async scheduling they hide behind "
             "the device). Fix: a per-request front-end term from a published measurement of vLLM's API server "
             "(not from this sweep), or a sweep measured at the engine.")
DECODE_NOTE = ("in band: V1's host time per step (0.2-0.3 ms at these batches) hides behind the device step "
               "(about 7.3 ms: our eager-fitted device time, no CUDA-graph launch saving, against vLLM's replayed graphs).")
LOAD_MISS = ("under load the published TPOT grows far more than ours (10.9 ms at 16 and 46.9 ms at 64, where "
             "throughput falls below that at 16); our V1 host time at 16-64 requests (0.5-1.5 ms a step) stays hidden "
             "behind a weight-bound device step. The client is one Python thread per user streaming through LiteLLM, "
             "whose own per-chunk cost at 64 streams may be part of the figure (not verified). Fix: a sweep measured "
             "with vLLM's own benchmark client, or a published per-stream front-end cost.")


def closed_loop(concurrency: int, seed: int = 0) -> dict:
    """Median TTFT/TPOT (ms) with about `concurrency` requests in flight."""
    from traces import generate

    from analysis.validation.search import replay_metrics

    requests = max(32, 8 * concurrency)
    trace = generate(requests, rate=1.0, arrival="constant", lengths="fixed", input_len=PROMPT,
                     output_len=OUTPUT, seed=seed)
    single = replay_metrics(trace, 1.0 / 1e3, POLICY, seed, **ENGINE)  # one request at a time
    rate = concurrency / (single["mean_e2el_ms"] / 1e3)
    for _ in range(ITERATIONS):
        row = replay_metrics(trace, rate, POLICY, seed, **ENGINE)
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
                setting=f"Llama-3-8B / H100-SXM, profile h100-sxm, {POLICY} (host time on), {PROMPT} prompt / "
                        f"{OUTPUT} output tokens (assumed), {row['in_flight']:.1f} in flight at {row['rate']:.3g} req/s",
                metric=f"median {metric} (ms)", published=f"{published:g} ms",
                band_lo=published * (1 - TOLERANCE), band_hi=published * (1 + TOLERANCE), ours=float(ours),
                unit="ms", expect_pass=not miss, reason=miss or DECODE_NOTE))
    return checks
