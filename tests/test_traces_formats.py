"""Every supported format loads a file written in it; the real Azure trace loads in full."""
from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from traces import Trace, load

AZURE_CODE = Path(__file__).resolve().parents[1] / "data" / "AzureLLMInferenceTrace_code.csv"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def triples(trace: Trace) -> list[tuple[str, float, int, int]]:
    return [(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens) for r in trace]


def test_native_csv_minimal_and_full(tmp_path: Path) -> None:
    minimal = write(tmp_path, "m.csv", "arrival_s,prompt_tokens,output_tokens\n0,10,5\n1.5,20,6\n")
    trace = load(minimal)
    assert triples(trace) == [("0", 0.0, 10, 5), ("1", 1.5, 20, 6)]
    full = write(tmp_path, "f.csv",
                 "request_id,arrival_s,prompt_tokens,output_tokens,n,sampling,priority,prefix_group,prefix_tokens,hash_ids\n"
                 "a,2.0,10,5,1,greedy,0,,0,\n"
                 "007,2.5,30,7,4,parallel,2,sys,8,3 4\n")
    a, b = load(full, format="native-csv")
    assert a.request_id == "a" and a.arrival_s == 0.0  # re-based: the first request arrives at 0
    assert (b.request_id, b.n, b.sampling, b.priority, b.prefix_group, b.prefix_tokens, b.hash_ids) == \
        ("007", 4, "parallel", 2, "sys", 8, (3, 4))
    assert any("shifted by -2 s" in n for n in load(full).notices)


def test_native_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl",
                 '{"request_id": 5, "arrival_s": 0.25, "prompt_tokens": 9, "output_tokens": 3}\n\n'
                 '{"request_id": "x", "arrival_s": 1.0, "prompt_tokens": 9, "output_tokens": 3, '
                 '"n": 2, "sampling": "beam", "prefix_group": null, "hash_ids": [1, 2]}\n')
    trace = load(path)
    assert triples(trace) == [("5", 0.0, 9, 3), ("x", 0.75, 9, 3)]
    assert trace[1].sampling == "beam" and trace[1].hash_ids == (1, 2)
    assert "ignored 1 blank lines" in trace.notices


def test_azure_format_seven_digit_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:17:03.9799600,4808,10\n"
                 "2023-11-16 18:17:04.0319601,3180,8\n"
                 "2023-11-16 18:18:03.9799600,110,27\n")
    trace = load(path)
    assert [r.arrival_s for r in trace] == [0.0, 0.0520001, 60.0]
    assert [r.prompt_tokens for r in trace] == [4808, 3180, 110]


def test_azure_2024_timestamps_with_utc_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "azure24.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2024-05-10 00:00:00.0099300+00:00,100,10\n2024-05-10 00:00:01.5099300+00:00,200,20\n")
    assert [r.arrival_s for r in load(path, format="azure")] == [0.0, 1.5]


def test_azure_timestamps_with_different_utc_offsets_are_instants(tmp_path: Path) -> None:
    # Mixing offsets and no offsets is refused (tests/test_traces_errors.py); different offsets are real times.
    path = write(tmp_path, "azure_tz.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2024-05-10 05:00:00+05:00,100,10\n2024-05-10 00:00:01Z,200,20\n2024-05-09 19:00:02.5-0500,300,30\n")
    assert [r.arrival_s for r in load(path, format="azure")] == [0.0, 1.0, 2.5]


def test_burstgpt_skips_failed_requests_with_notice_and_filters(tmp_path: Path) -> None:
    path = write(tmp_path, "burst.csv",
                 "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n"
                 "45,ChatGPT,1087,0,1087,Conversation log\n"
                 "118,GPT-4,417,276,693,API log\n"
                 "120,ChatGPT,300,0,300,API log\n"
                 "130,GPT-4,50,60,110,Conversation log\n")
    trace = load(path)
    assert triples(trace) == [("0", 0.0, 472, 18), ("2", 113.0, 417, 276), ("4", 125.0, 50, 60)]
    assert trace.skipped == {"failed requests (0 Response tokens)": 2}
    assert "skipped 2 failed requests (0 Response tokens)" in trace.notices
    gpt4 = load(path, model="gpt-4")
    assert [r.request_id for r in gpt4] == ["2", "4"] and gpt4[0].arrival_s == 0.0
    assert sum(gpt4.skipped.values()) + len(gpt4) == 5  # every row accounted for
    conv = load(path, log_type="Conversation log")
    assert [r.request_id for r in conv] == ["0", "4"]
    with pytest.raises(ValueError, match=r"Model: no rows match 'Claude' \(present: ChatGPT, GPT-4\)"):
        load(path, model="Claude")


def test_mooncake_keeps_hash_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "mooncake_trace.jsonl",
                 '{"timestamp": 0, "input_length": 6755, "output_length": 500, "hash_ids": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]}\n'
                 '{"timestamp": 0, "input_length": 700, "output_length": 490, "hash_ids": [0, 14]}\n'
                 '{"timestamp": 3052, "input_length": 2287, "output_length": 316, "hash_ids": [0, 42, 43, 44, 45]}\n')
    trace = load(path)
    assert triples(trace) == [("0", 0.0, 6755, 500), ("1", 0.0, 700, 490), ("2", 3.052, 2287, 316)]
    assert trace[1].hash_ids == (0, 14) and len(trace[0].hash_ids) == 14



def test_equal_hash_ids_of_different_rows_are_one_object(tmp_path: Path) -> None:
    # the prefix cache compares keys built from them by identity first (ids past CPython's small-int cache)
    path = write(tmp_path, "mooncake_trace.jsonl",
                 '{"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [1000000007, 2000000011]}\n'
                 '{"timestamp": 1, "input_length": 1100, "output_length": 5, "hash_ids": [1000000007, 3000000019]}\n')
    first, second = (request.hash_ids for request in load(path))
    assert first[0] == second[0] == 1000000007 and first[0] is second[0]

def test_vidur_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "vidur.csv", "arrived_at,num_prefill_tokens,num_decode_tokens,num_total_tokens\n"
                 "0.5,100,20,120\n0.75,200,0,200\n1.0,300,30,330\n")
    trace = load(path)
    assert triples(trace) == [("0", 0.0, 100, 20), ("2", 0.5, 300, 30)]
    assert trace.skipped == {"rows with 0 num_decode_tokens": 1}
    assert "ignored columns: num_total_tokens" in trace.notices


def test_a_trailing_comma_is_an_ignored_column_without_a_name(tmp_path: Path) -> None:
    # pandas calls it `Unnamed: 3`, which the notice repeated as if the file had such a column.
    path = write(tmp_path, "t.csv", "arrival_s,prompt_tokens,output_tokens,\n0,10,5,\n1,3,5,\n")
    assert "ignored columns: column 4 (no name)" in load(path).notices


def test_gzip_and_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "v.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,2\n")
    assert triples(load(path, format="vidur")) == [("0", 0.0, 1, 2)]


def test_unsorted_arrivals_are_sorted_stably_with_notice(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"
                 "3,1,1\n1,2,2\n3,3,3\n2,4,4\n1,5,5\n")
    trace = load(path)
    assert [r.request_id for r in trace] == ["1", "4", "3", "0", "2"]  # equal times keep file order
    assert [r.arrival_s for r in trace] == [0.0, 0.0, 1.0, 2.0, 2.0]
    notice = next(n for n in trace.notices if "out of order" in n)
    assert "3 rows arrived before an earlier row, first at " in notice and f"{path}:3" in notice


def _azure_ticks(stamp: str) -> int:
    """100 ns ticks since the epoch, parsed without pandas (an independent check of the loader)."""
    day_time, _, fraction = stamp.partition(".")
    seconds = int(datetime.strptime(day_time, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
    return seconds * 10**7 + int(fraction.ljust(7, "0")[:7])


def test_real_azure_code_trace_loads_in_full() -> None:
    with open(AZURE_CODE, newline="") as f:
        rows = list(csv.DictReader(f))
    trace = load(AZURE_CODE)
    assert len(trace) == len(rows) == 8819 and trace.skipped == {}
    ticks = [_azure_ticks(row["TIMESTAMP"]) for row in rows]
    expected = [(t - min(ticks)) / 10**7 for t in ticks]
    assert [r.arrival_s for r in trace] == expected  # exact: both divide the same integer tick counts
    assert trace[0].arrival_s == 0.0 and trace[-1].arrival_s == pytest.approx(3435.948056)
    assert [r.prompt_tokens for r in trace] == [int(row["ContextTokens"]) for row in rows]
    assert [r.output_tokens for r in trace] == [int(row["GeneratedTokens"]) for row in rows]
    assert [r.request_id for r in trace] == [str(i) for i in range(8819)]
    assert not any("out of order" in n for n in trace.notices)


def test_blank_and_whitespace_lines_are_ignored_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(b"\narrival_s,prompt_tokens,output_tokens\r\n0,1,1\r\n   \r\n\r\n2,3,x\r\n")
    with pytest.raises(ValueError, match=r"b\.csv:6: output_tokens: not a number: 'x'$"):  # lines still exact
        load(path)
    path.write_bytes(b"\xef\xbb\xbfarrival_s,prompt_tokens,output_tokens\r\n0,1,1\r\n   \r\n\r\n2,3,4\r\n\r\n")
    trace = load(path)
    assert triples(trace) == [("0", 0.0, 1, 1), ("1", 2.0, 3, 4)]
    assert "ignored 3 blank lines" in trace.notices


def test_hash_ids_for_another_number_of_blocks_than_the_prompt_are_said(tmp_path: Path) -> None:
    consistent = write(tmp_path, "ok.jsonl", '{"timestamp": 0, "input_length": 1024, "output_length": 5, '
                                             '"hash_ids": [0, 1]}\n')
    assert not any("hash ids" in n for n in load(consistent).notices)
    path = write(tmp_path, "m.jsonl",
                 '{"timestamp": 0, "input_length": 1024, "output_length": 5, "hash_ids": [0, 1]}\n'
                 '{"timestamp": 1, "input_length": 1025, "output_length": 5, "hash_ids": [0, 1]}\n'
                 '{"timestamp": 2, "input_length": 10, "output_length": 5, "hash_ids": [0, 1, 2]}\n'
                 '{"timestamp": 3, "input_length": 10, "output_length": 5}\n')
    trace = load(path)
    assert len(trace) == 4  # said, not dropped
    assert (f"2 requests list hash ids for another number of 512-token blocks than their prompt has (first at "
            f"{path}:2: 2 ids for 3 blocks); blocks past the listed ids are not cached, extra ids are unused"
            ) in trace.notices
