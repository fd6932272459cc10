"""`pagedlab trace stats` and `pagedlab trace convert`."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim import cli
from traces import load

AZURE_CODE = Path(__file__).resolve().parents[1] / "data" / "AzureLLMInferenceTrace_code.csv"


def stats_rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


def test_stats_prints_count_duration_rate_and_percentiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    rows = [(0, 10, 1), (1, 20, 2), (2, 30, 3), (4, 40, 400)]
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{a},{p},{o}\n" for a, p, o in rows))
    assert cli.main(["trace", "stats", str(path)]) == 0
    rows_out = stats_rows(capsys.readouterr().out)
    assert rows_out["requests"] == ["4"]
    assert rows_out["duration"] == ["4.000", "s"]
    assert rows_out["mean"] == ["rate", "0.75", "req/s"]  # 3 gaps over 4 s
    assert rows_out["tokens"] == ["p50", "p90", "p99", "max", "mean"]
    assert rows_out["prompt"] == ["20", "40", "40", "40", "25.0"]  # nearest-rank percentiles
    assert rows_out["output"] == ["2", "400", "400", "400", "101.5"]


def test_stats_reports_skipped_rows_and_transformations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "burst.csv"
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,0,1087,Conversation log\n"
                    "118,GPT-4,417,276,693,API log\n130,GPT-4,5000,60,5060,API log\n")
    assert cli.main(["trace", "stats", str(path), "--window", "0:200", "--rate-scale", "2",
                     "--max-context", "4096"]) == 0
    out = capsys.readouterr().out
    assert "skipped     1 rows (1 failed requests (0 Response tokens))" in out
    assert "notice: skipped 1 failed requests (0 Response tokens)" in out
    assert "notice: rate scaled by 2" in out
    assert "notice: clipped 1 of 3 requests to a 4096-token context" in out
    assert stats_rows(out)["duration"] == ["62.500", "s"]


def test_convert_writes_a_native_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.jsonl"
    src.write_text('{"timestamp": 1000, "input_length": 600, "output_length": 5, "hash_ids": [3, 4]}\n'
                   '{"timestamp": 3000, "input_length": 10, "output_length": 0, "hash_ids": [5]}\n'
                   '{"timestamp": 5000, "input_length": 20, "output_length": 7, "hash_ids": [3]}\n')
    out = tmp_path / "native.csv"
    assert cli.main(["trace", "convert", str(src), "--out", str(out), "--head", "5"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 requests" in printed and "notice: skipped 1 rows with 0 output_length" in printed
    back = load(out)
    assert [(r.request_id, r.arrival_s, r.hash_ids) for r in back] == [("0", 0.0, (3, 4)), ("2", 4.0, (3,))]


def test_convert_to_a_gz_name_writes_gzip_that_loads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `--out t.csv.gz` wrote plain text, which `load` then refused as "not gzip data".
    src = tmp_path / "t.csv"
    src.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,3,5\n")
    for name, kind in (("t2.csv.gz", "native CSV, gzip"), ("t2.jsonl.gz", "native JSONL, gzip"),
                       ("t2.parquet", "native CSV")):
        out = tmp_path / name
        assert cli.main(["trace", "convert", str(src), "--out", str(out)]) == 0
        assert f"wrote 2 requests to {out} ({kind})" in capsys.readouterr().out
        assert [(r.arrival_s, r.prompt_tokens) for r in load(out)] == [(0.0, 10), (1.0, 3)]
    first = (tmp_path / "t2.csv.gz").read_bytes()
    assert cli.main(["trace", "convert", str(src), "--out", str(tmp_path / "t2.csv.gz"), "--force"]) == 0
    assert (tmp_path / "t2.csv.gz").read_bytes() == first  # same trace, same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t2.csv.gz", "t2.jsonl.gz", "t2.parquet"]


def test_stats_on_the_real_azure_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trace", "stats", str(AZURE_CODE), "--format", "azure"]) == 0
    rows = stats_rows(capsys.readouterr().out)
    assert rows["requests"] == ["8819"] and rows["duration"] == ["3435.948", "s"]
    assert rows["prompt"][3] == "7437" and rows["output"][3] == "1899"  # max lengths of the file
    assert re.fullmatch(r"2\.56\d", rows["mean"][1])


def test_bench_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    # A smoke run so the benchmark script cannot rot; its timings are not checked here.
    from traces import bench

    assert bench.main(["--rows", "500", "--repeat", "1"]) == 0
    table = capsys.readouterr().out
    assert "| native CSV (all 10 fields) |" in table and "| Azure CSV (7-digit timestamps) |" in table


def _trace(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,1\n1,20,2\n")
    return path


@pytest.mark.parametrize("command", ["convert", "gen"])
def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path, command: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    head = ["trace", "convert", str(_trace(tmp_path))] if command == "convert" else ["trace", "gen", "-n", "3"]
    missing = tmp_path / "no" / "x.csv"
    assert cli.main([*head, "--out", str(missing)]) == 2
    assert capsys.readouterr().err == f"pagedlab: error: {missing.parent}: out: no such directory, so {missing} " \
                                      "cannot be written\n"
    assert cli.main([*head, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"pagedlab: error: {tmp_path}: out: is a directory; give a file name "
                                       "(.jsonl: native JSONL, else CSV)\n")
    assert not missing.parent.exists()


def test_convert_refuses_to_overwrite_its_own_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _trace(tmp_path)
    before = path.read_bytes()
    assert cli.main(["trace", "convert", str(path), "--out", str(path)]) == 2
    assert capsys.readouterr().err == f"pagedlab: error: {path}: out: is the trace being read; give another path\n"
    assert path.read_bytes() == before


@pytest.mark.parametrize("command", ["convert", "gen"])
def test_an_existing_out_file_is_kept_unless_force_is_given(tmp_path: Path, command: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Any existing file (another trace, say) was replaced without a word.
    head = ["trace", "convert", str(_trace(tmp_path))] if command == "convert" else ["trace", "gen", "-n", "3"]
    out = tmp_path / "other.csv"
    out.write_text("someone else's file\n")
    assert cli.main([*head, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"pagedlab: error: {out}: out: exists; give a new path, or --force to replace it\n"
    assert captured.out == "" and out.read_text() == "someone else's file\n"
    assert cli.main([*head, "--out", str(out), "--force"]) == 0
    assert len(load(out)) in (2, 3) and capsys.readouterr().out.startswith(f"wrote ")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["other.csv", "t.csv"] if command == "convert"
                                                         else ["other.csv"])


@pytest.mark.parametrize("command", ["convert", "gen"])
def test_an_out_the_system_refuses_is_named_as_given(tmp_path: Path, command: str,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # `--out /proc/x` named the temporary file: `/proc/.x.17536.tmp: file: no such file or directory`.
    head = ["trace", "convert", str(_trace(tmp_path))] if command == "convert" else ["trace", "gen", "-n", "3"]
    out = tmp_path / "x.csv"
    real_open = Path.open

    def refused(self: Path, *args: object, **kwargs: object) -> object:
        if self.parent == tmp_path and self.name.startswith(".x.csv."):
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refused)
    assert cli.main([*head, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"pagedlab: error: {out}: out: cannot be written (no such file or directory)\n"
    assert not out.exists()
    monkeypatch.undo()
    # a failure while writing (the disk filled up) names the user's path too, and leaves no temporary file
    from traces.trace import Trace

    def full(self: Trace, path: Path) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(Trace, "to_csv", full)
    assert cli.main([*head, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"pagedlab: error: {out}: out: cannot be written (no space left on device)\n"
    assert not any(p.name.startswith(".x.csv") for p in tmp_path.iterdir()) and not out.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_convert_to_proc_names_the_out_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trace", "convert", str(_trace(tmp_path)), "--out", "/proc/x"]) == 2
    err = capsys.readouterr().err  # as root: /proc/x: out: cannot be written (...); else /proc: out: permission ...
    assert err.startswith("pagedlab: error: /proc") and ": out: " in err and err.count("\n") == 1
    assert ".tmp" not in err


def test_an_interrupted_write_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from traces.trace import Trace

    out = tmp_path / "out.csv"
    out.write_text("previous\n")

    def interrupted(self: Trace, path: Path) -> None:
        Path(path).write_text("arrival_s,prompt")
        raise KeyboardInterrupt

    monkeypatch.setattr(Trace, "to_csv", interrupted)
    assert cli.main(["trace", "convert", str(_trace(tmp_path)), "--out", str(out), "--force"]) == 130  # as Ctrl-C
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "t.csv"]
