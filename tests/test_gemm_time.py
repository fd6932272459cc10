"""The per-operator model: roofline asymptotes, monotonic in tokens, between max and sum of its lines, transfer
between GPUs by datasheet peaks and the published fraction of its datasheet bandwidth each card reaches, the fit
recovering known constants, and the shipped fitted constants."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.gemm_time import OpTimeModel
from sim.op_times import OPS, layer_op_times, layer_time, op_shapes
from sim.ops_fit import fit_gemm, fit_grid, load_grid, main as ops_fit_main
from sim.presets import GPUS, MODELS

MODEL = OpTimeModel(name="t", gemm_compute_efficiency=0.7, gemm_memory_efficiency=0.9, gemm_smoothness=4.0,
                    gemm_launch_s=5e-6, norm_memory_efficiency=0.7, norm_launch_s=4e-6,
                    pointwise_memory_efficiency=0.88, pointwise_launch_s=1e-6)
SHAPES = [(4096, 12288), (4096, 4096), (4096, 22016), (11008, 4096), (14336, 4096)]


@pytest.mark.parametrize("k,n", SHAPES)
def test_asymptotes_are_the_roofline_lines(k: int, n: int) -> None:
    gpu = GPUS["h100-sxm"]
    # Compute-bound: many tokens, the time minus the launch tends to 2 t k n / (peak e_c).
    big = 1 << 22
    compute = MODEL.gemm_compute_s(gpu, big, k, n)
    assert MODEL.gemm_s(gpu, big, k, n) - MODEL.gemm_launch_s == pytest.approx(compute, rel=2e-3)
    # Memory-bound: one token, the weights streamed once at e_m of the bandwidth.
    memory = MODEL.gemm_memory_s(gpu, 1, k, n)
    assert MODEL.gemm_s(gpu, 1, k, n) - MODEL.gemm_launch_s == pytest.approx(memory, rel=1e-3)
    # A very sharp transition is the plain roofline max(c, m).
    sharp = OpTimeModel(gemm_smoothness=400.0)
    for t in (1, 64, 256, 1024, 8192):
        line = max(sharp.gemm_compute_s(gpu, t, k, n), sharp.gemm_memory_s(gpu, t, k, n))
        assert sharp.gemm_s(gpu, t, k, n) == pytest.approx(line, rel=2e-3)


@pytest.mark.parametrize("k,n", SHAPES)
def test_gemm_time_rises_with_tokens_between_max_and_sum(k: int, n: int) -> None:
    gpu = GPUS["a100-80gb"]
    tokens = np.arange(1, 8193)
    times = np.array([MODEL.gemm_s(gpu, int(t), k, n) for t in tokens])
    assert (np.diff(times) > 0).all()
    c = np.array([MODEL.gemm_compute_s(gpu, int(t), k, n) for t in tokens])
    m = np.array([MODEL.gemm_memory_s(gpu, int(t), k, n) for t in tokens])
    assert (times - MODEL.gemm_launch_s >= np.maximum(c, m) * (1 - 1e-12)).all()
    assert (times - MODEL.gemm_launch_s <= (c + m) * (1 + 1e-12)).all()
    # p = 1 is the sum of the two lines; a smoother transition is never faster.
    summed = OpTimeModel(gemm_smoothness=1.0, gemm_compute_efficiency=0.7, gemm_memory_efficiency=0.9)
    assert summed.gemm_s(gpu, 300, k, n) == pytest.approx(summed.gemm_compute_s(gpu, 300, k, n)
                                                          + summed.gemm_memory_s(gpu, 300, k, n))
    smooth, sharp = OpTimeModel(gemm_smoothness=2.0), OpTimeModel(gemm_smoothness=8.0)
    assert smooth.gemm_s(gpu, 300, k, n) > sharp.gemm_s(gpu, 300, k, n)


def test_layer_sums_its_operators_and_transfers_by_datasheet() -> None:
    model = MODELS["llama-2-7b"]
    h100, a100 = GPUS["h100-sxm"], GPUS["a100-80gb"]
    ops = layer_op_times(model, h100, MODEL, 128)
    assert tuple(ops) == OPS and all(v > 0 for v in ops.values())
    assert layer_time(model, h100, MODEL, 128) == pytest.approx(sum(ops.values()))
    launches = sum({"gemm": MODEL.gemm_launch_s, "norm": MODEL.norm_launch_s,
                    "pointwise": MODEL.pointwise_launch_s}[kind] for kind, _, _ in op_shapes(model).values())
    # One token: everything but the launches is bandwidth-bound, so it scales with the datasheet bandwidth.
    ratio = (layer_time(model, a100, MODEL, 1) - launches) / (layer_time(model, h100, MODEL, 1) - launches)
    assert ratio == pytest.approx(h100.hbm_bandwidth / a100.hbm_bandwidth, rel=1e-3)
    # Many tokens: the GEMMs are compute-bound and scale with the datasheet peak FLOP/s.
    gemms = [op for op, (kind, _, _) in op_shapes(model).items() if kind == "gemm"]
    big = 1 << 20
    fa, fh = (layer_op_times(model, g, MODEL, big) for g in (a100, h100))
    assert sum(fa[o] for o in gemms) / sum(fh[o] for o in gemms) == pytest.approx(
        h100.peak_flops / a100.peak_flops, rel=0.01)
    with pytest.raises(ValueError, match="tokens"):
        layer_op_times(model, h100, MODEL, 0)


def test_memory_efficiencies_carry_by_the_published_bandwidth_fraction() -> None:
    from sim.hbm_measured import MEASURED, bandwidth_scale

    shipped = OpTimeModel.load("h200")
    h200, a100 = GPUS["h200"], GPUS["a100-80gb"]
    assert shipped.fitted_gpu == "h200" and shipped.carried_to(h200) is shipped
    carried = shipped.carried_to(a100)
    # The A100's HBM2e reaches a smaller fraction of its datasheet bandwidth than the H200's HBM3e.
    dot = (MEASURED["a100-80gb"].dot / a100.hbm_bandwidth) / (MEASURED["h200"].dot / h200.hbm_bandwidth)
    assert dot == pytest.approx(bandwidth_scale(a100, h200, "dot")) and 0.85 < dot < 0.95
    assert carried.gemm_memory_efficiency == pytest.approx(shipped.gemm_memory_efficiency * dot)
    assert carried.norm_memory_efficiency < shipped.norm_memory_efficiency
    assert carried.gemm_compute_efficiency == shipped.gemm_compute_efficiency
    assert carried.gemm_launch_s == shipped.gemm_launch_s
    # The layer model applies it: one token of one GEMM streams its weights at the carried efficiency.
    model = MODELS["llama-2-7b"]
    k, n = model.hidden_size, model.intermediate_size * 2
    assert layer_op_times(model, a100, shipped, 1)["mlp_up_proj"] == pytest.approx(carried.gemm_s(a100, 1, k, n))
    # No measurement for the card, or no fitted card: the datasheet alone carries the constants.
    assert shipped.carried_to(GPUS["a100-40gb"]) == shipped
    assert MODEL.carried_to(a100) is MODEL
    with pytest.raises(ValueError, match="kernel: unknown name 'triad'"):
        bandwidth_scale(a100, h200, "triad")


def test_bad_constants_name_the_field() -> None:
    with pytest.raises(ValueError, match="gemm_memory_efficiency"):
        OpTimeModel(gemm_memory_efficiency=1.5)
    with pytest.raises(ValueError, match="gemm_smoothness"):
        OpTimeModel(gemm_smoothness=0.5)
    with pytest.raises(ValueError, match="norm_launch_s"):
        OpTimeModel(norm_launch_s=-1.0)
    with pytest.raises(ValueError, match="valid names: h200"):
        OpTimeModel.load("tpu")
    with pytest.raises(ValueError, match="fitted_gpu: unknown name 'tpu'"):
        OpTimeModel(fitted_gpu="tpu")


def test_shipped_constants_are_fitted_on_our_grid() -> None:
    shipped = OpTimeModel.load("h200")
    assert "data/ops/ops-grid-h200.csv" in shipped.description and "NVIDIA H200" in shipped.description
    assert 1 < shipped.gemm_smoothness < 20 and 0 < shipped.gemm_launch_s < 20e-6
    grid = load_grid(Path(__file__).resolve().parents[1] / "data" / "ops" / "ops-grid-h200.csv")
    lin = grid[grid["kind"] == "linear"]
    gpu = GPUS["h200"]
    err = np.array([shipped.gemm_s(gpu, t, k, n) for t, k, n in zip(lin["tokens"], lin["k"], lin["n"])]) \
        / (lin["us"].to_numpy() * 1e-6) - 1
    assert np.median(np.abs(err)) < 0.06 and abs(np.median(err)) < 0.03


def _synthetic_grid(truth: OpTimeModel, gpu) -> pd.DataFrame:
    rows = []
    for k, n in SHAPES[:3]:
        for t in (1, 8, 32, 96, 192, 320, 512, 1024, 2048, 4096):
            rows.append(("linear", "g", t, k, n, truth.gemm_s(gpu, t, k, n) * 1e6))
    for t in (1, 64, 512, 4096):
        rows.append(("elementwise", "rms_norm", t, 4096, 0, truth.norm_s(gpu, 2 * t * 4096 * 2) * 1e6))
        rows.append(("elementwise", "add", t, 4096, 0, truth.pointwise_s(gpu, 3 * t * 4096 * 2) * 1e6))
    return pd.DataFrame(rows, columns=["kind", "op", "tokens", "k", "n", "us"])


def test_fit_recovers_the_constants_that_made_the_times() -> None:
    gpu = GPUS["h200"]
    grid = _synthetic_grid(MODEL, gpu)
    lin = grid[grid["kind"] == "linear"]
    ec, em, p, launch = fit_gemm(*(lin[c].to_numpy(float) for c in ("tokens", "k", "n")),
                                 lin["us"].to_numpy(float) * 1e-6, gpu, smoothness=(3.0, 4.0, 6.0),
                                 launch_us=np.arange(0.0, 8.01, 1.0))
    assert (ec, em, p) == (pytest.approx(0.7, abs=0.003), pytest.approx(0.9, abs=0.003), pytest.approx(4.0))
    assert launch == pytest.approx(5e-6, abs=0.1e-6)
    fitted = fit_grid(grid, gpu, "syn", "synthetic")
    assert fitted.norm_memory_efficiency == pytest.approx(0.7, abs=0.006)
    assert fitted.pointwise_launch_s == pytest.approx(1e-6, abs=0.06e-6)
    assert "median 0.0%" in fitted.description


def test_fit_command_writes_a_loadable_model_and_rejects_bad_grids(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.csv"
    _synthetic_grid(MODEL, GPUS["h200"]).to_csv(grid, index=False)
    # (the command's own coarse search over the full grid: a few seconds)
    out = tmp_path / "m.json"
    plot = tmp_path / "fit.png"
    assert ops_fit_main([str(grid), "--gpu", "h200", "--out", str(out), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = OpTimeModel.load(str(out))
    assert loaded.name == "m" and loaded.gemm_compute_efficiency == pytest.approx(0.7, abs=0.003)
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,op,tokens,k,n\nlinear,g,1,2,3\n")
    assert ops_fit_main([str(bad), "--gpu", "h200", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "missing column us" in err and len(err.strip().splitlines()) == 1
    assert ops_fit_main([str(grid), "--gpu", "tpu", "--out", str(tmp_path / "x.json")]) == 2
    assert "gpu: unknown name 'tpu'" in capsys.readouterr().err
