"""The trace formats pagedlab reads, how each is recognised from its header, and how its columns map
onto `Request` fields.

- native-csv / native-jsonl: the `Request` field names (arrival_s, prompt_tokens, output_tokens
  required; request_id defaults to the row index; the rest to the field defaults).
- azure: Azure LLM inference traces 2023/2024, `TIMESTAMP,ContextTokens,GeneratedTokens`, wall-clock
  timestamps such as `2023-11-16 18:17:03.9799600` (seven fractional digits).
- burstgpt: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`, seconds; rows
  with 0 response tokens are failed requests (skipped and counted); filter by Model / Log Type.
- mooncake: JSONL with `timestamp` (ms), `input_length`, `output_length`, `hash_ids` (one id per
  512-token prompt block, kept on the request for prefix-sharing work).
- vidur: `arrived_at,num_prefill_tokens,num_decode_tokens`, seconds. Vidur's processed length
  traces (e.g. arxiv-summarization) have no `arrived_at`: they load with generated arrivals.

Formats marked `lengths_only` (native, vidur) may leave out their arrival column; `load` then needs
an `ArrivalSpec` to draw arrival times.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from traces.catalog import FORMATS
from traces.request import FIELDS, REQUIRED_COLUMNS
from traces.problems import Problems
from traces.validate import (hash_ids_column, native_columns, seconds_column, text_column, timestamp_column,
                             token_column)


@dataclass
class Parsed:
    """A format's rows mapped onto `Request` columns, before skipping and re-basing arrivals.

    `arrival` is in the file's own unit (`per_second` of them make a second; int64 ns for wall
    clocks so re-basing is exact), None when the file has no arrival column; `skips` are (reason,
    mask) in the order they are applied.
    """

    cols: dict[str, np.ndarray]
    arrival: np.ndarray | None
    per_second: float
    skips: list[tuple[str, np.ndarray]] = field(default_factory=list)
    origin: str | None = None  # what time zero is, when the file has wall-clock times


@dataclass(frozen=True)
class LoadOptions:
    model: str | None = None  # BurstGPT: keep only this Model (case-insensitive)
    log_type: str | None = None  # BurstGPT: keep only this Log Type, e.g. "Conversation log"


Adapter = Callable[[pd.DataFrame, Problems, LoadOptions], Parsed]


@dataclass(frozen=True)
class FormatSpec:
    name: str
    kind: str  # "csv" or "jsonl"
    required: tuple[str, ...]
    optional: tuple[str, ...]
    text_columns: tuple[str, ...]  # read as text even when they look numeric
    adapter: Adapter
    arrival_column: str  # where arrival times come from
    lengths_only: bool = False  # the arrival column may be absent (arrivals are then generated)


def _defaults(prompt: np.ndarray, output: np.ndarray) -> dict[str, np.ndarray]:
    num_rows = len(prompt)
    return {
        "prompt_tokens": prompt, "output_tokens": output,
        "n": np.ones(num_rows, dtype=np.int64), "sampling": np.full(num_rows, "greedy", dtype=object),
        "priority": np.zeros(num_rows, dtype=np.int64), "prefix_group": np.full(num_rows, None, dtype=object),
        "prefix_tokens": np.zeros(num_rows, dtype=np.int64), "hash_ids": np.full(num_rows, None, dtype=object),
    }


def _tokens(frame: pd.DataFrame, name: str, problems: Problems) -> np.ndarray:
    # Foreign traces record failed or empty requests with 0 tokens: those rows are skipped and
    # counted, not refused. Negative counts are refused.
    return token_column(frame[name], name, problems, minimum=0)


def _zero_skips(prompt_name: str, prompt: np.ndarray, output_name: str, output: np.ndarray) -> list:
    return [(f"rows with 0 {output_name}", output == 0), (f"rows with 0 {prompt_name}", prompt == 0)]


def _native(frame: pd.DataFrame, problems: Problems, options: LoadOptions) -> Parsed:
    timed = "arrival_s" in frame
    if not timed:
        frame = frame.assign(arrival_s=0.0)  # arrivals are drawn later
    cols = native_columns(frame, problems)
    return Parsed(cols, cols["arrival_s"] if timed else None, 1.0)


def _azure(frame: pd.DataFrame, problems: Problems, options: LoadOptions) -> Parsed:
    ns = timestamp_column(frame["TIMESTAMP"], "TIMESTAMP", problems)
    prompt = _tokens(frame, "ContextTokens", problems)
    output = _tokens(frame, "GeneratedTokens", problems)
    return Parsed(_defaults(prompt, output), ns, 1e9,
                  _zero_skips("ContextTokens", prompt, "GeneratedTokens", output), origin="timestamp")


def _burstgpt(frame: pd.DataFrame, problems: Problems, options: LoadOptions) -> Parsed:
    seconds = seconds_column(frame["Timestamp"], "Timestamp", problems)
    prompt = _tokens(frame, "Request tokens", problems)
    output = _tokens(frame, "Response tokens", problems)
    skips: list[tuple[str, np.ndarray]] = []
    for column, wanted in (("Model", options.model), ("Log Type", options.log_type)):
        if wanted is None:
            continue
        values = pd.Series(text_column(frame[column], ""), dtype=object).str.strip().str.casefold()
        keep = (values == wanted.strip().casefold()).to_numpy()
        if not keep.any():
            present = ", ".join(sorted({str(v) for v in text_column(frame[column], "") if v})[:10])
            raise ValueError(f"{problems.locator.source}: {column}: no rows match {wanted!r} (present: {present})")
        skips.append((f"rows filtered out by {column} != {wanted!r}", ~keep))
    # BurstGPT logs failed requests with 0 response tokens.
    skips.append(("failed requests (0 Response tokens)", output == 0))
    skips.append(("rows with 0 Request tokens", prompt == 0))
    return Parsed(_defaults(prompt, output), seconds, 1.0, skips)


def _mooncake(frame: pd.DataFrame, problems: Problems, options: LoadOptions) -> Parsed:
    ms = seconds_column(frame["timestamp"], "timestamp", problems, per_second=1e3)
    prompt = _tokens(frame, "input_length", problems)
    output = _tokens(frame, "output_length", problems)
    cols = _defaults(prompt, output)
    if "hash_ids" in frame:
        cols["hash_ids"] = hash_ids_column(frame["hash_ids"], "hash_ids", problems)
    return Parsed(cols, ms, 1e3, _zero_skips("input_length", prompt, "output_length", output))


def _vidur(frame: pd.DataFrame, problems: Problems, options: LoadOptions) -> Parsed:
    seconds = seconds_column(frame["arrived_at"], "arrived_at", problems) if "arrived_at" in frame else None
    prompt = _tokens(frame, "num_prefill_tokens", problems)
    output = _tokens(frame, "num_decode_tokens", problems)
    return Parsed(_defaults(prompt, output), seconds, 1.0,
                  _zero_skips("num_prefill_tokens", prompt, "num_decode_tokens", output))


_NATIVE_OPTIONAL = tuple(f for f in FIELDS if f not in REQUIRED_COLUMNS)
_NATIVE_TEXT = ("request_id", "sampling", "prefix_group", "hash_ids")

FORMAT_SPECS: dict[str, FormatSpec] = {spec.name: spec for spec in (
    FormatSpec("native-csv", "csv", REQUIRED_COLUMNS, _NATIVE_OPTIONAL, _NATIVE_TEXT, _native, "arrival_s", True),
    FormatSpec("native-jsonl", "jsonl", REQUIRED_COLUMNS, _NATIVE_OPTIONAL, (), _native, "arrival_s", True),
    FormatSpec("azure", "csv", ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), (), ("TIMESTAMP",), _azure,
               "TIMESTAMP"),
    FormatSpec("burstgpt", "csv", ("Timestamp", "Request tokens", "Response tokens"),
               ("Model", "Total tokens", "Log Type"), ("Model", "Log Type"), _burstgpt, "Timestamp"),
    FormatSpec("mooncake", "jsonl", ("timestamp", "input_length", "output_length"), ("hash_ids",), (), _mooncake,
               "timestamp"),
    FormatSpec("vidur", "csv", ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
               (), (), _vidur, "arrived_at", True),
)}
assert tuple(FORMAT_SPECS) == FORMATS, "traces.catalog.FORMATS must list every format"


def detect(kind: str, columns: tuple[str, ...]) -> FormatSpec | None:
    """The format whose columns the header shares most (CSV header or first JSON object's keys);
    None when it shares none. A partial match still wins, so a missing column is reported as such."""
    present = set(columns)
    scored = [(len(present & {*spec.required, *spec.optional}), spec)
              for spec in FORMAT_SPECS.values() if spec.kind == kind]
    best = max(scored, key=lambda pair: pair[0])
    return best[1] if best[0] > 0 else None
