"""The execute backend on the CPU (Triton interpreter, `tiny` model): real kernels over a real paged KV
cache driven by the simulator's block manager, and the shadow check that compares every sequence's
attention output with float64 attention over its logical history.

What it shows: zero mismatches on a trace with beam search, parallel sampling and forced preemption
(recompute, swap, chunked prefill), and mismatches once a copy-on-write copy or a swap-in is skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sim import EngineConfig, cli, replay
from sim.execute import runner as runner_module
from sim.execute.lineage import Lineage, token_rows
from traces import Request, Trace

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def mixed_trace() -> Trace:
    """Ten requests at once: greedy, parallel samples and beams; short lengths for the interpreter."""
    spec = [(30, 12, 1, "greedy"), (45, 10, 3, "beam"), (20, 14, 2, "parallel"), (60, 8, 1, "greedy"),
            (25, 12, 3, "parallel"), (38, 9, 2, "beam"), (17, 15, 1, "greedy"), (50, 10, 1, "greedy"),
            (33, 11, 2, "parallel"), (28, 13, 1, "greedy")]
    return Trace([Request(f"r{i}", 0.0, p, o, n=n, sampling=s) for i, (p, o, n, s) in enumerate(spec)])


def small_trace() -> Trace:
    """A beam request, parallel samples and a greedy one; with 8 blocks vllm-swap swaps a family out."""
    return Trace([Request("a", 0.0, 20, 6, n=3, sampling="beam"), Request("b", 0.0, 27, 6, n=2, sampling="parallel"),
                  Request("c", 0.0, 40, 8)])


def execute(trace: Trace, policy: str, blocks: int, **kw):
    config = EngineConfig(model="tiny", num_gpu_blocks=blocks, backend="execute", device=DEVICE, verify=True, **kw)
    return replay(trace, config, policy=policy, seed=1)


@pytest.mark.parametrize("policy, blocks", [("vllm-v0", 16), ("sarathi", 12)])
def test_shadow_check_passes_beams_samples_and_forced_preemption(policy: str, blocks: int) -> None:
    result = execute(mixed_trace(), policy, blocks, prefill_chunk_tokens=64)
    s, req = result.summary, result.requests
    assert s["num_finished"] == 10 and s["num_rejected"] == 0
    assert s["preemptions"] > 0 and s["cow_copies"] > 0 and s["recomputed_tokens"] > 0
    assert ((req["preemptions"] > 0) & (req["n"] > 1)).any()  # a family recomputed: prompt + each sample's tokens
    assert s["verify_checked"] >= s["num_steps"]  # every step, every sequence in it
    assert s["verify_mismatches"] == 0, s["verify_first_mismatches"]
    assert s["fast_forward"] is False
    exec_steps = result.extra["exec_steps.csv"]
    assert len(exec_steps) == s["num_steps"] and (exec_steps["measured_s"] > 0).all()
    assert np.allclose(exec_steps["measured_s"].to_numpy(), result.steps["duration_s"].to_numpy(), rtol=1e-6, atol=1e-9)
    assert exec_steps["verify_checked"].sum() == s["verify_checked"]


def test_shadow_check_passes_swaps() -> None:
    s = execute(small_trace(), "vllm-swap", 8, watermark=0.0).summary
    assert s["swaps_out"] > 0 and s["swaps_in"] > 0 and s["cow_copies"] > 0
    assert s["verify_mismatches"] == 0, s["verify_first_mismatches"]


def test_shadow_check_passes_sglangs_chunks_allocated_one_by_one() -> None:
    # sglang (no prefix cache on this backend) prefills in chunks of 16, allocating each chunk's blocks when it
    # is scheduled: the beam request's first chunk holds one 16-token block, not its prompt's two; its beams
    # fork from the prefilled leader (copy-on-write).
    result = execute(small_trace(), "sglang", 10, chunked_prefill_size=16)
    s, steps = result.summary, result.steps
    assert s["num_finished"] == 3 and s["cow_copies"] > 0
    assert steps["num_prefill_tokens"].iloc[0] == 16 and steps["kv_blocks_used"].iloc[0] == 1
    assert s["verify_checked"] >= s["num_steps"] and s["verify_mismatches"] == 0, s["verify_first_mismatches"]


def _dropping(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    """Make the runner skip the first copy-on-write copy or swap-in it is given, as a bug would."""
    original = runner_module.StepRunner.run

    def run(self, inputs, cow, swap_in, capture=None):
        if which == "cow":
            cow = cow[1:]
        else:
            swap_in = swap_in[1:]
        return original(self, inputs, cow, swap_in, capture)

    monkeypatch.setattr(runner_module.StepRunner, "run", run)


@pytest.mark.parametrize("which", ["cow", "swap"])
def test_shadow_check_catches_a_skipped_copy(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    _dropping(monkeypatch, which)
    s = execute(small_trace(), "vllm-swap", 8, watermark=0.0).summary
    assert s["cow_copies"] > 0 and s["swaps_in"] > 0
    assert s["verify_mismatches"] > 0
    assert "exceeds the tolerance" in s["verify_first_mismatches"][0]


def test_replay_cli_execute_writes_measured_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.csv"
    Trace([Request(f"r{i}", 0.001 * i, 12 + 5 * i, 4) for i in range(3)]).to_csv(trace)
    out = tmp_path / "out"
    argv = ["replay", "--trace", str(trace), "--model", "tiny", "--backend", "execute", "--device", DEVICE,
            "--verify", "--verify-every", "2", "--num-gpu-blocks", "12", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 finished" in printed and "sequence-steps checked, 0 mismatches" in printed
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert summary["backend"] == "execute" and summary["verify_every"] == 2 and summary["verify_checked"] > 0
    assert config["cost_model"]["backend"] == "execute" and config["cost_model"]["predictions"]["backend"] == "analytic"
    assert (out / "exec_steps.csv").read_text().startswith("step,measured_s,predicted_s,")


def test_execute_options_need_the_execute_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.csv"
    Trace([Request("r0", 0.0, 10, 2)]).to_csv(trace)
    assert cli.main(["replay", "--trace", str(trace), "--verify", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pagedlab: error: --verify/--device: need --backend execute") and err.count("\n") == 1
    with pytest.raises(ValueError, match="need backend 'execute'"):
        EngineConfig(device="cpu")
    with pytest.raises(ValueError, match="verify_every: must be an integer >= 1"):
        EngineConfig(backend="execute", verify_every=0)


def test_lineage_names_tokens_by_who_produced_them() -> None:
    lineage = Lineage()
    lineage.root(1, request=7, prompt=5)
    lineage.fork(1, 2, at=5)       # a sample: shares the prompt only
    lineage.fork(2, 3, at=8)       # a beam forked from the sample after 3 own tokens
    lineage.free(2)                # the parent may go; the child keeps what it shares
    owners = lineage.owners(3, 10).tolist()
    assert owners == [-8] * 5 + [2] * 3 + [3] * 2
    assert lineage.owners(1, 7).tolist() == [-8] * 5 + [1] * 2
    rows = lineage.rows(3, 10)
    assert rows.tolist() == token_rows(np.array(owners), np.arange(10)).tolist()
    assert len(set(token_rows(np.arange(1000), np.zeros(1000, dtype=np.int64)).tolist())) > 800  # spread out
