"""`sim.result.write_csv` writes the text of `DataFrame.to_csv(index=False)`, however many chunks it takes."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from sim import result


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
    monkeypatch.setattr(result, "CSV_CHUNK_ROWS", chunk_rows)
    out = io.BytesIO()
    result.write_csv(frame, out)
    assert out.getvalue() == frame.to_csv(index=False).encode()
    assert out.getvalue().count(b"\n") == n + 1 + 4  # header, rows, the quoted line breaks


def test_write_csv_of_an_empty_frame_is_its_header() -> None:
    out = io.BytesIO()
    result.write_csv(pd.DataFrame({"a": np.array([], dtype=np.int64), "b_s": np.array([], dtype=float)}), out)
    assert out.getvalue() == b"a,b_s\n"
