"""Fuzzing the trace loaders with mutated CSV / JSONL bytes: every input either loads with finite,
in-range values or is refused with one line `path:line: field: reason` (exit 2 from the CLI); never a
traceback, never a negative, non-finite or overflowing time or token count."""
from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import cli
from traces import load
from traces.request import MAX_ARRIVAL_S, MAX_INT, MAX_TOKENS

SEEDS: dict[str, bytes] = {
    "native.csv": b"request_id,arrival_s,prompt_tokens,output_tokens,n,sampling,priority,prefix_group,prefix_tokens\n"
                  b"a,0.0,12,5,1,greedy,0,,0\nb,0.25,30,7,4,parallel,1,g0,8\nc,1.5,9,3,2,beam,0,g0,4\n",
    "native.jsonl": b'{"arrival_s": 0, "prompt_tokens": 12, "output_tokens": 5}\n'
                    b'{"arrival_s": 0.5, "prompt_tokens": 3, "output_tokens": 2, "n": 2, "sampling": "parallel"}\n',
    "azure.csv": b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n"
                 b"2023-11-16 18:17:04.0319800,3180,8\n2023-11-16 18:17:04.0829860,110,27\n",
    "burstgpt.csv": b"Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    b"5,ChatGPT,472,18,490,Conversation log\n45,GPT-4,1087,0,1087,API log\n118,ChatGPT,417,30,447,API log\n",
    "mooncake.jsonl": b'{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]}\n'
                      b'{"timestamp": 27482, "input_length": 6472, "output_length": 26, "hash_ids": [46, 52]}\n',
    "vidur.csv": b"arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,100,20\n0.75,200,7\n1.0,300,30\n",
    "lengths.csv": b"num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n3772,54,3826,69.85\n2015,156,2171,12.9\n",
}
# Fragments that have broken loaders before: overflowing numbers, epoch units, non-finite values,
# separators, quotes, NUL and bytes that are not UTF-8.
FRAGMENTS = [b"-", b"1e308", b"1e400", b"1.7e18", b"1700000000000", b"nan", b"inf", b"-inf", b"9223372036854775808",
             b"18446744073709551616", b"1e18", b"0", b"-1", b"2.5", b",", b"\n", b"\r\n", b'"', b"\x00", b"\xff",
             b"{", b"}", b"[", b"]", b" ", b"null", b"true", b":", b"\xef\xbb\xbf", b"1e-300"]

MESSAGE = r"^{path}:\d+: [^:\n]+: [^\n]+$"


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "replace", "delete", "byte"]))
        if kind == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif kind == "byte" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            end = pos + (draw(st.integers(0, 6)) if kind == "replace" else 0)
            data[pos:end] = draw(st.sampled_from(FRAGMENTS))
    return name, bytes(data)


def check_loaded(trace) -> None:  # type: ignore[no-untyped-def]
    arrival = trace.column("arrival_s")
    assert np.isfinite(arrival).all() and (arrival >= 0).all() and (arrival <= MAX_ARRIVAL_S).all()
    assert (np.diff(arrival) >= 0).all()
    for name, top in (("prompt_tokens", MAX_TOKENS), ("output_tokens", MAX_TOKENS), ("n", MAX_INT)):
        values = trace.column(name)
        assert values.dtype == np.int64 and (values >= 1).all() and (values <= top).all(), name
    assert np.abs(trace.column("priority")).max() <= MAX_INT
    for r in (trace[0], trace[len(trace) - 1]):  # the scalar rules of Request agree
        assert r.arrival_s >= 0


@settings(max_examples=300)
@given(mutated(), st.booleans())
def test_mutated_trace_loads_in_range_or_fails_in_one_line(case: tuple[str, bytes], with_arrivals: bool) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        arrivals = "gamma:3:2" if with_arrivals else None
        try:
            trace = load(path, arrivals=arrivals, seed=1)
        except ValueError as exc:
            assert re.match(MESSAGE.format(path=re.escape(str(path))), str(exc)), str(exc)
        else:
            check_loaded(trace)


@settings(max_examples=60)
@given(mutated())
def test_mutated_trace_through_the_cli_exits_0_or_2_with_one_line(case: tuple[str, bytes]) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["trace", "stats", str(path), "--arrivals", "poisson:2"])
        if code == 0:
            assert err.getvalue() == ""
            # The figures (not the notices, which may quote the file's own column names) are all finite.
            figures = [line for line in out.getvalue().splitlines()[1:] if not line.startswith("notice:")]
            assert not re.search(r"\b(nan|inf)\b", "\n".join(figures), re.IGNORECASE), figures
        else:
            assert code == 2
            lines = err.getvalue().splitlines()
            assert len(lines) == 1 and re.match(
                "pagedlab: error: " + MESSAGE[1:].format(path=re.escape(str(path))), lines[0]), lines
