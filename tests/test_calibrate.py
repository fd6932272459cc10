"""`pagedlab calibrate`: the fit recovers known constants, the command writes a loadable profile, and the
shipped H100/H200 profiles load."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sim import cli
from sim.cost import CostProfile
from sim.execute.calibrate import fit_profile, full_grid, predict, rel_errors
from sim.presets import GPUS, MODELS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_fit_recovers_the_constants_that_made_the_times() -> None:
    model, gpu = MODELS["llama-3-8b"], GPUS["h100-sxm"]
    truth = CostProfile(gemm_compute_efficiency=0.62, gemm_memory_efficiency=0.78, attn_prefill_compute_efficiency=0.41,
                        attn_decode_memory_efficiency=0.85, step_overhead_s=0.0015, per_seq_overhead_s=4e-6)
    points = full_grid()
    measured = predict(points, truth, model, gpu, 16)
    fitted = fit_profile(points, list(measured), model, gpu, 16, CostProfile.load("default"))
    for name in ("gemm_compute_efficiency", "gemm_memory_efficiency", "attn_prefill_compute_efficiency",
                 "attn_decode_memory_efficiency", "step_overhead_s"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=0.02), name
    assert rel_errors(predict(points, fitted, model, gpu, 16), measured).max() < 0.01


def test_calibrate_writes_a_profile_and_refits_from_its_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prof.json"
    argv = ["calibrate", "--gpu-name", "h100-sxm", "--model", "tiny", "--device", DEVICE, "--quick", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "h100-sxm: 6 points" in capsys.readouterr().out
    profile = CostProfile.load(str(out))
    assert profile.name == "h100-sxm" and "Measured by `pagedlab calibrate`" in profile.description
    csv = out.with_suffix(".csv").read_text().splitlines()
    assert csv[0].startswith("kind,") and sum(line.startswith("step,") for line in csv) == 6
    again = tmp_path / "again.json"
    assert cli.main(["calibrate", "--gpu-name", "h100-sxm", "--model", "tiny", "--from-csv",
                     str(out.with_suffix(".csv")), "--out", str(again)]) == 0
    first, second = json.loads(out.read_text()), json.loads(again.read_text())
    assert {k: v for k, v in first.items() if k != "description"} == {k: v for k, v in second.items() if k != "description"}


def test_calibrate_refuses_a_model_the_device_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # llama-3-8b's fp32 weights on a 23 GiB host got the process killed, not refused.
    import sim.execute.device as device

    monkeypatch.setattr(device, "available_bytes", lambda dev: 4 * 2**30)
    out = tmp_path / "p.json"
    argv = ["calibrate", "--gpu-name", "h200", "--model", "llama-3-8b", "--device", DEVICE, "--quick", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pagedlab: error: execute backend: llama-3-8b needs ") and "4.0 GiB are free" in err
    assert err.count("\n") == 1 and not out.exists()


def test_bad_calibrate_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,prefill_chunks,decode_contexts,count,measured_s,predicted_s,device\nstep,1\n")
    assert cli.main(["calibrate", "--gpu-name", "h200", "--from-csv", str(bad), "--out", str(tmp_path / "p.json")]) == 2
    assert "bad.csv:2: expected 7 fields" in capsys.readouterr().err
    assert cli.main(["calibrate", "--gpu-name", "tpu", "--from-csv", str(bad)]) == 2
    assert "gpu: unknown name 'tpu'" in capsys.readouterr().err
    # where the profile cannot be written is said before any measuring (or reading)
    occupied = tmp_path / "file"
    occupied.write_text("x")
    assert cli.main(["calibrate", "--gpu-name", "h200", "--from-csv", str(bad), "--out",
                     str(occupied / "p.json")]) == 2
    assert capsys.readouterr().err == f"pagedlab: error: {occupied}: out: not a writable directory\n"
    assert cli.main(["calibrate", "--gpu-name", "h200", "--from-csv", str(bad), "--out",
                     str(occupied / "sub" / "p.json")]) == 2
    assert capsys.readouterr().err == (f"pagedlab: error: {occupied / 'sub'}: out: cannot be made (not a "
                                       "directory)\n")


@pytest.mark.parametrize("name", ["h100-sxm", "h200"])
def test_shipped_profiles_are_measured(name: str) -> None:
    profile = CostProfile.load(name)
    assert profile.name == name and "Measured by `pagedlab calibrate` on NVIDIA" in profile.description
    assert profile != CostProfile.load("default")
