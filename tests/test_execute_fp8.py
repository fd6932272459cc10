"""An fp8 (e4m3) KV cache in the simulator: `kv_cache_dtype="fp8"` halves block bytes (the pool doubles for a
bf16 model), the analytic model's attention reads half the bytes, and the execute backend runs the real
kernels over an fp8 cache whose shadow check compares against the dequantized history.

On the CPU (Triton interpreter) the cache is written by torch's quantization (`write_kv_ref`): the
interpreter rounds float32 to e4m3 wrongly (docs/kernels.md); attention reads the fp8 cache through the
Triton kernels either way. On a GPU `write_kv` itself quantizes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sim import EngineConfig, cli
from sim.cost import StepBatch, make_cost_model
from sim.execute import verify as verify_module
from traces import Request, Trace

from test_execute import DEVICE, execute, mixed_trace, small_trace


def test_fp8_shadow_check_passes_beams_samples_and_forced_preemption() -> None:
    result = execute(mixed_trace(), "vllm-v0", 16, kv_cache_dtype="fp8")
    s, req = result.summary, result.requests
    assert s["num_finished"] == 10 and s["num_rejected"] == 0
    assert s["preemptions"] > 0 and s["cow_copies"] > 0 and s["recomputed_tokens"] > 0
    assert (req["n"] > 1).sum() == 5 and set(req["sampling"]) == {"greedy", "beam", "parallel"}
    assert s["verify_checked"] >= s["num_steps"]
    assert s["verify_mismatches"] == 0, s["verify_first_mismatches"]
    assert result.config["cost_model"]["kv_cache_dtype"] == "float8_e4m3fn"


def test_fp8_shadow_check_passes_swaps() -> None:
    s = execute(small_trace(), "vllm-swap", 8, watermark=0.0, kv_cache_dtype="fp8").summary
    assert s["swaps_out"] > 0 and s["swaps_in"] > 0 and s["cow_copies"] > 0
    assert s["verify_mismatches"] == 0, s["verify_first_mismatches"]


def test_fp8_cache_really_holds_e4m3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the unquantized float64 history the same fp8 run fails: the cache is lossy, and the check
    passes above only because its reference is the dequantized history."""
    original = verify_module.ShadowCheck.__init__

    def undequantized(self, model, lineage, dtype, cache=None):
        original(self, model, lineage, dtype, None)

    monkeypatch.setattr(verify_module.ShadowCheck, "__init__", undequantized)
    s = execute(small_trace(), "vllm-v0", 8, kv_cache_dtype="fp8").summary
    assert s["verify_mismatches"] > 0


def test_fp8_doubles_the_pool_and_halves_block_bytes() -> None:
    for model, gpu in (("llama-3-8b", "h100-sxm"), ("qwen2.5-7b", "h200"), ("llama-3-70b-tp4", "h100-sxm")):
        auto = EngineConfig(model=model, gpu=gpu)
        fp8 = EngineConfig(model=model, gpu=gpu, kv_cache_dtype="fp8")
        assert fp8.block_bytes * 2 == auto.block_bytes
        assert fp8.kv_blocks in (2 * auto.kv_blocks, 2 * auto.kv_blocks + 1)
        assert fp8.cpu_blocks in (2 * auto.cpu_blocks, 2 * auto.cpu_blocks + 1)
        assert fp8.to_dict()["derived_kv_gib"] == pytest.approx(auto.to_dict()["derived_kv_gib"], rel=1e-3)
    # A fixed pool stays fixed: only its bytes halve.
    assert EngineConfig(num_gpu_blocks=100, kv_cache_dtype="fp8").kv_blocks == 100


def test_fp8_halves_decode_attention_bytes() -> None:
    auto = make_cost_model(EngineConfig(model="llama-3-8b", gpu="h200"))
    fp8 = make_cost_model(EngineConfig(model="llama-3-8b", gpu="h200", kv_cache_dtype="fp8"))
    base_a, slope_a = auto.decode_coefficients(64)
    base_f, slope_f = fp8.decode_coefficients(64)
    assert base_f == base_a and slope_f == pytest.approx(slope_a / 2)  # memory bound: half the bytes
    context = np.array([64 * 1024, 64 * 4096])
    assert (fp8.decode_times(64, context) < auto.decode_times(64, context)).all()
    step = StepBatch(decode_seqs=64, decode_context=64 * 4096, sampled_seqs=64)
    assert fp8.step_time(step) < auto.step_time(step)
    units_a = auto.unit_terms(StepBatch(decode_context=1000, prefill_kv_tokens=500, cow_copies=3, swap_blocks=2))
    units_f = fp8.unit_terms(StepBatch(decode_context=1000, prefill_kv_tokens=500, cow_copies=3, swap_blocks=2))
    for key in ("decode_memory", "prefill_memory", "copy", "swap"):
        assert units_f[key] == pytest.approx(units_a[key] / 2)
    assert units_f["decode_compute"] == units_a["decode_compute"]


@pytest.mark.parametrize("command", ["replay", "compare", "calibrate"])
def test_bad_kv_cache_dtype_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    trace = tmp_path / "trace.csv"
    Trace([Request("r0", 0.0, 10, 2), Request("r1", 0.1, 10, 2)]).to_csv(trace)
    argv = {"replay": ["replay", "--trace", str(trace), "--out", str(tmp_path / "o")],
            "compare": ["compare", "--trace", str(trace), "--policies", "vllm-v0", "--out", str(tmp_path / "o")],
            "calibrate": ["calibrate", "--gpu-name", "h200", "--out", str(tmp_path / "p.json")]}[command]
    assert cli.main(argv + ["--kv-cache-dtype", "fp16"]) == 2
    err = capsys.readouterr().err
    assert err == "pagedlab: error: kv_cache_dtype: unknown name 'fp16'; valid names: auto, fp8\n"
    with pytest.raises(ValueError, match="kv_cache_dtype: unknown name 'e5m2'"):
        EngineConfig(kv_cache_dtype="e5m2")


def test_replay_cli_fp8_execute_and_analytic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.csv"
    Trace([Request(f"r{i}", 0.001 * i, 12 + 5 * i, 4, n=2 if i == 1 else 1, sampling="beam" if i == 1 else "greedy")
           for i in range(3)]).to_csv(trace)
    out = tmp_path / "exec"
    argv = ["replay", "--trace", str(trace), "--model", "tiny", "--backend", "execute", "--device", DEVICE,
            "--verify", "--num-gpu-blocks", "12", "--kv-cache-dtype", "fp8", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "sequence-steps checked, 0 mismatches" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["kv_cache_dtype"] == "fp8" and config["cost_model"]["kv_cache_dtype"] == "float8_e4m3fn"
    assert config["cost_model"]["predictions"]["kv_cache_dtype"] == "fp8"
    blocks = {}
    for dtype in ("auto", "fp8"):
        out = tmp_path / dtype
        assert cli.main(["replay", "--trace", str(trace), "--kv-cache-dtype", dtype, "--quiet", "--out", str(out)]) == 0
        blocks[dtype] = json.loads((out / "config.json").read_text())["derived_num_gpu_blocks"]
    assert blocks["fp8"] in (2 * blocks["auto"], 2 * blocks["auto"] + 1)



def test_fp8_check_still_catches_a_skipped_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slack for ambiguous e4m3 roundings is small and local: a skipped copy-on-write copy still fails."""
    from test_execute import _dropping

    _dropping(monkeypatch, "cow")
    s = execute(small_trace(), "vllm-swap", 8, watermark=0.0, kv_cache_dtype="fp8").summary
    assert s["cow_copies"] > 0 and s["verify_mismatches"] > 0


def test_fp8_ambiguous_roundings_are_rare_on_fp32() -> None:
    from sim.execute.lineage import Lineage
    from sim.execute.runner import StepRunner
    from sim.execute.model import ModelShapes
    from sim.presets import MODELS

    runner = StepRunner(ModelShapes.of(MODELS["tiny"]), 4, 0, 16, torch.float32, torch.device("cpu"), 0,
                        poison=False, kv_dtype=torch.float8_e4m3fn)
    check = verify_module.ShadowCheck(runner.model, Lineage(), torch.float32, runner.cache)
    k, v = check._tables()
    assert (k.abs() <= 448).all() and k.unique().numel() < 256  # e4m3 values (scale 1.0)
    amb = torch.cat([check._k_amb.flatten(), check._v_amb.flatten()])
    assert 0 < (amb > 0).sum() < 1e-4 * amb.numel()
