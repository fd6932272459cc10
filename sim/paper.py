"""The PagedAttention paper's memory result, reproduced in spirit: `python -m sim.paper [--requests N]`.

Setting of the paper (Kwon et al., SOSP 2023, Sec. 6): OPT-13B on one A100-40GB, ShareGPT-like
lengths, 2048-token context. Two figures:
  - KV memory holding tokens of `vllm-v0` against the reservation baselines (`orca-max`, `orca-pow2`,
    `orca-oracle`: contiguous buddy-allocated buffers, `sim.kv_contiguous`; `static`). Fig. 2 splits the whole
    KV memory (its shares sum to 100%): token states 96.3% for vLLM, 20.4% / 26.8% / 38.2% for Orca Max /
    Pow2 / Oracle, the rest reservation, internal and external fragmentation. Ours: `token_share_saturated`
    (slots holding tokens over the pool's slots, time-weighted over the steps where a request waits, i.e.
    the memory is what limits the batch); `slot_utilization` (tokens over slots reserved) ignores the
    pool's unusable free ranges and is kept as a diagnostic.
  - Memory saved by sharing (blocks with sharing vs. without) for parallel sampling and beam search of
    width 4 (Fig. 15: 6-30% for parallel sampling, 37-66% for beam search).
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from sim.config import EngineConfig
from sim.simulate import replay
from traces.options import seed_arg

PAPER_SETTING = {"model": "opt-13b", "gpu": "a100-40gb"}


def token_share_saturated(steps: pd.DataFrame, pool_slots: int) -> float:
    """Slots holding tokens over the pool's slots, time-weighted over the steps with a request waiting."""
    waiting = steps["num_waiting"].to_numpy() > 0
    dur = steps["duration_s"].to_numpy(dtype=float)[waiting]
    if not waiting.any() or dur.sum() <= 0:
        return float("nan")
    return float(np.average(steps["kv_tokens"].to_numpy(dtype=float)[waiting], weights=dur) / pool_slots)


def utilization_table(num_requests: int = 1000, rate: float = 5.0, seed: int = 0) -> pd.DataFrame:
    """Slot utilization per policy on one ShareGPT-like trace (rate high enough to fill the pool)."""
    from traces import generate

    trace = generate(num_requests, rate=rate, lengths="sharegpt", seed=seed)
    rows = []
    config = EngineConfig(**PAPER_SETTING)
    for policy in ("vllm-v0", "orca-oracle", "orca-pow2", "orca-max", "static"):
        result = replay(trace, config, policy=policy, seed=seed)
        s = result.summary
        rows.append({"policy": policy,
                     "token_share_saturated": token_share_saturated(result.steps, config.kv_blocks * config.block_size),
                     "slot_utilization": s["slot_utilization"], "kv_usage_mean": s["kv_usage_mean"],
                     "mean_batch_size": s["mean_batch_size"], "preemptions": s["preemptions"],
                     "finished": s["num_finished"], "rejected": s["num_rejected"],
                     "output_tokens_per_s": s["output_tokens_per_s"]})
    return pd.DataFrame(rows)


def sharing_table(num_requests: int = 200, rate: float = 2.0, seed: int = 0, width: int = 4) -> pd.DataFrame:
    """Memory saved by block sharing for parallel sampling and beam search of `width`, per dataset."""
    from traces import generate

    rows = []
    for lengths in ("sharegpt", "alpaca"):
        for mode, fraction in (("parallel", "parallel_fraction"), ("beam", "beam_fraction")):
            trace = generate(num_requests, rate=rate, lengths=lengths, seed=seed, n=width, **{fraction: 1.0})
            s = replay(trace, EngineConfig(**PAPER_SETTING), policy="vllm-v0", seed=seed).summary
            rows.append({"lengths": lengths, "sampling": mode, "n": width,
                         "sharing_saved_fraction": s["sharing_saved_fraction"], "cow_copies": s["cow_copies"],
                         "slot_utilization": s["slot_utilization"], "finished": s["num_finished"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.paper", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests of the utilization trace")
    parser.add_argument("--sharing-requests", type=int, default=200, help="requests of each sharing trace")
    parser.add_argument("--seed", type=seed_arg, default=0)
    args = parser.parse_args(argv)
    pd.set_option("display.width", 160)
    print(f"KV memory holding tokens, OPT-13B / A100-40GB, ShareGPT-like, {args.requests} requests at 5 req/s:")
    print(utilization_table(args.requests, seed=args.seed).to_string(index=False, float_format="%.3f"))
    print(f"\nMemory saved by sharing, width 4, {args.sharing_requests} requests at 2 req/s:")
    print(sharing_table(args.sharing_requests, seed=args.seed).to_string(index=False, float_format="%.3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
