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


@pytest.fixture()
def profile_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of sim/profiles/ (default and h100-sxm) standing in for it, so a regression cannot damage the
    shipped files."""
    import shutil

    import sim.cost

    copy = tmp_path / "profiles"
    copy.mkdir()
    for name in ("default.json", "h100-sxm.json", "h100-sxm.csv"):
        shutil.copy(sim.cost.PROFILE_DIR / name, copy / name)
    monkeypatch.setattr(sim.cost, "PROFILE_DIR", copy)
    return copy


def test_calibrate_without_a_gpu_says_so_instead_of_fitting_on_the_cpu(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # It fell back to the CPU silently, then failed on host memory (or wrote a CPU fit under the GPU's name).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "p.json"
    assert cli.main(["calibrate", "--gpu-name", "h200", "--model", "tiny", "--quick", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("pagedlab: error: calibrate: needs a CUDA GPU (none is visible); pass "
                                       "--device cpu to fit on the CPU's Triton interpreter (slow, and not a GPU "
                                       "profile: give --out PATH)\n")
    assert not out.exists()


def test_calibrate_keeps_the_shipped_profile_unless_forced(profile_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # `calibrate --gpu-name h100-sxm` wrote over sim/profiles/h100-sxm.json and .csv.
    shipped = {p.name: p.read_bytes() for p in profile_dir.iterdir()}
    measured = tmp_path / "h100-measured.csv"
    measured.write_bytes(shipped["h100-sxm.csv"])
    prof = profile_dir / "h100-sxm.json"
    assert cli.main(["calibrate", "--gpu-name", "h100-sxm", "--from-csv", str(measured)]) == 2
    assert capsys.readouterr().err == (
        f"pagedlab: error: {prof}: out: would replace the h100-sxm profile that `--cost-profile h100-sxm` loads "
        "(the shipped ones were measured on real GPUs); give --out PATH to write elsewhere, or --force to replace it\n")
    assert {p.name: p.read_bytes() for p in profile_dir.iterdir()} == shipped
    assert cli.main(["calibrate", "--gpu-name", "h100-sxm", "--from-csv", str(measured), "--force"]) == 0
    assert "h100-sxm: 47 points on NVIDIA H100 80GB HBM3; fit median |error| 1.3%" in capsys.readouterr().out
    assert CostProfile.load("h100-sxm").name == "h100-sxm" and prof.read_bytes() != shipped["h100-sxm.json"]


@pytest.mark.parametrize("how", ["measured on the CPU", "read from a CPU measurement"])
def test_calibrate_refuses_a_cpu_fit_where_cost_profile_would_load_it(
        profile_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        how: str) -> None:
    # A CPU fit under sim/profiles/h100-sxm.json made a replay's TTFT p50 2444 s instead of 0.116 s; a new
    # name (h200 has no profile in this directory) is refused alike, before any measuring.
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # what --device cpu sets; undone after, for GPU tests
    shipped = {p.name: p.read_bytes() for p in profile_dir.iterdir()}
    if how == "measured on the CPU":
        extra = ["--model", "tiny", "--device", "cpu", "--quick"]
        what = "on the CPU (Triton interpreter) and with --quick"
    else:
        cpu_csv = tmp_path / "cpu.csv"
        cpu_csv.write_text(shipped["h100-sxm.csv"].decode().replace("NVIDIA H100 80GB HBM3",
                                                                    "CPU (Triton interpreter)"))
        extra, what = ["--from-csv", str(cpu_csv)], "on the CPU (Triton interpreter)"
    for name in ("h100-sxm", "h200"):
        assert cli.main(["calibrate", "--gpu-name", name, *extra]) == 2
        assert capsys.readouterr().err == (
            f"pagedlab: error: {profile_dir / name}.json: out: a fit measured {what} is a smoke test, not {name} "
            f"timings, yet `--cost-profile {name}` would load it from there; give --out PATH outside sim/profiles/, "
            "or --force\n")
    assert {p.name: p.read_bytes() for p in profile_dir.iterdir()} == shipped


def test_calibrate_keeps_an_existing_out_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    measured = tmp_path / "measured.csv"
    measured.write_bytes((Path(cli.__file__).parent / "profiles" / "h100-sxm.csv").read_bytes())
    out = tmp_path / "p.json"
    argv = ["calibrate", "--gpu-name", "h100-sxm", "--from-csv", str(measured), "--out", str(out)]
    assert cli.main(argv) == 0
    first = out.read_bytes()
    out.write_text("{}\n")  # someone's file: kept
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.endswith(f"error: {out}: out: exists; give --out PATH to write elsewhere, or "
                                            "--force to replace it\n")
    assert out.read_text() == "{}\n"
    out.unlink()  # the measurements CSV beside it is refused alike
    assert cli.main(argv) == 2 and f"{out.with_suffix('.csv')}: out: exists" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main([*argv, "--force"]) == 0 and out.read_bytes() == first
    # a refit in place reads its CSV and writes only the profile
    assert cli.main(["calibrate", "--gpu-name", "h100-sxm", "--from-csv", str(out.with_suffix(".csv")), "--out",
                     str(out), "--force"]) == 0


@pytest.mark.parametrize("name", ["h100-sxm", "h200"])
def test_shipped_profiles_are_measured(name: str) -> None:
    profile = CostProfile.load(name)
    assert profile.name == name and "Measured by `pagedlab calibrate` on NVIDIA" in profile.description
    assert profile != CostProfile.load("default")
