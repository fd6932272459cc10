"""Request and Trace: validation, ordering, pandas and file round trips, transformations."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from traces import FORMATS, LENGTH_PRESETS, Request, Trace, generate, load
from traces.request import FIELDS


def req(i: int, arrival: float, prompt: int = 10, output: int = 5, **kw: object) -> Request:
    return Request(str(i), arrival, prompt, output, **kw)  # type: ignore[arg-type]


def test_public_api_and_field_order() -> None:
    assert FIELDS == ("request_id", "arrival_s", "prompt_tokens", "output_tokens", "n", "sampling",
                      "priority", "prefix_group", "prefix_tokens", "hash_ids")
    assert FORMATS == ("native-csv", "native-jsonl", "azure", "burstgpt", "mooncake", "vidur")
    assert set(LENGTH_PRESETS) == {"sharegpt", "alpaca"}
    r = Request("a", 0.5, 100, 20)
    assert (r.n, r.sampling, r.priority, r.prefix_group, r.prefix_tokens, r.hash_ids) == (1, "greedy", 0, None, 0, None)
    with pytest.raises(AttributeError):
        r.n = 2  # type: ignore[misc]
    assert not hasattr(r, "__dict__")  # slots


@pytest.mark.parametrize("kwargs, field", [
    (dict(prompt_tokens=0), "prompt_tokens"),
    (dict(output_tokens=0), "output_tokens"),
    (dict(n=0, sampling="parallel"), "n"),
    (dict(n=4), "n"),  # greedy with 4 sequences
    (dict(sampling="topk"), "sampling"),
    (dict(prefix_group="sys", prefix_tokens=11), "prefix_tokens"),  # longer than the prompt
    (dict(prefix_tokens=3), "prefix_tokens"),  # a shared prefix without a group
    (dict(arrival_s=-1.0), "arrival_s"),
    (dict(arrival_s=math.nan), "arrival_s"),
    (dict(request_id=""), "request_id"),
    (dict(hash_ids=(1, -2)), "hash_ids"),
    (dict(prompt_tokens=True), "prompt_tokens"),
])
def test_request_rejects_invalid(kwargs: dict, field: str) -> None:
    base = dict(request_id="r", arrival_s=0.0, prompt_tokens=10, output_tokens=5)
    with pytest.raises(ValueError, match=f": {field}: "):
        Request(**{**base, **kwargs})  # type: ignore[arg-type]


def test_request_accepts_parallel_beam_and_prefix() -> None:
    assert Request("p", 0.0, 10, 5, n=4, sampling="parallel").n == 4
    assert Request("b", 0.0, 10, 5, n=2, sampling="beam").sampling == "beam"
    r = Request("s", 0.0, 10, 5, prefix_group="sys", prefix_tokens=10, hash_ids=(7,))
    assert r.total_tokens == 15 and r.hash_ids == (7,)


def test_trace_sorts_stably_with_notice_and_indexes() -> None:
    reqs = [req(0, 2.0), req(1, 1.0), req(2, 2.0), req(3, 1.0)]
    trace = Trace(reqs, source="t")
    assert [r.request_id for r in trace] == ["1", "3", "0", "2"]  # ties keep their given order
    assert any("sorted by arrival" in n for n in trace.notices)
    assert len(trace) == 4 and trace[0].request_id == "1" and trace[-1].request_id == "2"
    assert isinstance(trace[1:3], Trace) and [r.request_id for r in trace[1:3]] == ["3", "0"]
    assert trace.requests == list(trace) and trace.source == "t"
    assert Trace(reqs[1:2]).notices == []
    with pytest.raises(ValueError, match="duplicate"):
        Trace([req(0, 0.0), req(0, 1.0)])


def test_int_indexing_without_materializing_matches_requests() -> None:
    trace = generate(50, rate=5.0, seed=3, parallel_fraction=0.5, num_prefix_groups=2, prefix_tokens=8)
    singles = [trace[i] for i in range(len(trace))]  # built one by one from the columns
    assert trace._requests is None
    assert singles == trace.requests


def test_pandas_round_trip_and_from_pandas_errors() -> None:
    trace = Trace([req(0, 0.0, hash_ids=(1, 2)), req(1, 0.5, n=3, sampling="beam", prefix_group="g",
                                                      prefix_tokens=4, priority=-2)])
    df = trace.to_pandas()
    assert list(df.columns) == list(FIELDS)
    assert Trace.from_pandas(df).requests == trace.requests
    minimal = pd.DataFrame({"arrival_s": [1.0, 0.0], "prompt_tokens": [3, 4], "output_tokens": [1, 2]})
    back = Trace.from_pandas(minimal)
    assert [r.request_id for r in back] == ["1", "0"] and back[0].prompt_tokens == 4
    bad = minimal.assign(output_tokens=[1, 0])
    with pytest.raises(ValueError, match=r"^<DataFrame>:1: output_tokens: must be >= 1, got 0$"):
        Trace.from_pandas(bad)
    with pytest.raises(ValueError, match="prompt_tokens: missing column"):
        Trace.from_pandas(minimal.drop(columns="prompt_tokens"))


def test_to_csv_is_deterministic_and_loads_back(tmp_path: Path) -> None:
    trace = generate(300, rate=3.0, seed=11, beam_fraction=0.3, num_prefix_groups=3, prefix_tokens=16,
                     num_priorities=3)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    trace.to_csv(a)
    trace.to_csv(b)
    assert a.read_bytes() == b.read_bytes()
    assert load(a).requests == trace.requests
    trace.to_jsonl(tmp_path / "a.jsonl")
    assert load(tmp_path / "a.jsonl").requests == trace.requests


def test_transformations() -> None:
    trace = Trace([req(i, float(i), prompt=100, output=50, prefix_group="g", prefix_tokens=90,
                       hash_ids=(1,)) for i in range(10)])
    head = trace.head(3)
    assert [r.request_id for r in head] == ["0", "1", "2"] and "kept the first 3 of 10" in head.notices[-1]
    window = trace.window(2.5, 6.0)
    assert [r.request_id for r in window] == ["3", "4", "5"]
    assert [r.arrival_s for r in window] == [0.0, 1.0, 2.0]  # re-based: the window's first arrives at 0
    faster = trace.scale_rate(2.0)
    assert faster.duration_s == pytest.approx(trace.duration_s / 2)
    clipped = trace.clip(120)
    assert all(r.total_tokens == 120 and r.prompt_tokens == 100 for r in clipped)
    assert clipped.notices[-1] == ("clipped 10 of 10 requests to a 120-token context: 10 outputs shortened; "
                                   "output tokens 500 -> 200")
    tiny = trace.clip(64)
    assert all((r.prompt_tokens, r.output_tokens, r.prefix_tokens) == (63, 1, 63) for r in tiny)
    assert tiny.notices[-1] == ("clipped 10 of 10 requests to a 64-token context: 10 prompts truncated to 63 tokens "
                                "(their outputs to 1 token); prompt tokens 1000 -> 630, output tokens 500 -> 10")
    assert trace.clip(1000).requests == trace.requests and "clipped 0 of 10" in trace.clip(1000).notices[-1]
    for bad in (lambda: trace.head(-1), lambda: trace.window(5, 5), lambda: trace.scale_rate(0),
                lambda: trace.clip(1)):
        with pytest.raises(ValueError):
            bad()


def test_clip_notice_counts_every_output_it_changed() -> None:
    # The notice said "1 outputs shortened, 2 prompts truncated", yet the truncated prompts' outputs were cut too.
    trace = Trace([req(0, 0.0, prompt=100, output=50), req(1, 1.0, prompt=40, output=50),
                   req(2, 2.0, prompt=70, output=1), req(3, 3.0, prompt=10, output=10)])
    clipped = trace.clip(64)
    assert [(r.prompt_tokens, r.output_tokens) for r in clipped] == [(63, 1), (40, 24), (63, 1), (10, 10)]
    changed = sum(a.output_tokens != b.output_tokens for a, b in zip(trace, clipped))
    assert changed == 2  # the third request's output was 1 token already
    assert clipped.notices[-1] == ("clipped 3 of 4 requests to a 64-token context: 2 prompts truncated to 63 tokens "
                                   "(their outputs to 1 token), 1 more output shortened; prompt tokens 220 -> 176, "
                                   "output tokens 111 -> 36")
    assert sum(r.output_tokens for r in clipped) == 36 and sum(r.prompt_tokens for r in clipped) == 176
    one = Trace([req(0, 0.0, prompt=100, output=50)]).clip(64)
    assert one.notices[-1] == ("clipped 1 of 1 requests to a 64-token context: 1 prompt truncated to 63 tokens "
                               "(its output to 1 token); prompt tokens 100 -> 63, output tokens 50 -> 1")
    assert Trace([req(0, 0.0)]).clip(64).notices[-1] == "clipped 0 of 1 requests to a 64-token context"


def test_clip_truncates_hash_ids_with_the_prompt() -> None:
    trace = Trace([req(0, 0.0, prompt=2000, output=10, hash_ids=(1, 2, 3, 4))])
    clipped = trace.clip(1025)  # the prompt keeps 1024 tokens: two 512-token blocks
    assert clipped[0].prompt_tokens == 1024 and clipped[0].hash_ids == (1, 2)


@st.composite
def requests_lists(draw: st.DrawFn) -> list[Request]:
    count = draw(st.integers(1, 12))
    ids = draw(st.lists(st.text("abcXYZ019_-,\" ", min_size=1, max_size=6), min_size=count,
                        max_size=count, unique=True))
    gaps = draw(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=count - 1, max_size=count - 1))
    out, arrival = [], 0.0
    for i, rid in enumerate(ids):
        arrival += gaps[i - 1] if i else 0.0
        prompt = draw(st.integers(1, 10**6))
        sampling = draw(st.sampled_from(["greedy", "parallel", "beam"]))
        group = draw(st.none() | st.text("gh,; ", min_size=1, max_size=4))
        out.append(Request(
            rid, arrival, prompt, draw(st.integers(1, 10**6)),
            n=1 if sampling == "greedy" else draw(st.integers(1, 16)), sampling=sampling,
            priority=draw(st.integers(-5, 5)), prefix_group=group,
            prefix_tokens=0 if group is None else draw(st.integers(0, prompt)),
            hash_ids=draw(st.none() | st.lists(st.integers(0, 2**40), min_size=1, max_size=4).map(tuple)),
        ))
    return out


@given(requests_lists())
def test_native_files_round_trip_any_valid_trace(tmp_path_factory: pytest.TempPathFactory,
                                                  reqs: list[Request]) -> None:
    trace = Trace(reqs)
    folder = tmp_path_factory.mktemp("rt")
    trace.to_csv(folder / "t.csv")
    trace.to_jsonl(folder / "t.jsonl")
    assert load(folder / "t.csv").requests == trace.requests
    assert load(folder / "t.jsonl").requests == trace.requests
