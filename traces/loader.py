"""`load(path)`: any supported trace file into a `Trace`, refusing bad input with one precise line and
counting every row it leaves out."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from traces.formats import FORMAT_SPECS, FORMATS, FormatSpec, LoadOptions, detect
from traces.arrivals import ArrivalSpec
from traces.reading import Header, open_bytes, read_csv_table, read_header, read_jsonl_table
from traces.request import HASH_BLOCK_TOKENS
from traces.trace import Trace, sort_by_arrival
from traces.problems import Locator, Problems, error
from traces.validate import arrival_span, row_ids


def _separator_hint(columns: tuple[str, ...]) -> str:
    """A one-column header holding tabs or semicolons is a file separated by them, not by commas."""
    if len(columns) != 1:
        return ""
    for mark, name in (("\t", "tabs"), (";", "semicolons"), ("|", "bars")):
        if mark in columns[0]:
            return f"; the header is separated by {name}: a CSV trace is comma-separated"
    return ""


def _spec_for(path: Path, format: str, kind: str, columns: tuple[str, ...], line: int) -> FormatSpec:
    if format == "auto":
        spec = detect(kind, columns)
        if spec is None and "conversations" in columns:  # ShareGPT as JSON lines: text, not token counts
            raise error(f"{path}:{line}", "header", "ShareGPT conversations (text), not a trace: a trace gives each "
                        "request's token counts; for ShareGPT-like lengths use `pagedlab trace gen --lengths sharegpt`")
        if spec is None:
            shown = ", ".join(columns[:8]).replace("\t", "\\t") + (", ..." if len(columns) > 8 else "")
            raise error(f"{path}:{line}", "header", f"unknown trace format (columns: {shown}); "
                        f"known formats: {', '.join(FORMATS)}{_separator_hint(columns)}")
        return spec
    spec = FORMAT_SPECS[format]
    if spec.kind != kind:
        found = "JSON lines" if kind == "jsonl" else "CSV"
        raise error(f"{path}:{line}", "file", f"{spec.name} is a {spec.kind.upper()} format, found {found}")
    return spec


def _cut_off_hint(exc: ValueError, path: Path, locator: Locator) -> ValueError:
    """A problem on the last line of a file that ends without a line break: the file was probably cut off
    (a partial download, a killed writer), which the bare message does not say."""
    if not len(locator.lines) or not str(exc).startswith(f"{locator.where(len(locator.lines) - 1)}: "):
        return exc
    with open_bytes(path) as f:
        try:
            f.seek(-1, 2)
            last = f.read(1)
        except (OSError, ValueError):  # gzip streams cannot seek from the end: read through
            last = b""
            for chunk in iter(lambda: f.read(1 << 20), b""):
                last = chunk[-1:]
    if last in (b"\n", b"\r"):
        return exc
    return ValueError(f"{exc} (the last line has no line break: the file looks cut off)")


# How `pagedlab`'s commands take arrivals for a length-only trace (traces.options.add_arrival_options).
ARRIVALS_OPTION = "--arrivals poisson:RATE, gamma:RATE:CV or constant:RATE"


def _header_and_spec(path: Path, format: str) -> tuple[Header, FormatSpec]:
    """The file's header and the format spec it is read with; a missing file or unknown format is refused."""
    if format != "auto" and format not in FORMAT_SPECS:
        raise error(str(path), "format", f"unknown format {format!r}; expected auto or one of {', '.join(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: file: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: file: is a directory, not a trace file")
    header = read_header(path)
    return header, _spec_for(path, format, header.kind, header.columns, header.line)


def is_timed(path: str | Path, format: str = "auto") -> bool:
    """Whether the file has arrival times (False: a length-only file, such as Vidur's processed traces)."""
    header, spec = _header_and_spec(Path(path), format)
    return spec.arrival_column in header.columns


def load(path: str | Path, format: str = "auto", *, model: str | None = None,
         log_type: str | None = None, arrivals: ArrivalSpec | str | None = None, seed: int = 0,
         arrivals_hint: str = ARRIVALS_OPTION, untimed_at_zero: bool = False) -> Trace:
    """Read a trace file. `format` is "auto" (recognised from the header) or one of `FORMATS`.

    Arrivals count from the first request, which arrives at 0. Rows are sorted stably by arrival if
    they were not. `model` / `log_type` filter BurstGPT traces. A length-only file (no arrival
    column) needs `arrivals` (e.g. "poisson:2"), drawn with `seed`, for the requests in file order;
    given for a timed file, they replace its arrival times. Skipped rows (failed requests, zero
    token counts, filters, blank lines) are counted in `trace.skipped` and `trace.notices`. Bad input
    raises ValueError `path:line: field: reason`; a length-only file without `arrivals` names
    `arrivals_hint`, how the caller's users give them (`pagedlab`'s `--arrivals` option by default),
    unless `untimed_at_zero`, for a caller that needs lengths only (`trace stats`): then every request
    arrives at 0, with a notice.
    """
    if isinstance(arrivals, str):
        arrivals = ArrivalSpec.parse(arrivals)
    path = Path(path)
    header, spec = _header_and_spec(path, format)
    timed = spec.arrival_column in header.columns
    for name in spec.required:
        if name not in header.columns and not (name == spec.arrival_column and spec.lengths_only):
            raise error(f"{path}:{header.line}", name,
                        f"missing column ({spec.name} needs {', '.join(spec.required)})")
    if not timed and arrivals is None and not untimed_at_zero:
        raise error(f"{path}:{header.line}", spec.arrival_column,
                    f"missing column: this trace has lengths only; give it arrival times with {arrivals_hint}")
    options = LoadOptions(model=model, log_type=log_type)
    if spec.name != "burstgpt" and (model is not None or log_type is not None):
        raise error(str(path), "filter", f"model / log type filters apply to burstgpt traces, this is {spec.name}")

    if spec.kind == "csv":
        frame, locator, blank = read_csv_table(path, header, spec.text_columns)
    else:
        frame, locator, blank = read_jsonl_table(path)
    if len(frame) == 0:
        raise error(f"{path}:{header.line + 1}", "rows", "no requests (the file has only a header)")
    # A JSON object missing a required key is a missing value on its line, not a missing column.
    for name in spec.required:
        if name not in frame.columns and (timed or name != spec.arrival_column):
            frame[name] = None

    problems = Problems(locator)
    parsed = spec.adapter(frame, problems, options)
    try:
        problems.raise_first()
    except ValueError as exc:
        raise _cut_off_hint(exc, path, locator) from None
    if spec.name not in ("native-csv", "native-jsonl"):
        # Ids default to the 0-based index of the data row in the file (native files may name them).
        parsed.cols["request_id"] = row_ids(len(frame))

    notices: list[str] = [f"read as {spec.name}"]
    skipped: dict[str, int] = {}
    if blank:
        notices.append(f"ignored {blank} blank lines")
    unknown = [c for c in frame.columns if c not in (*spec.required, *spec.optional)]
    if unknown:
        # pandas names a header cell left empty (a trailing comma) `Unnamed: 3`: say what it is
        unnamed = [re.fullmatch(r"Unnamed: (\d+)", str(c)) for c in unknown]
        shown = [f"column {int(m.group(1)) + 1} (no name)" if m else str(c) for c, m in zip(unknown, unnamed)]
        notices.append(f"ignored columns: {', '.join(shown)}")
    keep = np.ones(len(frame), dtype=bool)
    for reason, mask in parsed.skips:
        newly = mask & keep
        if newly.any():
            skipped[reason] = int(newly.sum())
            notices.append(f"skipped {int(newly.sum())} {reason}")
            keep &= ~newly
    if not keep.any():
        left_out = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
        raise error(f"{path}:{header.line + 1}", "rows", f"no requests left after skipping {left_out}")

    cols = {name: values[keep] for name, values in parsed.cols.items()}
    kept_locator = locator.take(keep)
    if arrivals is not None:
        cols["arrival_s"] = arrivals.times(int(keep.sum()), seed)
        field = "arrivals"
        notices.append(f"{'replaced the recorded arrival times by' if timed else 'no arrival times: drew'} "
                       f"{arrivals.describe()} (seed {seed}), in file order")
    elif not timed:
        cols["arrival_s"] = np.zeros(int(keep.sum()))
        field = "arrivals"
        notices.append(f"no arrival times (lengths only): every request counted at 0 s; {arrivals_hint} draws them")
    else:
        arrival = parsed.arrival[keep]
        start = arrival.min()
        cols["arrival_s"] = (arrival - start) / parsed.per_second
        field = spec.arrival_column
        if parsed.origin == "timestamp":
            notices.append(f"time 0 is the first request's timestamp {pd.Timestamp(int(start))}")
        elif start != 0:
            notices.append(f"arrivals shifted by -{start / parsed.per_second:g} s so the first request arrives at 0")
    span = Problems(kept_locator)
    arrival_span(cols["arrival_s"], field, span)
    span.raise_first()

    mismatch = hash_id_mismatch(cols, kept_locator)
    if mismatch:
        notices.append(mismatch)

    seconds = cols["arrival_s"]
    late = seconds[1:] < np.maximum.accumulate(seconds)[:-1]
    if late.any():
        first = kept_locator.where(int(np.argmax(late)) + 1)
        cols, out_of_order = sort_by_arrival(cols)
        notices.append(f"arrivals out of order ({out_of_order} rows arrived before an earlier row, "
                       f"first at {first}); sorted stably by arrival")
    return Trace._from_columns(cols, source=str(path), notices=notices, skipped=skipped)


def hash_id_mismatch(cols: dict[str, np.ndarray], locator: Locator) -> str | None:
    """A notice when requests list hash ids for another number of 512-token blocks than their prompt has
    (Mooncake lists one per block): the prefix cache keys only the blocks both cover."""
    hash_ids = cols["hash_ids"]
    listed = np.fromiter((-1 if h is None else len(h) for h in hash_ids), dtype=np.int64, count=len(hash_ids))
    blocks = -(-cols["prompt_tokens"] // HASH_BLOCK_TOKENS)
    off = (listed >= 0) & (listed != blocks)
    if not off.any():
        return None
    first = int(np.argmax(off))
    return (f"{int(off.sum())} requests list hash ids for another number of {HASH_BLOCK_TOKENS}-token blocks than "
            f"their prompt has (first at {locator.where(first)}: {listed[first]} ids for {blocks[first]} blocks); "
            f"blocks past the listed ids are not cached, extra ids are unused")
