"""Vectorized column checks: a million rows are checked in numpy, and the first bad one is named as
`source:line: field: reason` (one line, no traceback; the reporting is `traces.problems`)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from traces.problems import Problems, shown
from traces.request import DEFAULTS, MAX_ARRIVAL_S, MAX_INT, MAX_TOKENS, SAMPLING_MODES

# A time column's absolute values (in seconds) stay below this: epoch seconds up to the year 5138 pass,
# epoch milliseconds and finer do not (they would lose their precision as float seconds).
MAX_ABS_SECONDS = 1e11


def _booleans(col: pd.Series) -> np.ndarray:
    """Cells holding a JSON `true`/`false`, which pandas would otherwise count as 1 and 0."""
    if pd.api.types.is_bool_dtype(col.dtype):
        return np.ones(len(col), dtype=bool)
    if col.dtype == object:
        return np.fromiter((isinstance(v, (bool, np.bool_)) for v in col.to_numpy()), dtype=bool, count=len(col))
    return np.zeros(len(col), dtype=bool)


def int_column(
    col: pd.Series, field: str, problems: Problems, *, minimum: int | None, maximum: int = MAX_INT,
    default: int | None = None, noun: str = "value",
) -> np.ndarray:
    """Integers such as token counts. Empty cells take `default` where there is one, else are errors;
    so are text, fractions, values below `minimum` and values above `maximum` (however they are
    spelled: `1e18` and `1000000000000000000` are the same number and meet the same limit)."""
    if pd.api.types.is_integer_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        raw = col.to_numpy()  # int64 or uint64: compared in its own type, never wrapped
        huge, below, negative = raw > maximum, raw < -maximum, raw < 0
    else:
        problems.flag(_booleans(col), field, lambda p: f"not a number: {shown(col.iloc[p])} (a boolean)")
        numeric = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
        missing = col.isna().to_numpy()
        if default is not None:
            numeric = np.where(missing, float(default), numeric)
            missing = np.zeros_like(missing)
        problems.flag(missing, field, lambda p: "missing value")
        problems.flag(np.isnan(numeric) & ~missing, field, lambda p: f"not a number: {shown(col.iloc[p])}")
        finite = np.isfinite(numeric)
        problems.flag(~finite & ~np.isnan(numeric), field, lambda p: f"not a finite number: {shown(col.iloc[p])}")
        with np.errstate(invalid="ignore"):
            fractional = finite & (numeric != np.floor(numeric))
            huge, below, negative = finite & (numeric > maximum), finite & (numeric < -maximum), finite & (numeric < 0)
        problems.flag(fractional, field, lambda p: f"not an integer: {shown(col.iloc[p])}")
        raw = np.where(finite, numeric, 0.0)
    values = np.where(huge | below, 0, raw).astype(np.int64)  # out-of-range cells are reported, never cast
    problems.flag(huge, field, lambda p: f"too large: {shown(col.iloc[p])} (a {noun} is at most {maximum})")
    if minimum is None:
        problems.flag(below, field, lambda p: f"too small: {shown(col.iloc[p])} (a {noun} is at least {-maximum})")
    if minimum is not None and minimum >= 0:
        problems.flag(negative, field, lambda p: f"negative {noun}: {shown(col.iloc[p])}")
    if minimum is not None and minimum > 0:
        problems.flag(values < minimum, field, lambda p: f"must be >= {minimum}, got {values[p]}")
    return values


def token_column(col: pd.Series, field: str, problems: Problems, *, minimum: int) -> np.ndarray:
    """Token counts: integers in [minimum, MAX_TOKENS]."""
    return int_column(col, field, problems, minimum=minimum, maximum=MAX_TOKENS, noun="token count")


def _epoch_hint(value: float) -> str:
    """What unit a far too large time probably is: epoch times of today are about 1.7e9 s, 1.7e12 ms,
    1.7e15 us and 1.7e18 ns."""
    for scale, unit in ((1e17, "nanoseconds"), (1e14, "microseconds"), (1e11, "milliseconds")):
        if scale <= abs(value) < 1000 * scale:
            return f"; it looks like epoch {unit}"
    return ""


def seconds_column(col: pd.Series, field: str, problems: Problems, per_second: float = 1.0) -> np.ndarray:
    """Times as numbers, `per_second` of them to a second (1: seconds, 1e3: milliseconds): finite,
    not negative, and below `MAX_ABS_SECONDS` seconds (a time in a finer unit than the column's is
    refused with the unit it looks like)."""
    numeric = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
    missing = col.isna().to_numpy()
    unit = "seconds" if per_second == 1.0 else "milliseconds" if per_second == 1e3 else f"1/{per_second:g} s"
    problems.flag(missing, field, lambda p: "missing value")
    problems.flag(_booleans(col), field, lambda p: f"not a number: {shown(col.iloc[p])} (a boolean)")
    problems.flag(np.isnan(numeric) & ~missing, field, lambda p: f"not a number: {shown(col.iloc[p])}")
    problems.flag(np.isinf(numeric), field, lambda p: f"not a finite number: {shown(col.iloc[p])}")
    problems.flag(numeric < 0, field, lambda p: f"negative time: {shown(col.iloc[p])}")
    with np.errstate(invalid="ignore"):
        huge = np.isfinite(numeric) & (numeric / per_second >= MAX_ABS_SECONDS)
    problems.flag(huge, field, lambda p: f"too large for a time in {unit}: {shown(col.iloc[p])}"
                  f"{_epoch_hint(numeric[p])}; give {unit}")
    return np.where(np.isfinite(numeric) & ~huge, numeric, 0.0)


def arrival_span(seconds: np.ndarray, field: str, problems: Problems) -> None:
    """Arrivals (seconds from the first request) must stay within `MAX_ARRIVAL_S`."""
    late = seconds > MAX_ARRIVAL_S
    problems.flag(late, field, lambda p: f"arrives {seconds[p]:.4g} s after the first request; a trace spans "
                  f"at most {MAX_ARRIVAL_S:.0e} s (about 3 years): is the column in the right unit?")


# A UTC offset after the time of day, as ISO 8601 parsing accepts it: Z, +05:00, +0500 or +05 (a date's
# own `-16` is not one: the offset must follow a time, after its `T` or space).
UTC_OFFSET = r"[T ]\d[\d:.,]*\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def timestamp_column(col: pd.Series, field: str, problems: Problems) -> np.ndarray:
    """Wall-clock timestamps such as `2023-11-16 18:17:03.9799600` (up to 9 fractional digits, an
    optional UTC offset), as int64 nanoseconds. Either every timestamp has an offset or none has:
    a time without one would be read as UTC, so a mix moves some requests by hours, silently."""
    missing = col.isna().to_numpy()
    problems.flag(missing, field, lambda p: "missing value")
    parsed = _parse_one_zone(col)
    agreed = parsed is not None
    if not agreed:  # a mix of offsets and none, or different offsets (real instants): read all as UTC
        parsed = pd.to_datetime(col, format="ISO8601", errors="coerce", utc=True)
    bad = parsed.isna().to_numpy() & ~missing
    problems.flag(bad, field, lambda p: f"not a timestamp: {shown(col.iloc[p])} "
                  "(expected e.g. 2023-11-16 18:17:03.9799600)")
    if not agreed:
        _offsets_all_or_none(col, ~missing & ~bad, field, problems)
    return parsed.to_numpy("datetime64[ns]", na_value=np.datetime64(0, "ns")).view(np.int64)


def _parse_one_zone(col: pd.Series) -> pd.Series | None:
    """The timestamps in UTC when they agree on their offset (all without one, read as UTC, or all with the
    same): one parse, the common case. None where pandas refuses a mix unless told `utc=True`."""
    with warnings.catch_warnings():  # pandas 2.x warns (and returns objects) where 3.x raises
        warnings.simplefilter("ignore", FutureWarning)
        try:
            parsed = pd.to_datetime(col, format="ISO8601", errors="coerce")
        except (ValueError, TypeError, OverflowError):
            return None
    if not isinstance(parsed.dtype, (np.dtype, pd.DatetimeTZDtype)) or parsed.dtype.kind != "M":
        return None
    return parsed.dt.tz_convert("UTC") if parsed.dt.tz is not None else parsed


def _offsets_all_or_none(col: pd.Series, valid: np.ndarray, field: str, problems: Problems) -> None:
    """Flag the first valid timestamp whose having a UTC offset differs from the first valid one's (the
    timestamps did not parse in one zone: a mix, or different offsets, which are real instants)."""
    if not valid.any():
        return
    has_offset = col.astype(str).str.strip().str.contains(UTC_OFFSET, regex=True).to_numpy(bool) & valid
    first = int(np.argmax(valid))
    line = problems.locator.lines[first]
    if has_offset[first]:
        problems.flag(valid & ~has_offset, field, lambda p: f"no UTC offset, but line {line} has one "
                      f"({shown(col.iloc[first])}); give every timestamp an offset, or none")
    else:
        problems.flag(has_offset, field, lambda p: f"has a UTC offset ({shown(col.iloc[p])}), but line {line} "
                      "has none; give every timestamp an offset, or none")


def text_column(col: pd.Series, default: str | None) -> np.ndarray:
    """Text cells as an object array of str; empty cells become `default`."""
    missing = col.isna().to_numpy()
    values = col.to_numpy(dtype=object, na_value=None).copy()
    values[missing] = default
    if not isinstance(col.dtype, pd.StringDtype) and not all(v is None or isinstance(v, str) for v in values):
        values = np.array([v if v is None or isinstance(v, str) else str(v) for v in values], dtype=object)
    return values


def row_ids(num_rows: int) -> np.ndarray:
    """Default request ids: the 0-based row index as text."""
    return np.array(list(map(str, range(num_rows))), dtype=object)


def ids_column(col: pd.Series | None, num_rows: int, field: str, problems: Problems) -> np.ndarray:
    """Request ids as strings; absent ids default to the 0-based row index. Ids must be unique."""
    if col is None:
        return row_ids(num_rows)
    missing = col.isna().to_numpy()
    problems.flag(missing, field, lambda p: "missing value")
    ids = col.astype(str).to_numpy(object).copy()
    ids[missing] = ""
    duplicated = pd.Series(ids).duplicated().to_numpy() & ~missing
    problems.flag(duplicated, field, lambda p: f"duplicate id {shown(ids[p])}")
    return ids


def hash_ids_column(col: pd.Series, field: str, problems: Problems) -> np.ndarray:
    """Per-row tuples of block hash ids, from lists (JSON) or space-separated text (CSV). Equal ids are one
    int object across the column (each row parses its own), so that cache keys built from them compare by
    identity: the prefix cache's lookups compare key slices (`memory.pieces`)."""
    out = np.full(len(col), None, dtype=object)
    interned: dict[int, int] = {}
    bad = np.zeros(len(col), dtype=bool)
    values = col.to_numpy(dtype=object)
    present = np.flatnonzero(~col.isna().to_numpy())  # most rows of most traces have none
    for pos in present.tolist():
        value = values[pos]
        try:
            if isinstance(value, str):
                ids = tuple(map(int, value.split()))
            elif isinstance(value, (list, tuple, np.ndarray)):
                if set(map(type, value)) <= {int}:  # the common case, checked at C speed
                    ids = tuple(value)
                elif all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) for h in value):
                    ids = tuple(int(h) for h in value)  # numpy integers from a DataFrame
                else:
                    raise TypeError  # bools, floats, text
            else:
                raise TypeError
            if ids and min(ids) < 0:
                raise ValueError
            out[pos] = tuple(map(interned.setdefault, ids, ids)) or None  # none named: as no hash ids
        except (TypeError, ValueError):
            bad[pos] = True
    problems.flag(bad, field, lambda p: f"not a list of non-negative integers: {shown(col.iloc[p])}")
    return out


def request_rules(cols: dict[str, np.ndarray], problems: Problems) -> None:
    """The cross-field rules of `Request`, column-wise."""
    sampling, n = cols["sampling"], cols["n"]
    known = np.isin(sampling, SAMPLING_MODES)
    problems.flag(~known, "sampling", lambda p: f"unknown mode {shown(sampling[p])} "
                  f"(expected one of {', '.join(SAMPLING_MODES)})")
    problems.flag((sampling == "greedy") & (n != 1), "n",
                  lambda p: f"greedy sampling decodes one sequence, got n={n[p]}")
    prefix, prompt, group = cols["prefix_tokens"], cols["prompt_tokens"], cols["prefix_group"]
    problems.flag(prefix > prompt, "prefix_tokens",
                  lambda p: f"must be <= prompt_tokens={prompt[p]}, got {prefix[p]}")
    no_group = np.array([g is None for g in group], dtype=bool) if len(group) else np.zeros(0, bool)
    problems.flag((prefix > 0) & no_group, "prefix_tokens", lambda p: "a shared prefix needs a prefix_group")


def native_columns(frame: pd.DataFrame, problems: Problems) -> dict[str, np.ndarray]:
    """Validated columns of a table in the native schema (field names as columns; only arrival_s,
    prompt_tokens and output_tokens are required, request_id defaults to the row index)."""
    num_rows = len(frame)
    cols: dict[str, np.ndarray] = {
        "request_id": ids_column(frame.get("request_id"), num_rows, "request_id", problems),
        "arrival_s": seconds_column(frame["arrival_s"], "arrival_s", problems),
        "prompt_tokens": token_column(frame["prompt_tokens"], "prompt_tokens", problems, minimum=1),
        "output_tokens": token_column(frame["output_tokens"], "output_tokens", problems, minimum=1),
    }
    for name in ("n", "priority", "prefix_tokens"):
        default = int(DEFAULTS[name])  # type: ignore[arg-type]
        if name in frame:
            minimum = {"n": 1, "priority": None, "prefix_tokens": 0}[name]
            maximum = MAX_TOKENS if name == "prefix_tokens" else MAX_INT
            cols[name] = int_column(frame[name], name, problems, minimum=minimum, maximum=maximum, default=default)
        else:
            cols[name] = np.full(num_rows, default, dtype=np.int64)
    cols["sampling"] = (text_column(frame["sampling"], "greedy") if "sampling" in frame
                        else np.full(num_rows, "greedy", dtype=object))
    cols["prefix_group"] = (text_column(frame["prefix_group"], None) if "prefix_group" in frame
                            else np.full(num_rows, None, dtype=object))
    cols["hash_ids"] = (hash_ids_column(frame["hash_ids"], "hash_ids", problems) if "hash_ids" in frame
                        else np.full(num_rows, None, dtype=object))
    request_rules(cols, problems)
    return cols
