"""Reading trace files into tables whose rows remember their file line, so every error can name it."""
from __future__ import annotations

import csv
import gzip
import json
import re
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import pandas as pd

from traces.problems import Locator, error


@dataclass(frozen=True)
class Header:
    """The first non-blank line of a file: CSV column names, or the keys of the first JSON object."""

    kind: str  # "csv" or "jsonl"
    line: int  # 1-based line number of the header (CSV) or of the first JSON object
    columns: tuple[str, ...]


def open_text(path: Path) -> IO[str]:
    """Text of a trace file; `.gz` files are decompressed. A BOM is dropped."""
    if path.suffix == ".gz":
        with open(path, "rb") as raw:
            magic = raw.read(2)
        if magic != b"\x1f\x8b":
            raise error(f"{path}:1", "file", f"not gzip data although the name ends in .gz (it starts with {magic!r}); "
                        "rename it without .gz if it is plain text")
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, "r", encoding="utf-8-sig", newline="")


def open_bytes(path: Path) -> IO[bytes]:
    """The bytes of a trace file, decompressed for `.gz`."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> ValueError:
    """Names the first line that is not UTF-8 (the decoder only knows a byte offset in its chunk)."""
    with open_bytes(path) as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                return error(f"{path}:{number}", "file", f"not UTF-8 text ({bad.reason} at byte {bad.start} of the line)")
    return error(f"{path}:1", "file", f"not UTF-8 text ({exc.reason})")


@contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """A broken compressed stream or undecodable text as one line naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise error(f"{path}:{_last_line(path)}", "file", f"corrupt gzip data ({exc})") from None


def _last_line(path: Path) -> int:
    """The line a broken compressed stream breaks off in."""
    number = 1
    try:
        with gzip.open(path, "rb") as f:
            for number, _ in enumerate(f, start=1):
                pass
    except (EOFError, zlib.error, OSError):
        pass
    return number


def read_header(path: Path) -> Header:
    with _read_errors(path), open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                return Header("jsonl", number, tuple(parse_json_line(path, number, line)))
            if line.lstrip().startswith("["):
                # A JSON document such as ShareGPT's conversations: text, not token counts.
                raise error(f"{path}:{number}", "file", "a JSON array (such as ShareGPT's conversations), not a trace: "
                            "a trace gives each request's token counts, as CSV or as JSON lines (one object a line); "
                            "for ShareGPT-like lengths use `pagedlab trace gen --lengths sharegpt`")
            try:
                return Header("csv", number, tuple(c.strip() for c in next(csv.reader([line]))))
            except csv.Error as exc:  # e.g. a NUL byte
                raise error(f"{path}:{number}", "header", f"not a CSV header ({exc})") from None
    raise error(f"{path}:1", "file", "empty (no header and no requests)")


# NaN and Infinity (which Python's json reads, though JSON has no such numbers) stay text, so a token count or
# time spelled so is reported as `not a number: 'NaN'`, not taken for a missing value.
class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are all different (json keeps the last of a repeated key, silently)."""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return record


_DECODER = json.JSONDecoder(parse_constant=str, object_pairs_hook=_unique_keys)


def parse_json_line(path: Path, number: int, line: str) -> dict:
    line = line.rstrip("\r\n")  # the decoder would place an error at the end on a line of its own
    try:
        record = _DECODER.decode(line)
    except _DuplicateKey as exc:
        raise error(f"{path}:{number}", exc.key, "given twice in one JSON object (which value is meant?)") from None
    except json.JSONDecodeError as exc:
        # An object that opens and never closes was cut off (a partial download, a killed writer).
        text = line.strip()
        reason = "truncated JSON" if text.startswith("{") and not text.endswith("}") else "invalid JSON"
        raise error(f"{path}:{number}", "json", f"{reason} ({exc.msg.removesuffix(' at')} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise error(f"{path}:{number}", "json", f"expected an object, got {type(record).__name__}")
    return record


def read_csv_table(path: Path, header: Header, text_columns: tuple[str, ...]) -> tuple[pd.DataFrame, Locator, int]:
    """All rows of a CSV file, and how many blank lines were skipped. Only empty cells count as
    missing (an id such as `NA` stays text); `text_columns` are read as text, never as numbers."""
    seen: set[str] = set()
    for name in header.columns:  # pandas would rename the second `x` to `x.1` and read only the first
        if name in seen and name:
            raise error(f"{path}:{header.line}", name, "column given twice in the header")
        seen.add(name)
    try:
        with _read_errors(path), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mixed-type columns are reported by the checks instead
            frame = pd.read_csv(
                path, header=header.line - 1, skip_blank_lines=False, keep_default_na=False,
                na_values=[""], dtype={c: str for c in text_columns if c in header.columns},
                low_memory=False, encoding="utf-8-sig",
            )
    except pd.errors.ParserError as exc:
        raise _parser_error(path, exc, header) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    lines = np.arange(header.line + 1, header.line + 1 + len(frame), dtype=np.int64)
    blank = _blank_rows(frame)
    if blank.any():
        frame = frame.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    return frame, Locator(str(path), lines), int(blank.sum())


def _blank_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose cells are all empty or whitespace: blank lines, not requests."""
    blank = frame.isna().all(axis=1).to_numpy().copy()
    # Only a row whose first cell is text can be a line of spaces (the other cells are then empty).
    first = frame.iloc[:, 0] if frame.shape[1] else pd.Series([], dtype=object)
    if not pd.api.types.is_numeric_dtype(first.dtype):
        rest_empty = frame.iloc[:, 1:].isna().all(axis=1).to_numpy()
        candidates = np.flatnonzero(rest_empty & ~blank)
        for pos in candidates.tolist():
            if isinstance(first.iloc[pos], str) and not first.iloc[pos].strip():
                blank[pos] = True
    return blank


def _parser_error(path: Path, exc: Exception, header: Header) -> ValueError:
    text = str(exc)
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if found:
        expected, line, saw = found.groups()
        return error(f"{path}:{line}", "row", f"expected {expected} fields, saw {saw}")
    found = re.search(r"EOF inside string starting at row (\d+)", text)
    if found:  # rows count from 0 at the top of the file
        return error(f"{path}:{int(found.group(1)) + 1}", "row", 'a quoted value (") never closes')
    found = re.search(r"line (\d+)", text)
    line = found.group(1) if found else header.line
    return error(f"{path}:{line}", "row", " ".join(text.split()[-12:]))


def read_jsonl_table(path: Path) -> tuple[pd.DataFrame, Locator, int]:
    """All objects of a JSON-lines file, and how many blank lines were skipped."""
    records: list[dict] = []
    lines: list[int] = []
    blank = 0
    with _read_errors(path), open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                blank += 1
                continue
            records.append(parse_json_line(path, number, line))
            lines.append(number)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    # Lists (hash ids) and mixed values must stay Python objects, not be coerced per column.
    return frame, Locator(str(path), np.asarray(lines, dtype=np.int64)), blank
