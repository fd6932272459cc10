"""Execute-backend pieces that need no kernels: the decode split heuristic, the memory check, fidelity."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sim.execute.device import check_fits
from sim.execute.fidelity import latency_errors, step_errors
from kernels import FP8_DTYPE
from kernels.decode_launch import plan
from sim.execute.model import ModelShapes, balanced_num_splits
from sim.execute.runner import StepRunner, decode_launch_config
from sim.presets import GIB, MODELS


def test_balanced_splits_break_up_the_longest_sequence() -> None:
    # 38 sequences, one of 8000 tokens: filling the GPU alone gives 1 split; balance asks for 4.
    assert balanced_num_splits([8000] + [2000] * 37, 8, 132, 64) == 4
    assert balanced_num_splits([4096] * 32, 8, 132, 64) == 2      # uniform: as the kernel's own heuristic
    assert balanced_num_splits([8192], 8, 132, 128) == 64         # one long sequence: capped at MAX_SPLITS
    assert balanced_num_splits([100] * 4, 8, 132, 64) == 1        # too short to split


@pytest.mark.parametrize("block_n, splits", [(64, 16), (128, 12)])
def test_balanced_splits_leave_no_split_of_the_longest_sequence_empty(block_n: int, splits: int) -> None:
    # 3008 tokens ask for 23 splits; in whole tiles of block_n (as the kernel divides) the last ones would be empty
    assert balanced_num_splits([3008, 500], 8, 132, block_n) == splits
    tokens_per_split = math.ceil(math.ceil(3008 / splits) / block_n) * block_n  # whole tiles, as the kernel
    assert (splits - 1) * tokens_per_split < 3008 <= splits * tokens_per_split


@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, FP8_DTYPE], ids=str)
def test_runner_cuts_splits_with_the_tile_an_explicit_split_count_launches(kv_dtype: torch.dtype) -> None:
    shapes, elem = ModelShapes.of(MODELS["llama-3-8b"]), kv_dtype.itemsize
    for device in (torch.device("cpu"), torch.device("cuda")):  # planning a GPU launch needs no GPU
        launched = plan(8, shapes.num_q_heads, shapes.num_kv_heads, shapes.head_dim, 16, 4096, torch.bfloat16,
                        elem == 1, elem, device, 8, None).meta["BLOCK_N"]
        assert decode_launch_config(shapes, device, torch.bfloat16, kv_dtype).block_n == launched
    runner = StepRunner(ModelShapes.of(MODELS["tiny"]), 4, 0, 16, torch.bfloat16, torch.device("cpu"), 0,
                        poison=False, kv_dtype=kv_dtype)
    assert runner.decode_config == decode_launch_config(runner.shapes, torch.device("cpu"), torch.bfloat16, kv_dtype)


def test_a_model_that_does_not_fit_says_so_and_suggests_a_smaller_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (20 * GIB, 80 * GIB))
    with pytest.raises(ValueError) as info:
        check_fits("llama-3-70b-tp4", 35 * GIB, 10 * GIB, 0, torch.device("cuda"))
    message = str(info.value)
    assert "needs 47.0 GiB on the GPU" in message and "20.0 GiB are free" in message
    assert "smaller model (mistral-7b, llama-2-7b" in message and "\n" not in message  # the largest that fits comes first
    with pytest.raises(ValueError, match="fewer KV blocks"):
        check_fits("llama-3-8b", 15 * GIB, 10 * GIB, 0, torch.device("cuda"))
    check_fits("llama-3-8b", 15 * GIB, 2 * GIB, 0, torch.device("cuda"))  # fits: no error


def test_fidelity_errors_are_relative_to_the_measurement() -> None:
    steps = pd.DataFrame({"measured_s": [1.0, 2.0, 4.0], "predicted_s": [1.1, 2.0, 3.0],
                          "prefill_tokens": [0, 0, 100]})
    out = step_errors(steps)
    assert out["step_median_abs_rel_err"] == pytest.approx(0.1)
    assert out["busy_time_rel_err"] == pytest.approx(6.1 / 7 - 1)
    assert out["prefill_step_median_abs_rel_err"] == pytest.approx(0.25)
    measured = pd.DataFrame({"status": "finished", "e2e_s": np.arange(1.0, 101.0), "ttft_s": 0.5})
    predicted = measured.assign(e2e_s=measured["e2e_s"] * 0.9)
    lat = latency_errors(measured, predicted)
    assert lat["e2e_p50_rel_err"] == pytest.approx(-0.1) and lat["e2e_p99_rel_err"] == pytest.approx(-0.1)
    assert lat["ttft_p50_rel_err"] == pytest.approx(0.0)


def test_a_model_too_large_for_host_memory_is_refused_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # On the CPU nothing stopped the allocation: a 70B model's random weights got the process killed.
    import sim.execute.device as device

    monkeypatch.setattr(device, "available_bytes", lambda dev: 20 * GIB)
    with pytest.raises(ValueError) as info:
        check_fits("llama-3-70b-tp4", 70 * GIB, 1 * GIB, 0, torch.device("cpu"))
    message = str(info.value)
    assert "needs 73.0 GiB of host memory (--device cpu)" in message and "20.0 GiB are free" in message
    assert "smaller model (" in message and "\n" not in message
    check_fits("tiny", GIB // 100, GIB // 100, 0, torch.device("cpu"))  # fits: no error


def test_fidelity_says_when_the_analytic_replay_added_host_time(tmp_path: Path) -> None:
    from sim import cli
    from sim.execute.fidelity import host_time_note

    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,3\n0.1,12,2\n")
    for name, extra in (("v0", []), ("device", ["--host-engine", "device-only"])):
        assert cli.main(["replay", "--trace", str(trace), "--policy", "vllm-v0", *extra, "--quiet",
                         "--out", str(tmp_path / name)]) == 0
    assert "host_step_s 0.004" in host_time_note(tmp_path / "v0") and "--host-engine device-only" in \
        host_time_note(tmp_path / "v0")
    assert host_time_note(tmp_path / "device") is None
