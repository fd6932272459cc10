"""`sim.csv_text.write_csv` (as `sim.result.write_csv`) writes the text of `DataFrame.to_csv(index=False)`, however many chunks it takes."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from sim import csv_text, result


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 8192])
def test_write_csv_is_pandas_text_in_any_chunking(monkeypatch: pytest.MonkeyPatch, chunk_rows: int) -> None:
    rng = np.random.default_rng(0)
    n = 20
    frame = pd.DataFrame({
        "step": np.arange(n, dtype=np.int64),
        "start_s": rng.random(n) * 1e3,
        "gap_s": np.where(np.arange(n) % 4 == 0, np.nan, rng.random(n)),
        "blocks": rng.integers(0, 70_000, n),
        "status": ["ok", "a,b", 'say "x"', "line\nbreak", None] * 4,
    })
    monkeypatch.setattr(csv_text, "CSV_CHUNK_ROWS", chunk_rows)
    out = io.BytesIO()
    result.write_csv(frame, out)
    assert out.getvalue() == frame.to_csv(index=False).encode()
    assert out.getvalue().count(b"\n") == n + 1 + 4  # header, rows, the quoted line breaks


def test_write_csv_of_an_empty_frame_is_its_header() -> None:
    out = io.BytesIO()
    result.write_csv(pd.DataFrame({"a": np.array([], dtype=np.int64), "b_s": np.array([], dtype=float)}), out)
    assert out.getvalue() == b"a,b_s\n"


def _times_and_counts(n: int) -> pd.DataFrame:
    """A steps-like table: integers (some negative, some large) and times that are whole ns / 1e9,
    with the edge cases of `repr`: 0, 1e-4 (its smallest fixed-point value), trailing zeros, whole seconds."""
    rng = np.random.default_rng(1)
    ns = rng.integers(100_000, 10**14, n)
    ns[:8] = [0, 100_000, 1_000_000_000, 1_500_000_000, 120, 10**15 - 1, 7_000_000, 999_999_999_999]
    ns[4] = 123_400_000  # 0.1234
    return pd.DataFrame({
        "step": np.arange(n, dtype=np.int64),
        "start_s": ns / 1e9,
        "duration_s": rng.integers(100_000, 10**9, n) // 1000 * 1000 / 1e9,
        "delta": rng.integers(-10**12, 10**12, n),
        "small": rng.integers(-3, 3, n),
        "zero": np.zeros(n, dtype=np.int64),
        "big": np.full(n, np.iinfo(np.int64).max),
        "count": rng.integers(0, 70_000, n).astype(np.uint32),
    })


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 8192])
def test_integers_and_ns_times_are_written_as_digits_with_pandas_text(monkeypatch: pytest.MonkeyPatch,
                                                                      chunk_rows: int) -> None:
    frame = _times_and_counts(50)
    monkeypatch.setattr(csv_text, "CSV_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(csv_text, "_write_rows", None)  # the per-row writer is not taken
    out = io.BytesIO()
    csv_text.write_csv(frame, out)
    assert out.getvalue() == frame.to_csv(index=False).encode()


@pytest.mark.parametrize("value", [5e-05, -0.0, 0.1 + 0.2, 1e15, -1.5])
def test_floats_that_are_no_ns_times_take_the_row_writer_with_pandas_text(value: float) -> None:
    frame = _times_and_counts(10)
    frame.loc[3, "start_s"] = value
    assert csv_text._digit_parts(frame["start_s"].to_numpy()) is None
    out = io.BytesIO()
    csv_text.write_csv(frame, out)
    assert out.getvalue() == frame.to_csv(index=False).encode()
