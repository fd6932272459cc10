"""Sweep specs the engine rules refuse, and trace paths that lead nowhere: one line naming the key, before any
replay."""
from __future__ import annotations

from pathlib import Path

import pytest

from test_sweep import SPEC, run_cli, write_spec


@pytest.mark.parametrize("edit, where", [
    # vLLM V1 refuses a token budget below max_num_seqs: found when the spec is read, not mid-sweep
    (lambda s: s.replace('policy = ["vllm-v0", "sarathi"]', 'policy = ["sarathi", "vllm"]')
              .replace("max_num_seqs = [4, 16]", "max_num_seqs = [4, 16]\nmax_num_batched_tokens = [8]"),
     "spec.toml:11: grid.max_num_batched_tokens: configuration policy=vllm max_num_seqs=16 max_num_batched_tokens=8: "
     "max_num_batched_tokens: 8 is smaller than max_num_seqs 16; vLLM V1 refuses this"),
    # vLLM V0 refuses a token budget below max_model_len (it cannot chunk a prompt)
    (lambda s: s.replace("max_num_seqs = [4, 16]", "max_num_seqs = [4, 16]\nmax_num_batched_tokens = [4096]"),
     "spec.toml:11: grid.max_num_batched_tokens: configuration policy=vllm-v0 max_num_seqs=4 "
     "max_num_batched_tokens=4096: max_num_batched_tokens: 4096 is smaller than max_model_len 8192; vLLM V0 "
     "refuses this without chunked prefill (policy sarathi chunks prompts)"),
    # a grid over a setting no policy of the sweep reads would repeat one result per value
    (lambda s: s.replace("max_num_seqs = [4, 16]", "max_num_seqs = [4, 16]\nchunked_prefill_size = [64, 128]"),
     "spec.toml:11: grid.chunked_prefill_size: policy vllm-v0 ignores it (it uses max_num_batched_tokens instead); "
     "policy sarathi ignores it (it uses prefill_chunk_tokens instead): every value gives the same results; set it "
     "for a policy that reads it, or drop it"),
    (lambda s: s.replace("[trace.generate]\nnum_requests = 40\nrate = 1.0\nlengths = \"sharegpt\"",
                         '[trace]\npath = "missing.csv"'),
     "spec.toml:3: trace.path: no such file: {dir}/missing.csv (a relative path is relative to the spec file)"),
    (lambda s: s.replace("[trace.generate]\nnum_requests = 40\nrate = 1.0\nlengths = \"sharegpt\"",
                         '[trace]\npath = "."'),
     "spec.toml:3: trace.path: not a file: {dir} (a relative path is relative to the spec file)"),
    # sglang's lpm queue order is read by no other policy, and without a prefix cache it is fcfs
    (lambda s: s.replace("num_gpu_blocks = 300", 'num_gpu_blocks = 300\nschedule_policy = "lpm"'),
     "spec.toml:8: engine.schedule_policy: lpm is sglang's waiting-queue order; vllm-v0, sarathi would ignore it"),
    (lambda s: s.replace("num_gpu_blocks = 300", 'num_gpu_blocks = 300\nschedule_policy = "lpm"')
              .replace('policy = ["vllm-v0", "sarathi"]', 'policy = ["sglang"]'),
     "spec.toml:8: engine.schedule_policy: configuration policy=sglang max_num_seqs=4: schedule_policy: lpm orders "
     "the queue by cached prefix and needs the prefix cache (--enable-prefix-caching; without its radix cache "
     "SGLang serves fcfs)"),
])
def test_a_spec_the_engine_or_the_file_system_refuses_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  edit, where: str) -> None:
    spec = write_spec(tmp_path, edit(SPEC))
    code, out, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and out == ""
    assert err == f"pagedlab: error: {tmp_path}/{where.format(dir=tmp_path)}\n"
    assert not (tmp_path / "out").exists()


def test_fixed_loads_without_slos_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SPEC.split("[slo]")[0] + "[loads]\nrates = [1]\n")
    code, out, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"pagedlab: error: {spec}:1: slo: a sweep's capacity, even at fixed loads, needs at least "
                          "one SLO (ttft_ms, "), err
    assert not (tmp_path / "out").exists()


def test_a_setting_some_policies_ignore_is_a_warning_naming_them(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.sweep_spec_load import load_spec

    spec = write_spec(tmp_path, SPEC.replace("max_num_seqs = [4, 16]", "max_num_seqs = [4, 16]\n"
                                             "prefill_chunk_tokens = [64, 512]")
                      .replace("num_gpu_blocks = 300", "num_gpu_blocks = 300\nmax_output_tokens = 100"))
    assert load_spec(spec).warnings == [
        f"{spec}:12: grid.prefill_chunk_tokens: policy vllm-v0 ignores it (it uses max_num_batched_tokens (whole "
        "prompts, never chunked) instead): those configurations repeat each other",
        f"{spec}:8: engine.max_output_tokens: policy vllm-v0 ignores it (it has no such setting); policy sarathi "
        "ignores it (it has no such setting)",
    ]
    code, out, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 0 and err.splitlines()[0].startswith(f"pagedlab: warning: {spec}:12: grid.prefill_chunk_tokens: ")


@pytest.mark.parametrize("option, where", [
    ("burstiness = 0.5", "spec.toml:6: trace.generate.burstiness: would be ignored: it shapes gamma arrivals only: "
                         'add arrival = "gamma"'),
    ("input_len = 4000", 'spec.toml:6: trace.generate.input_len: would be ignored: lengths = "sharegpt" has its own '
                         "lengths; give lengths fixed, uniform or lognormal"),
    ("n = 8", "spec.toml:6: trace.generate.n: would be ignored: it is the width of parallel and beam requests: add "
              "parallel_fraction or beam_fraction"),
])
def test_a_generate_option_the_others_make_it_ignore_is_refused_as_trace_gen_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, where: str) -> None:
    spec = write_spec(tmp_path, SPEC.replace('lengths = "sharegpt"\n', f'lengths = "sharegpt"\n{option}\n'))
    code, out, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and out == ""
    assert err == f"pagedlab: error: {tmp_path}/{where}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bounds", [(0.0, 1.0, 0.1), (2.0, 1.0, 0.1), (0.5, 1.0, 0.0)])
def test_capacity_search_bounds_are_checked_where_they_are_made(bounds: tuple[float, float, float]) -> None:
    from analysis.sweep_spec import Search

    with pytest.raises(ValueError, match="search: needs 0 < low < high and precision > 0"):
        Search(*bounds)
