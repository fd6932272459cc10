"""Unsupported inputs fail with one clear ValueError; the bench CLI stays light and fails cleanly without a GPU."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from kernels import paged_decode, paged_decode_two_pass, paged_prefill

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def inputs(block_size=16, head_dim=64, q_heads=4, kv_heads=2, dtype=torch.float16, num_seqs=2):
    cache = torch.zeros((4, block_size, kv_heads, head_dim), dtype=dtype, device=DEVICE)
    q = torch.zeros((num_seqs, q_heads, head_dim), dtype=dtype, device=DEVICE)
    tables = torch.zeros((num_seqs, 2), dtype=torch.int32, device=DEVICE)
    lens = torch.ones(num_seqs, dtype=torch.int32, device=DEVICE)
    return q, cache, cache.clone(), tables, lens


@pytest.mark.parametrize("fn", [paged_decode, paged_decode_two_pass])
@pytest.mark.parametrize("kwargs,match", [
    (dict(block_size=12), "block_size: 12 not supported"),
    (dict(head_dim=48), "head_dim: 48 not supported"),
    (dict(dtype=torch.float64), "dtype"),
    (dict(q_heads=6, kv_heads=4), "multiple of num_kv_heads"),
])
def test_unsupported_shapes(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*inputs(**kwargs))


def test_mismatched_arguments():
    q, k, v, tables, lens = inputs()
    with pytest.raises(ValueError, match="q: dtype"):
        paged_decode(q.float(), k, v, tables, lens)
    with pytest.raises(ValueError, match="block_tables: dtype must be int32"):
        paged_decode(q, k, v, tables.long(), lens)
    with pytest.raises(ValueError, match="seq_lens: expected 2 rows"):
        paged_decode(q, k, v, tables, lens[:1])
    with pytest.raises(ValueError, match="v_cache: shape"):
        paged_decode(q, k, v[:, :8], tables, lens)
    with pytest.raises(ValueError, match="num_splits"):
        paged_decode(q, k, v, tables, lens, num_splits=0)
    with pytest.raises(ValueError, match="scale"):
        paged_decode(q, k, v, tables, lens, scale=-1.0)
    with pytest.raises(ValueError, match="out: expected"):
        paged_decode(q, k, v, tables, lens, out=torch.empty_like(q)[:1])
    with pytest.raises(ValueError, match="k_cache: expected"):
        paged_decode(q, k[0], v[0], tables, lens)
    with pytest.raises(ValueError, match="query_start_loc: expected 3 rows"):
        paged_prefill(q, k, v, tables, lens, torch.zeros(2, dtype=torch.int32, device=DEVICE))
    with pytest.raises(ValueError, match="v_cache: dtype/device differ"):
        paged_decode(q, k, v.float(), tables, lens)
    wide = torch.zeros((4, 16, 2, 128), dtype=k.dtype, device=DEVICE)
    with pytest.raises(ValueError, match="v_cache: strides differ"):
        paged_decode(q, k, wide[..., :64], tables, lens)
    with pytest.raises(ValueError, match="contiguous heads"):
        paged_decode(q, wide[..., :64], wide.clone()[..., :64], tables, lens)
    with pytest.raises(ValueError, match="q: the head_dim axis must be contiguous"):
        paged_decode(torch.zeros((2, 4, 128), dtype=q.dtype, device=DEVICE)[..., ::2], k, v, tables, lens)
    with pytest.raises(ValueError, match="block_tables: last axis must be contiguous"):
        paged_decode(q, k, v, torch.zeros((2, 4), dtype=torch.int32, device=DEVICE)[:, ::2], lens)
    with pytest.raises(ValueError, match="q: head_dim 64 differs from the cache's 128"):
        paged_decode(q, wide, wide.clone(), tables, lens)


def test_decode_output_is_contiguous_for_a_strided_query():
    q, k, v, tables, lens = inputs()
    q_t = q.transpose(0, 1).contiguous().transpose(0, 1)  # [seqs, heads, dim], heads outermost in memory
    assert not q_t.is_contiguous()
    out = paged_decode(q_t, k, v, tables, lens)
    assert out.is_contiguous() and out.shape == q.shape


def test_importing_the_cli_module_loads_neither_torch_nor_triton():
    code = "import sys, kernels.bench_cli, kernels; print('torch' in sys.modules, 'triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bench_without_gpu_is_a_one_line_error(capsys: pytest.CaptureFixture[str]):
    from sim import cli

    assert cli.main(["bench", "kernels", "--out", "unused"]) == 2
    assert capsys.readouterr().err.startswith("pagedlab: error: bench kernels: needs a CUDA GPU")


def _imported_modules(path: str) -> set[str]:
    """Every module a file imports, function-local and TYPE_CHECKING imports included."""
    import ast
    from pathlib import Path

    names: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_bench_and_sweep_share_a_helper_module_and_import_not_each_other():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "kernels"
    bench, sweep = _imported_modules(root / "bench.py"), _imported_modules(root / "bench_sweep.py")
    assert "kernels.bench_sweep" not in bench and "kernels.bench" not in sweep
    assert "kernels.bench_common" in bench and "kernels.bench_common" in sweep
    for path in root.glob("*.py"):  # nothing patches a kernel module's launch configuration
        assert "_launch_config =" not in path.read_text(), path.name


def test_sweep_prunes_configs_that_overflow_shared_memory():
    from kernels.bench_sweep import DECODE_TILES, prune_decode_configs, prune_prefill_configs
    from kernels.decode_config import DecodeConfig
    from kernels.prefill import PrefillConfig

    kept = prune_decode_configs([DecodeConfig(*c) for c in DECODE_TILES], 128, 2)
    assert DecodeConfig(64, 4, 3) in kept and DecodeConfig(128, 4, 5) in kept  # 2 buffers x 64 KiB
    assert prune_decode_configs([DecodeConfig(128, 4, 9)], 128, 2) == []  # 4 buffers x 64 KiB > 227 KiB
    assert len(prune_decode_configs([DecodeConfig(128, 4, 9)], 64, 2)) == 1  # fits at head dim 64
    assert prune_prefill_configs([PrefillConfig(128, 128, 8, 5), PrefillConfig(128, 128, 8, 9)], 128, 2) == [
        PrefillConfig(128, 128, 8, 5)]  # q 32 KiB + 4 x 64 KiB > 227 KiB
    with pytest.raises(ValueError, match="block_n"):
        DecodeConfig(48, 4, 3)


def test_bench_report_tables_from_rows():
    from kernels.bench_report import decode_table, markdown, plotted_methods, speedups

    def row(method, us, eager, kv_heads=8, **extra):
        return dict(kind="decode", num_seqs=1, context=1024, q_heads=32, kv_heads=kv_heads, method=method,
                    kv_dtype="bf16", us=us, eager_us=eager, gbs=1.0, pct_copy=2.0, tflops=float("nan"), splits=8,
                    rel_err=0.0, note="", **extra)

    rows = [row("one_pass", 10.0, 30.0), row("sdpa_cudnn", 20.0, 60.0), row("sdpa_flash", 5.0, 40.0),
            row("one_pass_fp8", 6.0, 25.0), row("one_pass", 10.0, 20.0, kv_heads=1),
            row("sdpa_cudnn", 40.0, 80.0, kv_heads=1)]
    graph = speedups(rows)
    assert graph["sdpa_cudnn"] == pytest.approx(2 * 2 ** 0.5)  # geomean of 2 and 4
    assert graph["sdpa_flash"] == pytest.approx(0.5)
    text = markdown(rows, dict(card="card", date="2026-12-02", torch="t", triton="x", copy_gbs=4000.0))
    assert "| 1 x 1024 (8) | 30.0 | 40.0 | 60.0 | n/a | 0.75 |" in text  # eager: 30 over min(40, 60)
    assert "L2 flushed by a 256 MiB read before each replay" in text  # the timer's method, in the report itself
    assert "| 1 x 1024 (8) | 10.0 | 6.0 | 0.60 | 2.0 | 0.0e+00 (0.0e+00) | n/a |" in text  # fp8 over bf16, errors
    prefill = [dict(kind="prefill", num_seqs=1, context=4096, method=m, us=88.0, eager_us=90.0, tflops=366.0,
                    rel_err=err, note="chunk 512") for m, err in (("paged_prefill", 2e-3), ("sdpa_flash", math.nan))]
    text = markdown(rows + prefill, dict(card="card", date="2026-12-02", torch="t", triton="x", copy_gbs=4000.0))
    assert "| 1 x 512 over 4096 | paged_prefill | 88.0 | 90.0 | 366.0 | 2.0e-03 | chunk 512 |" in text
    assert "| 1 x 512 over 4096 | sdpa_flash | 88.0 | 90.0 | 366.0 | n/a | chunk 512 |" in text
    assert "target" not in text
    assert text.startswith("Card: **card**, 2026-12-02")  # no identity: nothing between the name and the date
    skipped = row("flashinfer", math.nan, math.nan)
    skipped["gbs"] = math.nan
    assert plotted_methods(decode_table(rows + [skipped])) == ("one_pass", "one_pass_fp8", "sdpa_cudnn", "sdpa_flash")
    named = markdown(rows, dict(card="card", date="2026-12-02", torch="t", triton="x", copy_gbs=4000.0,
                                identity="serial 1653724058913, driver 580.1, SM clock max 1980 MHz"))
    assert named.startswith("Card: **card** (serial 1653724058913, driver 580.1, SM clock max 1980 MHz), 2026-12-02")


def test_bench_names_the_card_it_ran_on(monkeypatch):
    from kernels import bench_common

    calls = []

    def smi(args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout="1653724058913, 580.1, 1980 MHz\n", stderr="")

    monkeypatch.setattr(bench_common.subprocess, "run", smi)
    identity = bench_common.gpu_identity("ffc79498-8ff3-c2dc-3b0d-fafd804516ae")  # as torch prints a uuid
    assert identity == "serial 1653724058913, driver 580.1, SM clock max 1980 MHz"
    assert calls[0][1:3] == ["-i", "GPU-ffc79498-8ff3-c2dc-3b0d-fafd804516ae"]

    def missing(args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(bench_common.subprocess, "run", missing)
    assert bench_common.gpu_identity("GPU-x") == ""  # no nvidia-smi: the report simply omits it
    failing = lambda args, **kwargs: subprocess.CompletedProcess(args, 6, stdout="No devices were found\n", stderr="")
    monkeypatch.setattr(bench_common.subprocess, "run", failing)
    assert bench_common.gpu_identity("GPU-x") == ""
    assert bench_common.gpu_identity("") == ""  # a torch without device uuids


def test_bench_flags_outputs_off_the_float64_reference():
    from kernels.bench_common import MAX_REL_ERR, disagreement, rel_err

    exact = torch.randn(2, 4, 8, dtype=torch.float64)
    rounded = exact.to(torch.bfloat16)
    assert rel_err(rounded, exact) < 4e-3 and disagreement(rel_err(rounded, exact), "bf16") == ""
    swapped = exact.flip(1)  # right values, wrong heads
    assert "off the float64 reference" in disagreement(rel_err(swapped, exact), "bf16")
    assert disagreement(0.04, "fp8") == "" and disagreement(0.04, "bf16") != ""  # e4m3's rounding, not bf16's
    assert disagreement(float("nan"), "fp8") != "" and MAX_REL_ERR["bf16"] < MAX_REL_ERR["fp8"]
    with pytest.raises(ValueError, match="differs from the reference"):
        rel_err(exact[:, :, None], exact)  # would broadcast to a bogus error


def test_bench_rounds_interleave_methods(monkeypatch):
    from kernels import bench_common

    calls = []
    monkeypatch.setattr(bench_common, "time_us", lambda fn: (fn(), "graph"))
    monkeypatch.setattr(bench_common, "time_eager_us", lambda fn: 10 * fn())
    clock = iter(range(100))

    def runner(name):
        return lambda: calls.append(name) or float(next(clock))

    results = bench_common.interleaved_times([runner("a"), runner("b")], rounds=3)
    assert calls == ["a", "a", "b", "b"] * 3  # graph then eager of one method, then the next, round after round
    assert results[0] == ([0.0, 4.0, 8.0], [10.0, 50.0, 90.0], "graph")
    assert results[1] == ([2.0, 6.0, 10.0], [30.0, 70.0, 110.0], "graph")
    assert bench_common.median([3.0, 1.0, 2.0]) == 2.0 and bench_common.median([4.0, 1.0]) == 2.5


def test_l2_flush_reads_its_buffer_and_writes_nothing(monkeypatch):
    # a zeroing flush leaves dirty lines whose write-back the timed kernel pays for
    from kernels import bench_common

    monkeypatch.setattr(bench_common, "FLUSH_BYTES", 1 << 20)
    monkeypatch.setattr(bench_common, "_FLUSH", {})
    bench_common.flush_l2("cpu")
    buf = bench_common._FLUSH["cpu"]
    assert buf.numel() * buf.element_size() == 1 << 20
    buf.fill_(3.0)
    bench_common.flush_l2("cpu")
    assert bench_common._FLUSH["cpu"] is buf and torch.all(buf == 3.0)


def test_bench_rejects_zero_rounds(capsys):
    from kernels.bench import main

    assert main(["--rounds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kernels.bench: error: --rounds: must be >= 1, got 0"]


def tiny_bench_case(num_seqs: int, context: int, kv_heads: int, gen=None):
    """A stand-in for the benchmark's case (fp16, 32 query heads, head dim 128, blocks of 16) small enough for
    the interpreter; `gen` is ignored, the seed is fixed."""
    from kernels.bench_common import DecodeCase

    g = torch.Generator().manual_seed(0)
    blocks = num_seqs * context // 16
    k, v = (torch.randn(blocks, 16, kv_heads, 128, generator=g).half().to(DEVICE) for _ in range(2))
    tables = torch.randperm(blocks, generator=g).view(num_seqs, -1).int().to(DEVICE)
    lens = torch.full((num_seqs,), context, dtype=torch.int32, device=DEVICE)
    q = torch.randn(num_seqs, 32, 128, generator=g).half().to(DEVICE)
    return DecodeCase(q, k, v, tables, lens, context)


def test_bench_decode_checks_every_output_against_float64_attention(monkeypatch, capsys):
    # The benchmark's decode loop on tiny shapes with stand-in peers and timers: each output is compared with
    # float64 attention, a wrong one is flagged in its note, one of another shape is reported, not fatal.
    import types

    import torch.nn.functional as F

    from kernels import bench

    def peers(case, skip_flex, skip_flashinfer):
        args = (case.q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
        k, v = case.contiguous_kv()
        yield "one_pass", lambda: paged_decode(*args), ""
        yield "sdpa_flash", lambda: F.scaled_dot_product_attention(
            case.q.unsqueeze(2).float(), k.float(), v.float(), enable_gqa=True).squeeze(2), ""
        yield "gather_sdpa", lambda: paged_decode(*args).flip(1), "heads swapped"
        yield "flex_paged", lambda: paged_decode(*args)[:, None], ""
        yield "flashinfer", None, "failed: not installed"

    monkeypatch.setattr(bench, "DECODE_GRID", ((1, 64, 8), (2, 32, 1)))
    monkeypatch.setattr(bench, "make_decode_case", tiny_bench_case)
    monkeypatch.setattr(bench, "_decode_runners", peers)
    monkeypatch.setattr(bench, "interleaved_times", lambda runs, rounds: [([1.0], [2.0], "graph") for _ in runs])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(multi_processor_count=4))
    rows: list[dict] = []
    bench.bench_decode(rows, 4000.0, types.SimpleNamespace(skip_flex=False, skip_flashinfer=False, rounds=1), None,
                       lambda: None)
    by = {(r["num_seqs"], r["method"]): r for r in rows}
    assert len(rows) == 10 and capsys.readouterr().out.count("\n") == 10
    for seqs in (1, 2):
        assert by[seqs, "one_pass"]["rel_err"] < 4e-3 and by[seqs, "one_pass"]["note"] == ""
        assert by[seqs, "sdpa_flash"]["rel_err"] < 1e-5
        assert by[seqs, "gather_sdpa"]["note"].startswith("heads swapped; output off the float64 reference by")
        assert "differs from the reference's" in by[seqs, "flex_paged"]["note"]
        assert by[seqs, "flashinfer"]["note"] == "failed: not installed"


def test_bench_prefill_checks_causal_outputs_against_float64_attention(monkeypatch, capsys):
    # The prefill loop with stand-in peers and timers: causal outputs are compared with float64 attention (the
    # fp8 cache within its rounding), the unmasked SDPA one is not, a wrong one is flagged.
    import types

    from kernels import bench, bench_peers

    def wrong_peer(case, q, chunk):
        return (lambda: paged_prefill(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens,
                                      torch.arange(0, case.seq_lens.numel() + 1, device=q.device,
                                                   dtype=torch.int32) * chunk).flip(0)), "tokens reversed"

    monkeypatch.setattr(bench, "PREFILL_GRID", ((1, 16, 64), (2, 16, 32)))
    monkeypatch.setattr(bench, "make_decode_case", tiny_bench_case)
    monkeypatch.setattr(bench, "time_us", lambda run: (1.0, "graph"))
    monkeypatch.setattr(bench, "time_eager_us", lambda run: 2.0)
    monkeypatch.setattr(bench_peers, "make_sdpa_prefill", lambda q4, k, v: ((lambda: q4 * 0), ""))
    monkeypatch.setattr(bench_peers, "make_flashinfer_prefill", wrong_peer)
    rows: list[dict] = []
    bench.bench_prefill(rows, types.SimpleNamespace(skip_flashinfer=False), torch.Generator(DEVICE).manual_seed(0),
                        lambda: None)
    by = {(r["num_seqs"], r["method"]): r for r in rows}
    assert len(rows) == 8 and capsys.readouterr().out.count("\n") == 8
    for seqs in (1, 2):
        assert by[seqs, "paged_prefill"]["rel_err"] < 4e-3 and by[seqs, "paged_prefill"]["note"] == (
            "chunk 16; causal, bottom-right")
        assert 1e-2 < by[seqs, "paged_prefill_fp8"]["rel_err"] < 1e-1
        assert "off the float64" not in by[seqs, "paged_prefill_fp8"]["note"]
        assert by[seqs, "sdpa_flash"]["rel_err"] != by[seqs, "sdpa_flash"]["rel_err"]  # NaN: not compared
        assert by[seqs, "flashinfer"]["note"].startswith("chunk 16; tokens reversed; output off the float64")
