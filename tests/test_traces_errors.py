"""Bad input: one line `path:line: field: reason` and exit code 2 from the CLI, never a traceback."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim import cli
from traces import load

AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
NATIVE = "arrival_s,prompt_tokens,output_tokens\n"
VIDUR = "arrived_at,num_prefill_tokens,num_decode_tokens\n"
MOON = '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n'

# (case, file name, content, location after the path (":line" or ""), field, start of the reason)
CASES = [
    ("missing column (native)", "t.csv", "arrival_s,prompt_tokens\n0,1\n", ":1", "output_tokens", "missing column"),
    ("missing column (azure)", "t.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9799600,5\n", ":1",
     "GeneratedTokens", "missing column (azure needs TIMESTAMP, ContextTokens, GeneratedTokens)"),
    ("non-numeric token count", "t.csv", AZ + "2023-11-16 18:17:03.9799600,5,1\n2023-11-16 18:17:04.0000000,abc,1\n",
     ":3", "ContextTokens", "not a number: 'abc'"),
    ("negative token count", "t.csv", VIDUR + "0,10,2\n1,-5,2\n", ":3", "num_prefill_tokens", "negative token count: -5"),
    ("fractional token count", "t.csv", NATIVE + "0,2.5,1\n", ":2", "prompt_tokens", "not an integer: 2.5"),
    ("empty cell", "t.csv", NATIVE + "0,3,1\n1,,1\n", ":3", "prompt_tokens", "missing value"),
    ("zero native output", "t.csv", NATIVE + "0,3,0\n", ":2", "output_tokens", "must be >= 1, got 0"),
    ("negative time", "t.csv", VIDUR + "-1,10,2\n", ":2", "arrived_at", "negative time"),
    ("empty file", "t.csv", "", ":1", "file", "empty"),
    ("blank lines only", "t.csv", "\n \n", ":1", "file", "empty"),
    ("header only", "t.csv", NATIVE, ":2", "rows", "no requests"),
    ("unknown format (CSV header)", "t.csv", "foo,bar\n1,2\n", ":1", "header", "unknown trace format (columns: foo, bar)"),
    ("unknown format (JSON keys)", "t.jsonl", '{"a": 1}\n', ":1", "header", "unknown trace format"),
    ("bad timestamp", "t.csv", AZ + "2023-11-16 18:17:03.9799600,5,1\n2023-13-45 18:17:03,5,1\n", ":3", "TIMESTAMP",
     "not a timestamp: '2023-13-45 18:17:03'"),
    # a time without an offset was read as UTC: 1 s of wall clock became 18001 s
    ("timestamps with and without a UTC offset", "t.csv", AZ + "2023-11-16 18:17:03.9799600+05:00,10,5\n"
     "2023-11-16 18:17:04.9799600,10,5\n", ":3", "TIMESTAMP", "no UTC offset, but line 2 has one"),
    ("timestamps without and with a UTC offset", "t.csv", AZ + "2023-11-16 18:17:03.9799600,10,5\n"
     "2023-11-16 18:17:04.9799600,10,5\n2023-11-16 18:17:05Z,10,5\n", ":4", "TIMESTAMP",
     "has a UTC offset ('2023-11-16 18:17:05Z'), but line 2 has none"),
    ("truncated JSON line", "t.jsonl", MOON + '{"timestamp": 10, "input_le', ":2", "json", "truncated JSON"),
    ("invalid JSON line", "t.jsonl", MOON + MOON + "{'timestamp': 1}\n", ":3", "json", "invalid JSON"),
    # a cut-off object that still ends its line: the column is the line's, not the one after its newline
    ("truncated JSON line, newline kept", "t.jsonl", MOON + '{"timestamp": 10, "input_length":\n', ":2", "json",
     "truncated JSON (Expecting value at column 34)"),
    ("a line that is not JSON", "t.jsonl", MOON + "not json at all\n", ":2", "json", "invalid JSON (Expecting value at "
     "column 1)"),
    ("a key given twice", "t.jsonl", MOON + '{"timestamp": 5, "input_length": 3, "output_length": 1, "input_length": 9}\n',
     ":2", "input_length", "given twice in one JSON object"),
    ("a key given twice on the first line", "t.jsonl", '{"timestamp": 5, "timestamp": 6, "input_length": 3, '
     '"output_length": 1}\n', ":1", "timestamp", "given twice in one JSON object"),
    ("JSON line without a key", "t.jsonl", MOON + '{"timestamp": 5, "input_length": 3}\n', ":2", "output_length",
     "missing value"),
    ("bad hash ids", "t.jsonl", MOON + '{"timestamp": 5, "input_length": 3, "output_length": 1, "hash_ids": [1, "x"]}\n',
     ":2", "hash_ids", "not a list of non-negative integers"),
    ("ragged row", "t.csv", NATIVE + "0,1,1\n1,2,2,9\n", ":3", "row", "expected 3 fields, saw 4"),
    ("missing id", "t.csv", "request_id," + NATIVE + "a,0,1,1\n,1,1,1\n", ":3", "request_id", "missing value"),
    ("duplicate id", "t.csv", "request_id," + NATIVE + "a,0,1,1\na,1,1,1\n", ":3", "request_id", "duplicate id 'a'"),
    ("greedy with n=4", "t.csv", "n," + NATIVE + "1,0,1,1\n4,1,1,1\n", ":3", "n", "greedy sampling decodes one sequence"),
    ("unknown sampling", "t.csv", "sampling," + NATIVE + "topk,0,1,1\n", ":2", "sampling", "unknown mode 'topk'"),
    ("not UTF-8", "t.csv", None, ":2", "file", "not UTF-8 text"),
    # Times: overflowing values and epoch units are refused where they are read, with the likely unit.
    ("epoch ns in seconds", "t.csv", NATIVE + "0,10,5\n1.7e18,10,5\n", ":3", "arrival_s",
     "too large for a time in seconds: 1.7e+18; it looks like epoch nanoseconds; give seconds"),
    ("epoch us in seconds", "t.csv", VIDUR + "1700000000000000,10,5\n", ":2", "arrived_at",
     "too large for a time in seconds: 1700000000000000; it looks like epoch microseconds"),
    ("epoch ns in milliseconds", "t.jsonl", '{"timestamp": 1.7e18, "input_length": 1, "output_length": 1}\n', ":1",
     "timestamp", "too large for a time in milliseconds: 1.7e+18; it looks like epoch nanoseconds"),
    ("1e300 seconds", "t.csv", NATIVE + "0,10,5\n1e300,10,5\n", ":3", "arrival_s",
     "too large for a time in seconds: 1e+300; give seconds"),
    ("a trace over 3 years long", "t.csv", NATIVE + "0,10,5\n5e10,10,5\n", ":3", "arrival_s",
     "arrives 5e+10 s after the first request; a trace spans at most 1e+08 s"),
    # Token counts: one limit, however the number is spelled; never a wrapped negative.
    ("2**63 tokens", "t.csv", NATIVE + "0,9223372036854775808,5\n", ":2", "prompt_tokens",
     "too large: 9223372036854775808 (a token count is at most 1000000000)"),
    ("2**63-1 tokens", "t.csv", NATIVE + "0,9223372036854775807,5\n", ":2", "prompt_tokens",
     "too large: 9223372036854775807 (a token count is at most 1000000000)"),
    ("1e18 tokens", "t.csv", NATIVE + "0,1e18,5\n", ":2", "prompt_tokens",
     "too large: 1e+18 (a token count is at most 1000000000)"),
    ("2**63 tokens in JSON", "t.jsonl", '{"arrival_s": 0, "prompt_tokens": 9223372036854775808, "output_tokens": 1}\n',
     ":1", "prompt_tokens", "too large: 9223372036854775808 (a token count is at most 1000000000)"),
    ("2**64 tokens (Azure)", "t.csv", AZ + "2023-11-16 18:17:03.9799600,18446744073709551616,1\n", ":2",
     "ContextTokens", "too large: 18446744073709551616"),
    ("priority below -2**53", "t.csv", "priority," + NATIVE + "-9223372036854775808,0,1,1\n", ":2", "priority",
     "too small: -9223372036854775808"),
    # Files that are not what their name says.
    ("fake .gz", "t.csv.gz", "no gzip here\n", ":1", "file",
     "not gzip data although the name ends in .gz (it starts with b'no')"),
    ("unclosed quote", "t.csv", NATIVE + '0,1,1\n1,"2,2\n', ":3", "row", 'a quoted value (") never closes'),
    ("a column twice", "t.csv", "arrival_s,prompt_tokens,output_tokens,prompt_tokens\n0,10,5,7\n", ":1",
     "prompt_tokens", "column given twice in the header"),
    ("tab-separated", "t.tsv", "arrival_s\tprompt_tokens\toutput_tokens\n0\t10\t5\n", ":1", "header",
     "unknown trace format (columns: arrival_s\\tprompt_tokens\\toutput_tokens); known formats: native-csv, "
     "native-jsonl, azure, burstgpt, mooncake, vidur; the header is separated by tabs: a CSV trace is comma-separated"),
    ("semicolon-separated", "t.csv", "arrival_s;prompt_tokens;output_tokens\n0;10;5\n", ":1", "header",
     "unknown trace format (columns: arrival_s;prompt_tokens;output_tokens); known formats: native-csv, "
     "native-jsonl, azure, burstgpt, mooncake, vidur; the header is separated by semicolons"),
    ("a ShareGPT JSON document", "sg.json",
     '[\n  {"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}\n]\n',
     ":1", "file", "a JSON array (such as ShareGPT's conversations), not a trace"),
    ("ShareGPT as JSON lines", "sg.jsonl", '{"id": "a", "conversations": [{"from": "human", "value": "Hi"}]}\n',
     ":1", "header", "ShareGPT conversations (text), not a trace"),
    # JSON values Python reads but a count or time cannot be: never 1 for `true`, never "missing" for NaN.
    ("a boolean token count", "t.jsonl", '{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 1}\n'
     '{"arrival_s": 1, "prompt_tokens": true, "output_tokens": 1}\n', ":2", "prompt_tokens",
     "not a number: True (a boolean)"),
    ("a boolean time", "t.jsonl", '{"timestamp": false, "input_length": 10, "output_length": 2}\n', ":1", "timestamp",
     "not a number: False (a boolean)"),
    ("NaN in JSON", "t.jsonl", '{"arrival_s": 0, "prompt_tokens": NaN, "output_tokens": 1}\n', ":1", "prompt_tokens",
     "not a number: 'NaN'"),
    ("Infinity in JSON", "t.jsonl", '{"arrival_s": Infinity, "prompt_tokens": 3, "output_tokens": 1}\n', ":1",
     "arrival_s", "not a finite number: 'Infinity'"),
]


@pytest.mark.parametrize("case, name, content, loc, field, reason", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, case: str, name: str,
                                          content: str | None, loc: str, field: str, reason: str) -> None:
    monkeypatch.delenv("PAGEDLAB_TRACEBACK", raising=False)
    path = tmp_path / name
    if content is None:
        path.write_bytes(b"arrival_s,prompt_tokens,output_tokens\n0,1,\xff\xfe\n")
    else:
        path.write_text(content)
    expected = f"{path}{loc}: {field}: {reason}"
    with pytest.raises(ValueError) as info:
        load(path)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    assert cli.main(["trace", "stats", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"pagedlab: error: {info.value}\n"  # exactly one line, no traceback


def test_a_length_only_trace_needs_arrivals_except_for_its_stats(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n10,5\n30,7\n")
    reason = (f"{path}:1: arrived_at: missing column: this trace has lengths only; give it arrival times with "
              "--arrivals poisson:RATE, gamma:RATE:CV or constant:RATE")
    with pytest.raises(ValueError, match="^" + re.escape(reason) + "$"):
        load(path)
    assert cli.main(["replay", "--trace", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"pagedlab: error: {reason}\n"
    # its lengths are worth a summary without times: every request counts at 0 s, and the notice says so
    assert cli.main(["trace", "stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "requests    2\nduration    0.000 s (every request at 0 s)\nmean rate   n/a\n" in out
    assert "notice: no arrival times (lengths only): every request counted at 0 s; --arrivals" in out
    assert cli.main(["trace", "stats", str(path), "--window", "0:10"]) == 2
    assert capsys.readouterr().err == (f"pagedlab: error: {path}: window: the trace has lengths only (no arrival "
                                       "times); give --arrivals\n")
    assert cli.main(["trace", "stats", str(path), "--arrivals", "constant:2"]) == 0
    assert "duration    0.500 s\nmean rate   2 req/s" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_a_file_cut_off_mid_line_says_so(tmp_path: Path, name: str) -> None:
    # A partial download ends mid-row: "missing value" alone sends one looking for an empty cell.
    import gzip

    text = AZ + "2023-11-16 18:17:03.9799600,5,1\n2023-11-16 18:17:04.0000000,7"
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    with pytest.raises(ValueError) as info:
        load(path)
    assert str(info.value) == (f"{path}:3: GeneratedTokens: missing value (the last line has no line break: the file "
                               "looks cut off)")
    path.write_bytes(gzip.compress((text + "\n").encode()) if name.endswith(".gz") else (text + "\n").encode())
    with pytest.raises(ValueError) as info:
        load(path)
    assert str(info.value) == f"{path}:3: GeneratedTokens: missing value"


def test_truncated_gzip_names_the_file_and_a_line(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "t.csv.gz"
    data = gzip.compress((NATIVE + "".join(f"{i},{i % 97 + 1},{i % 13 + 1}\n" for i in range(20000))).encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:\d+: file: corrupt gzip data \(Compressed file "):
        load(path)


def test_replay_of_an_overflowing_trace_exits_2_and_writes_nothing(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text(NATIVE + "0,10,5\n1.7e18,10,5\n")
    assert cli.main(["replay", "--trace", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "it looks like epoch nanoseconds" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_first_problem_in_the_file_is_reported(tmp_path: Path) -> None:
    # Two bad cells in different columns: the earlier line wins, whatever the column order.
    path = tmp_path / "t.csv"
    path.write_text(NATIVE + "0,1,1\n1,2,x\n2,y,1\n")
    with pytest.raises(ValueError, match=r"t\.csv:3: output_tokens: not a number: 'x'$"):
        load(path)


@pytest.mark.parametrize("args, kwargs, message", [
    (["--format", "xyz"], {"format": "xyz"}, ": format: unknown format 'xyz'; expected auto or one of native-csv"),
    (["--format", "mooncake"], {"format": "mooncake"}, ":1: file: mooncake is a JSONL format, found CSV"),
    (["--model", "GPT-4"], {"model": "GPT-4"}, ": filter: model / log type filters apply to burstgpt traces"),
])
def test_bad_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], kwargs: dict, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(NATIVE + "0,1,1\n")
    assert cli.main(["trace", "stats", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pagedlab: error: {path}{message}") and err.count("\n") == 1
    with pytest.raises(ValueError) as info:
        load(path, **kwargs)
    assert err == f"pagedlab: error: {info.value}\n"


def test_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.csv"
    assert cli.main(["trace", "stats", str(path)]) == 2
    assert capsys.readouterr().err == f"pagedlab: error: {path}: file: no such file\n"


@pytest.mark.parametrize("args, message", [
    (["--rate", "-1"], "generate: rate: must be > 0 requests/s, got -1.0"),
    (["--lengths", "wikipedia"], "generate: lengths: unknown 'wikipedia'"),
    (["--arrival", "weibull"], "generate: arrival: unknown 'weibull'"),
    (["--parallel-fraction", "0.8", "--beam-fraction", "0.5"], "generate: parallel_fraction/beam_fraction:"),
    (["--prefix-groups", "3"], "generate: prefix_tokens: prefix groups need prefix_tokens >= 1"),
    # options the others make the generator ignore were accepted without a word
    (["--burstiness", "0.5"], "trace gen: --burstiness: would be ignored: it shapes gamma arrivals only"),
    (["--n", "8"], "trace gen: --n: would be ignored: it is the width of parallel and beam requests"),
    (["--prefix-tokens", "100"], "trace gen: --prefix-tokens: would be ignored: it needs --prefix-groups"),
    (["--sigma", "2"], "trace gen: --sigma: would be ignored: it is the spread of --lengths lognormal"),
    (["--lengths", "lognormal", "--range-ratio", "0.2"], "trace gen: --range-ratio: would be ignored"),
    (["--input-len", "5"], "trace gen: --input-len: would be ignored: --lengths sharegpt has its own lengths"),
])
def test_bad_generator_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            args: list[str], message: str) -> None:
    out = tmp_path / "g.csv"
    assert cli.main(["trace", "gen", "--out", str(out), "-n", "10", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pagedlab: error: {message}") and err.count("\n") == 1
    assert not out.exists()
