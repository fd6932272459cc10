"""`pagedlab sweep`: spec errors, the bisection against a full grid, capacity search end to end, resume."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.capacity import capacity_of
from analysis.sweep_search import Bisection, FixedLoads, grid_scales
from analysis.sweep_spec import Search

SPEC = """\
seed = 3
[trace.generate]
num_requests = 40
rate = 1.0
lengths = "sharegpt"
[engine]
num_gpu_blocks = 300
[grid]
policy = ["vllm-v0", "sarathi"]
max_num_seqs = [4, 16]
[slo]
ttft_ms = 1000
tpot_ms = 60
[search]
low = 0.5
high = 12
precision = 0.5
"""
# Everything a sweep writes but the manifest (executor, timings) is a function of the spec alone.
RESULT_FILES = ("spec.json", "summary.csv", "probes.csv", "report.md", "report.html", "plots/pareto.png",
                *(f"configs/{i:04d}.json" for i in range(4)))


def write_spec(tmp_path: Path, text: str = SPEC, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from sim import cli

    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def results(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in RESULT_FILES}


# ---- the search ------------------------------------------------------------------------------------------

def test_grid_scales_walk_low_to_high_in_precision_steps() -> None:
    assert grid_scales(Search(0.5, 2.0, 0.5)) == [0.5, 1.0, 1.5, 2.0]
    assert grid_scales(Search(0.1, 0.35, 0.1)) == [0.1, 0.2, 0.3, 0.35]  # the last step is shorter
    assert grid_scales(Search(0.1, 0.7, 0.1))[-1] == 0.7  # no float noise such as 0.7000000000000001


@pytest.mark.parametrize("threshold", [0.1, 0.5, 0.55, 1.0, 3.3, 7.9, 8.0, 9.0])
def test_bisection_finds_the_full_grid_capacity_in_few_replays(threshold: float) -> None:
    """Attainment falling with load: the bisection's capacity is the full grid's, from ~log2 probes."""
    search = Search(0.5, 8.0, 0.25)
    full = grid_scales(search)

    def attainment(scale: float) -> float:
        return 0.95 if scale <= threshold else 0.5

    walk = Bisection(search, 0.9)
    while not walk.done:
        ready = walk.take_ready()
        assert ready, "an unfinished search has something to probe"
        for scale in ready:
            assert scale in full
            walk.record(scale, attainment(scale))
    expected = capacity_of(full, [attainment(s) for s in full], 0.9)
    assert walk.capacity_scale == expected or (pd.isna(expected) and pd.isna(walk.capacity_scale))
    assert len(walk.attainment) <= Bisection.max_replays(search) == 2 + 5  # 30 steps: 5 halvings
    assert walk.lower_bound == (threshold >= 8.0)


def test_fixed_loads_probe_every_scale_at_once() -> None:
    walk = FixedLoads([1.0, 2.0, 4.0], 0.9)
    assert walk.take_ready() == [1.0, 2.0, 4.0] and walk.take_ready() == []
    for scale, attainment in ((4.0, 0.95), (1.0, 0.95), (2.0, 0.2)):
        assert not walk.done
        walk.record(scale, attainment)
    assert walk.done and walk.capacity_scale == 1.0  # a pass above a failure is not capacity


def test_the_driver_replays_a_task_s_probes_through_its_own_walk() -> None:
    """A task's probes are fed through the driver's walk; a missing or an extra probe is caught."""
    from analysis.sweep import finish_walk

    search = Search(0.5, 4.0, 0.5)
    probed = {0.5: 0.95, 4.0: 0.2, 2.0: 0.95, 3.0: 0.5, 2.5: 0.95}  # what a bisection walks with capacity 2.5
    walk = finish_walk(Bisection(search, 0.9), probed)
    assert walk.done and walk.capacity_scale == 2.5
    with pytest.raises(AssertionError, match="did not probe the scales"):
        finish_walk(Bisection(search, 0.9), {k: v for k, v in probed.items() if k != 3.0})
    with pytest.raises(AssertionError, match="never asked for"):
        finish_walk(Bisection(search, 0.9), {**probed, 1.0: 0.95})


# ---- bad specs: one line naming the key, exit 2 ----------------------------------------------------------

@pytest.mark.parametrize("edit, where", [
    (lambda s: s.replace("seed = 3", "seed = 3\ncolour = 1"), "spec.toml:2: colour: unknown key"),
    (lambda s: s.replace("max_num_seqs = [4, 16]", "max_num_seq = [4, 16]"), "spec.toml:10: grid.max_num_seq: unknown key"),
    (lambda s: s.replace('policy = ["vllm-v0", "sarathi"]\nmax_num_seqs = [4, 16]\n', ""), "spec.toml:8: grid: empty"),
    (lambda s: s.replace("max_num_seqs = [4, 16]", "max_num_seqs = []"), "spec.toml:10: grid.max_num_seqs: must be a non-empty list"),
    (lambda s: s.replace("ttft_ms = 1000", "ttft_ms = -5"), "spec.toml:12: slo.ttft_ms: must be a positive number"),
    (lambda s: s.replace("tpot_ms = 60", "tpot_ms = 60\nattainment = 1.5"), "spec.toml:14: slo.attainment: must be a share"),
    (lambda s: s.replace("ttft_ms = 1000\ntpot_ms = 60\n", ""), "spec.toml:11: slo: capacity search needs at least one SLO"),
    (lambda s: s.replace("high = 12", "high = 0.25"), "spec.toml:16: search.high: must be above search.low"),
    (lambda s: s.replace("max_num_seqs = [4, 16]", "block_size = [16, 0]"), "spec.toml:10: grid.block_size: configuration policy=vllm-v0 block_size=0: block_size: must be an integer >= 1"),
    (lambda s: s.replace('"sarathi"]', '"sarathy"]'), "spec.toml:9: grid.policy: unknown policy 'sarathy'"),
    (lambda s: s.replace("lengths =", "length ="), "spec.toml:5: trace.generate.length: unknown key"),
    (lambda s: s.replace("num_requests = 40", 'num_requests = "forty"'), "spec.toml:3: trace.generate.num_requests: must be a number"),
    (lambda s: s.replace('lengths = "sharegpt"', 'lengths = "sharegtp"'), "spec.toml:5: trace.generate.lengths:"),
    (lambda s: s.replace("[search]", "[loads]\nrates = [1]\n[search]"), "spec.toml:16: search: give [search] (capacity search) or [loads]"),
])
def test_a_bad_spec_is_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, where) -> None:
    spec = write_spec(tmp_path, edit(SPEC))
    code, out, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"pagedlab: error: {tmp_path / where.split(':')[0]}:"), err
    assert where.split(":", 1)[1] in err, err
    assert not (tmp_path / "out").exists()  # nothing started


def test_toml_syntax_errors_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SPEC.replace("rate = 1.0", "rate = = 1.0"))
    code, _, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.startswith(f"pagedlab: error: {spec}:4: toml: ") and err.count("\n") == 1


# ---- end to end -----------------------------------------------------------------------------------------

def test_sweep_searches_the_capacity_of_every_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Four configurations, jobs 1 (in process) and 2 (worker processes): byte-identical results; the capacity
    is the one a full grid of the same precision gives (the grid's points run as fixed loads)."""
    spec = write_spec(tmp_path)
    code, stdout, _ = run_cli(["sweep", str(spec), "--out", str(tmp_path / "a"), "--jobs", "1", "--quiet"], capsys)
    assert code == 0 and "4 configurations" in stdout
    summary = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert list(summary[["policy", "max_num_seqs"]].itertuples(index=False, name=None)) == [
        ("vllm-v0", 4), ("vllm-v0", 16), ("sarathi", 4), ("sarathi", 16)]
    assert summary["capacity"].notna().all() and summary["capacity"].nunique() > 1
    assert (summary["replays"] <= Bisection.max_replays(Search(0.5, 12, 0.5))).all()
    assert (summary["slo_attainment@capacity"] >= 0.9).all()
    page = (tmp_path / "a" / "report.html").read_text()
    assert "data:image/png;base64," in page and "Pareto front" in page

    code, *_ = run_cli(["sweep", str(spec), "--out", str(tmp_path / "b"), "--jobs", "2", "--quiet"], capsys)
    assert code == 0 and results(tmp_path / "a") == results(tmp_path / "b")

    scales = ", ".join(f"{s:g}" for s in grid_scales(Search(0.5, 12, 0.5)))
    full = write_spec(tmp_path, SPEC.split("[search]")[0] + f"[loads]\nrate_scales = [{scales}]\n", "full.toml")
    code, *_ = run_cli(["sweep", str(full), "--out", str(tmp_path / "full"), "--jobs", "2", "--quiet"], capsys)
    grid = pd.read_csv(tmp_path / "full" / "summary.csv")
    assert code == 0 and (grid["replays"] == 24).all()
    pd.testing.assert_series_equal(grid["capacity_scale"], summary["capacity_scale"])


def test_a_capacity_search_is_one_task_per_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Each configuration's whole bisection runs in one task (its probes are sequential anyway)."""
    import analysis.sweep as sweep

    tasks: list[tuple[int, list[float]]] = []
    real = sweep.run_config
    monkeypatch.setattr(sweep, "run_config", lambda trace, task: tasks.append((task.index, sorted(
        result := real(trace, task)))) or result)
    code, *_ = run_cli(["sweep", str(write_spec(tmp_path)), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet"],
                       capsys)
    assert code == 0 and [index for index, _ in tasks] == [0, 1, 2, 3]
    probes = pd.read_csv(tmp_path / "out" / "probes.csv")
    for index, scales in tasks:
        assert scales == sorted(probes.loc[probes["config"] == index, "rate_scale"])
    assert max(len(scales) for _, scales in tasks) > 2  # a bisection went past both ends inside its task


def test_resume_after_an_interrupted_sweep_skips_finished_configurations(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import analysis.sweep_task as sweep_task

    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    real = sweep_task.run_probe
    calls: list[tuple[int, float]] = []

    def interrupted_after_12(trace, probe):  # configuration 0 has finished by then (its 6th probe is the 11th)
        if len(calls) == 12:
            raise KeyboardInterrupt
        calls.append((probe.index, probe.scale))
        return real(trace, probe)

    monkeypatch.setattr(sweep_task, "run_probe", interrupted_after_12)
    code, _, err = run_cli(["sweep", str(spec), "--out", str(out), "--jobs", "1", "--quiet"], capsys)
    assert code == 130 and "interrupted" in err
    finished = sorted(p.name for p in (out / "configs").iterdir())
    assert finished and len(finished) < 4 and not (out / "summary.csv").exists()
    first_run = {index for index, _ in calls}

    code, _, err = run_cli(["sweep", str(spec), "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "already holds a sweep; add --resume" in err  # never overwritten by accident

    calls.clear()
    monkeypatch.setattr(sweep_task, "run_probe", lambda trace, probe: calls.append((probe.index, probe.scale)) or real(trace, probe))
    code, stdout, _ = run_cli(["sweep", str(spec), "--out", str(out), "--jobs", "1", "--resume", "--quiet"], capsys)
    assert code == 0 and f"{4 - len(finished)} configurations, {len(finished)} already done" in stdout
    resumed = {index for index, _ in calls}
    assert resumed.isdisjoint({int(name[:4]) for name in finished}) and resumed | first_run == {0, 1, 2, 3}

    code, *_ = run_cli(["sweep", str(spec), "--out", str(tmp_path / "clean"), "--jobs", "1", "--quiet"], capsys)
    assert code == 0 and results(out) == results(tmp_path / "clean")

    changed = write_spec(tmp_path, SPEC.replace("seed = 3", "seed = 4"), "changed.toml")
    code, _, err = run_cli(["sweep", str(changed), "--out", str(out), "--resume", "--quiet"], capsys)
    assert code == 2 and "another spec or trace (spec.seed differs)" in err


def test_the_local_executor_never_imports_ray(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    script = ("import sys; from sim import cli; "
              f"code = cli.main(['sweep', {str(spec)!r}, '--out', {str(tmp_path / 'out')!r}, '--jobs', '2', '--quiet']); "
              "assert code == 0, code; assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)


def test_fixed_loads_on_a_trace_file_relative_to_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """[loads] as compare runs them; the trace path is taken relative to the spec's folder."""
    data = Path(__file__).resolve().parents[1] / "data" / "AzureLLMInferenceTrace_code.csv"
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "code.csv").write_bytes(data.read_bytes())
    (tmp_path / "specs").mkdir()
    text = ('[trace]\npath = "../traces/code.csv"\nnum_requests = 30\n[grid]\nmax_num_seqs = [8, 64]\n'
            "[slo]\nttft_ms = 2000\n[loads]\nrates = [0.5, 2]\n[report]\ncost = \"num_gpus\"\n")
    spec = write_spec(tmp_path / "specs", text)
    import analysis.sweep as sweep

    tasks: list[tuple[int, tuple[float, ...]]] = []
    real = sweep.run_config
    monkeypatch.setattr(sweep, "run_config", lambda trace, task: tasks.append((task.index, task.scales)) or real(trace, task))
    code, stdout, _ = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet"], capsys)
    assert code == 0 and len(tasks) == 4 and all(len(scales) == 1 for _, scales in tasks)  # fixed loads: one task each
    probes = pd.read_csv(tmp_path / "out" / "probes.csv")
    assert list(probes["rate"].round(9)) == [0.5, 2.0, 0.5, 2.0] and (probes["num_requests"] == 30).all()
    assert (probes["policy"] == "vllm-v0").all() and "report.md" in {p.name for p in (tmp_path / "out").iterdir()}


@pytest.mark.parametrize("flags, message", [
    (["--ray-address", "127.0.0.1:6379"], "ray-address: needs --executor ray"),
    (["--jobs", "0"], "jobs: must be >= 1, got 0"),
    (["--out-is-a-report"], "out: exists and is not a pagedlab sweep; give an empty or new --out"),
    (["--out-below-a-file"], "below/out: out: cannot be made (not a directory)"),
])
def test_bad_flags_and_a_foreign_out_dir_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     flags: list[str], message: str) -> None:
    out = tmp_path / "out"
    if flags == ["--out-is-a-report"]:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        flags = []
    if flags == ["--out-below-a-file"]:  # the system's own refusal, said as --out's
        (tmp_path / "below").write_text("x")
        out, flags = tmp_path / "below" / "out", []
    code, _, err = run_cli(["sweep", str(write_spec(tmp_path)), "--out", str(out), "--quiet", *flags], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists() or [p.name for p in out.iterdir()] == ["notes.txt"]  # nothing written, nothing lost


def test_a_local_sweep_starts_no_more_processes_than_first_replays(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # `--jobs 64` for a sweep of 4 configurations at one fixed load started a pool of 64 processes.
    import analysis.executors as executors
    from analysis.sweep import run_sweep
    from analysis.sweep_spec_load import load_spec

    asked: list[int] = []
    real = executors.make_executor
    monkeypatch.setattr(executors, "make_executor",
                        lambda kind, fn, shared, *, jobs=1, address=None: asked.append(jobs) or real(kind, fn, shared,
                                                                                                      jobs=1))
    spec = write_spec(tmp_path, SPEC.split("[search]")[0] + "[loads]\nrate_scales = [1]\n")
    run_sweep(load_spec(spec), tmp_path / "out", jobs=64, progress=False)
    assert asked == [4]
