"""The text of `DataFrame.to_csv(index=False)`, written faster (`write_csv`).

A table of integers and nanosecond times (the steps table: times are whole ns divided by 1e9) is written
by numpy as one byte matrix, a line per row, with no Python object per value: about 4x faster than the
one %-format per row that any other table still takes (text columns, NaN, other floats). Floats
are written as `repr` (their shortest round-trip form, as pandas writes them); for nanosecond times that
text is the decimal of the integer (`_whole_ns` says why).
"""
from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np
import pandas as pd

__all__ = ["CSV_CHUNK_ROWS", "write_csv"]

CSV_CHUNK_ROWS = 8192  # rows formatted at a time: the text and Python values of a chunk, not of the table
_NS = 1_000_000_000
# repr is fixed-point from 1e-4 up (exponent notation below), and a decimal of at most 15 significant
# digits is the shortest round-trip form of the double nearest to it (DBL_DIG = 15).
_NS_MIN, _NS_END = 100_000, 10**15


def write_csv(frame: pd.DataFrame, f: BinaryIO) -> None:
    """`frame.to_csv(f, index=False)`, the same bytes: floats as `repr`, NaN as an empty field, text
    quoted only when it holds a comma, quote or line break. Rows are formatted `CSV_CHUNK_ROWS` at a time,
    so that a long steps table does not hold its whole text and a Python object per cell at once. A table
    of integers and nanosecond times (the steps table) is written as digits by numpy, with no Python
    object per value."""
    header = ",".join(_field(str(c)) for c in frame.columns)
    f.write((header + "\n").encode())
    arrays = [frame[name].to_numpy() for name in frame.columns]
    parts = [_digit_parts(values) for values in arrays]
    if all(p is not None for p in parts):
        for start in range(0, len(frame), CSV_CHUNK_ROWS):
            f.write(_digit_rows([[(fn, v[start:start + CSV_CHUNK_ROWS]) for fn, v in p] for p in parts]))  # type: ignore[union-attr]
        return
    _write_rows(arrays, f, len(frame))


def _write_rows(arrays: list[np.ndarray], f: BinaryIO, num_rows: int) -> None:
    """The general case: one %-format of Python values per row."""
    columns: list[Any] = []
    formats: list[str] = []
    for values in arrays:
        kind = values.dtype.kind
        parts = _ns_decimal(values) if kind == "f" else None
        if parts is not None:
            formats.append("%d.%0*d")
            columns += parts
        elif kind == "f" and not np.isnan(values).any():
            formats.append("%r")
            columns.append(values)
        elif kind in "iu":
            formats.append("%d")
            columns.append(values)
        else:
            formats.append("%s")
            columns.append([_field(v) for v in values.tolist()])
    row = ",".join(formats)
    for start in range(0, num_rows, CSV_CHUNK_ROWS):
        chunk = [c[start:start + CSV_CHUNK_ROWS] for c in columns]
        chunk = [c.tolist() if isinstance(c, np.ndarray) else c for c in chunk]
        f.write(("\n".join(map(row.__mod__, zip(*chunk))) + "\n").encode())


# ---- digits by numpy ---------------------------------------------------------------------------------
_PAD = 0  # a byte that is no character of the text: dropped at the end


def _digit_parts(values: np.ndarray) -> list[tuple[str, np.ndarray]] | None:
    """How a column is written as digits: ("int", values) or, for nanosecond times, ("int", whole
    seconds), ("dot", ...), ("frac", fraction in ns). None if it cannot be (text, NaN, other floats,
    integers outside int64)."""
    kind = values.dtype.kind
    if kind == "f":
        ns = _whole_ns(values)
        if ns is None:
            return None
        whole, frac = np.divmod(ns, _NS)
        return [("int", whole), ("frac", frac)]
    if kind == "i" or (kind == "u" and (not len(values) or values.max() <= np.iinfo(np.int64).max)):
        values = values.astype(np.int64, copy=False)
        if len(values) and values.min() == np.iinfo(np.int64).min:
            return None
        return [("int", values)]
    return None


def _digit_rows(columns: list[list[tuple[str, np.ndarray]]]) -> bytes:
    """The CSV text of rows given as digit parts: one byte matrix, a line per row, pads dropped."""
    n = len(columns[0][0][1])
    widths = [[_width(kind, values) for kind, values in parts] for parts in columns]
    text = np.full((n, sum(map(sum, widths)) + len(columns)), _PAD, dtype=np.uint8)
    at = 0
    for i, (parts, sizes) in enumerate(zip(columns, widths)):
        if i:
            text[:, at] = ord(",")
            at += 1
        for (kind, values), width in zip(parts, sizes):
            if kind == "int":
                _int_chars(values, text[:, at:at + width])
            else:
                text[:, at] = ord(".")
                _fraction_chars(values, text[:, at + 1:at + width])
            at += width
    text[:, at] = ord("\n")
    flat = text.ravel()
    return flat[flat != _PAD].tobytes()


def _width(kind: str, values: np.ndarray) -> int:
    if kind == "frac":
        return 10  # the point and nine digits
    top = int(values.max()) if len(values) else 0
    low = int(values.min()) if len(values) else 0
    return max(len(str(top)), len(str(low)))  # a sign counts


def _int_chars(values: np.ndarray, out: np.ndarray) -> None:
    """Each integer as `%d` text, right-aligned in `out` (pads before it). Digits come from repeated
    division by the scalar 10 (fast in numpy), right to left."""
    rest = np.abs(values)
    negative = values < 0
    signs = bool(negative.any())
    last = out.shape[1] - 1
    for j in range(last, -1, -1):
        quotient = rest // 10
        digit = (rest - quotient * 10 + ord("0")).astype(np.uint8)
        if j < last:
            gone = rest == 0
            digit[gone] = _PAD  # a leading zero
            if signs:  # the sign right before the first digit
                digit[negative & gone] = ord("-")
                negative &= ~gone
        out[:, j] = digit
        rest = quotient


def _fraction_chars(ns: np.ndarray, out: np.ndarray) -> None:
    """The nine digits of each fraction (in ns) into `out`; trailing zeros left as pads, but the first
    digit always written."""
    rest = ns
    trailing = np.ones(len(ns), dtype=bool)  # only zeros right of here
    for j in range(8, -1, -1):
        quotient = rest // 10
        digit = rest - quotient * 10
        chars = (digit + ord("0")).astype(np.uint8)
        if j:
            trailing &= digit == 0
            chars[trailing] = _PAD
        out[:, j] = chars
        rest = quotient


def _whole_ns(values: np.ndarray) -> np.ndarray | None:
    """`ns` if the floats are each exactly `ns / 1e9` (the double nearest to it) for whole `ns` in
    [1e5, 1e15) or 0; else None. Then `repr` of each is the decimal ns * 1e-9 without trailing zeros
    ("1.5", "2.0"): it has at most 15 significant digits, and no other decimal of that many digits or
    fewer has the same nearest double, so it is the shortest round-trip form."""
    if not len(values) or np.signbit(values).any() or not np.isfinite(values).all():
        return None
    if values.max() >= _NS_END / _NS:
        return None
    ns = np.rint(values * _NS).astype(np.int64)
    if not np.array_equal(ns / _NS, values) or ((ns > 0) & (ns < _NS_MIN)).any():
        return None
    return ns


def _ns_decimal(values: np.ndarray) -> list[np.ndarray] | None:
    """For nanosecond times (`_whole_ns`): whole seconds, digits of the fraction and the fraction without
    its trailing zeros, so that `"%d.%0*d"` of them is `repr` of the float. None for any other column."""
    ns = _whole_ns(values)
    if ns is None:
        return None
    whole, frac = np.divmod(ns, _NS)
    zeros = np.zeros(len(ns), dtype=np.int64)
    for k in range(1, 9):  # trailing zeros of the 9-digit fraction, at most 8 (0 is written "0")
        zeros[frac % 10**k == 0] = k
    return [whole, 9 - zeros, frac // 10**zeros]


def _field(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = repr(value) if isinstance(value, float) else str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text
