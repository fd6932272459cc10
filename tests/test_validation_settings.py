"""The published settings the sharing and Sarathi-Serve cases model: the artifact's TBT samples and engine
settings, and the identity behind the sharing case's reasons (a group of n saves (n-1)/n of what it shares)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.validation.sarathi import MAX_SEQ_LEN, SLOS, artifact_p99_tbt_ms, engine_settings


def test_artifact_tbt_counts_a_zero_per_first_token() -> None:
    # 98 short gaps and 2 stalls: the stalls are the top 2% of the gaps, so P99 lies between the two groups;
    # 100 zeros (first tokens) push the stalls into the top 1% and the P99 onto a stall.
    gaps = np.array([0.01] * 98 + [0.5, 0.5])
    without = artifact_p99_tbt_ms(gaps, 0)
    with_first = artifact_p99_tbt_ms(gaps, 100)
    assert without == pytest.approx(1000 * np.percentile(gaps, 99))
    assert with_first < without
    assert with_first == pytest.approx(1000 * np.percentile(np.concatenate([gaps, np.zeros(100)]), 99))


@pytest.mark.parametrize("name", sorted(MAX_SEQ_LEN))
@pytest.mark.parametrize("slo", sorted(SLOS))
def test_engine_follows_the_artifact_trace_config(name: str, slo: str) -> None:
    from sim import EngineConfig

    config = EngineConfig(**engine_settings(name, slo))
    # capacity_search/config/config.py: max_seq_len sets max_model_len and vLLM's max_batched_tokens.
    assert config.context_len == MAX_SEQ_LEN[name] and config.token_budget == MAX_SEQ_LEN[name]
    assert config.prefill_chunk_tokens == SLOS[slo][1] and config.max_num_seqs == 128


def _saved(n: int, prompt: int) -> float:
    from sim import EngineConfig, replay
    from traces import Trace

    frame = pd.DataFrame({"arrival_s": np.arange(8) * 0.5, "prompt_tokens": prompt, "output_tokens": 40,
                          "n": n, "sampling": "parallel"})
    trace = Trace.from_pandas(frame, source="fixed lengths")
    result = replay(trace, EngineConfig(model="opt-13b", gpu="a100-40gb"), policy="vllm-v0", seed=0)
    return result.summary["sharing_saved_fraction"]


def test_parallel_sampling_saves_n_minus_1_over_n_of_the_shared_prompt() -> None:
    # Whole prompt blocks (64 tokens = 4 blocks): the shared share S does not depend on n.
    shared = [_saved(n, 64) * n / (n - 1) for n in (2, 4, 6)]
    assert shared[0] > 0.3
    assert shared == pytest.approx([shared[0]] * 3, rel=0.03)
    # A prompt one token short of 4 blocks shares only its 3 full blocks: less is saved.
    assert _saved(4, 63) < _saved(4, 64)
