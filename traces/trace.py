"""`Trace`: requests ordered by arrival, stored as columns so a million-row trace loads in a second;
`Request` objects are built only when someone iterates or indexes."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Iterator, overload

import numpy as np
import pandas as pd

from traces.request import (FIELDS, HASH_BLOCK_TOKENS, MAX_ARRIVAL_S, REQUIRED_COLUMNS, Request,
                            requests_from_columns)
from traces.problems import Locator, Problems, error
from traces.validate import arrival_span, native_columns

Columns = dict[str, np.ndarray]
_NUMERIC = {"arrival_s": np.float64, "prompt_tokens": np.int64, "output_tokens": np.int64,
            "n": np.int64, "priority": np.int64, "prefix_tokens": np.int64}


def sort_by_arrival(cols: Columns) -> tuple[Columns, int]:
    """Stable sort by arrival. Returns the columns and how many rows arrived before an earlier row."""
    arrival = cols["arrival_s"]
    if len(arrival) < 2 or bool(np.all(arrival[1:] >= arrival[:-1])):
        return cols, 0
    out_of_order = int(np.count_nonzero(arrival[1:] < np.maximum.accumulate(arrival)[:-1]))
    order = np.argsort(arrival, kind="stable")
    return {name: values[order] for name, values in cols.items()}, out_of_order


def _clip_changes(before: Columns, after: Columns, max_context: int) -> str:
    """What `clip` changed, counted from the columns themselves (empty when nothing did), e.g. `: 132 prompts
    truncated to 4095 tokens (their outputs to 1 token), 1 more output shortened; prompt tokens 2139076 ->
    1895640, output tokens 34488 -> 30674`. A truncated prompt's output is cut to 1 token as well, so the
    outputs shortened are both groups, not the second alone."""
    prompt_cut = before["prompt_tokens"] != after["prompt_tokens"]
    output_cut = before["output_tokens"] != after["output_tokens"]
    parts: list[str] = []
    if prompt_cut.any():
        truncated = int(prompt_cut.sum())
        parts.append(f"{truncated} prompt{'' if truncated == 1 else 's'} truncated to {max_context - 1} tokens "
                     f"({'its output' if truncated == 1 else 'their outputs'} to 1 token)")
    shortened = int((output_cut & ~prompt_cut).sum())
    if shortened:
        more = "more " if parts else ""  # besides the truncated prompts' outputs
        parts.append(f"{shortened} {more}output{'' if shortened == 1 else 's'} shortened")
    if not parts:
        return ""
    totals = [f"{kind} tokens {int(before[f'{kind}_tokens'].sum())} -> {int(after[f'{kind}_tokens'].sum())}"
              for kind, cut in (("prompt", prompt_cut), ("output", output_cut)) if cut.any()]
    return f": {', '.join(parts)}; {', '.join(totals)}"


class Trace:
    """An ordered (by `arrival_s`, stable) collection of `Request`s.

    `notices` says what loading and transforming did (rows skipped and why, sorting, clipping) and
    `skipped` counts skipped rows by reason, so no request is ever dropped silently.
    Transformations (`head`, `window`, `scale_rate`, `clip`, `drop_longer`) return new traces.
    """

    __slots__ = ("_cols", "_requests", "notices", "skipped", "source")

    def __init__(self, requests: Iterable[Request] = (), *, source: str = "<memory>",
                 notices: Iterable[str] = ()) -> None:
        reqs = list(requests)
        for r in reqs:
            if not isinstance(r, Request):
                raise TypeError(f"Trace holds Request objects, got {type(r).__name__}")
        cols: Columns = {}
        for name in FIELDS:
            # fromiter keeps tuples (hash ids) as elements instead of growing a second axis.
            cols[name] = np.fromiter((getattr(r, name) for r in reqs), dtype=_NUMERIC.get(name, object),
                                     count=len(reqs))
        ids = pd.Series(cols["request_id"], dtype=object)
        if ids.duplicated().any():
            raise ValueError(f"{source}: request_id: duplicate id {ids[ids.duplicated()].iloc[0]!r}")
        sorted_cols, out_of_order = sort_by_arrival(cols)
        self._init(sorted_cols, source, list(notices), {})
        if out_of_order:
            self.notices.append(f"sorted by arrival (stable): {out_of_order} requests arrived before an earlier one")
        else:
            self._requests = reqs  # already in order: reuse the objects

    def _init(self, cols: Columns, source: str, notices: list[str], skipped: dict[str, int]) -> None:
        self._cols = cols
        self._requests: list[Request] | None = None
        self.source = source
        self.notices = notices
        self.skipped = skipped

    @classmethod
    def _from_columns(cls, cols: Columns, *, source: str, notices: list[str],
                      skipped: dict[str, int] | None = None) -> "Trace":
        """Columns already validated and sorted by arrival (loaders, generators, transforms)."""
        assert set(cols) == set(FIELDS) and len({len(v) for v in cols.values()}) <= 1
        trace = cls.__new__(cls)
        trace._init({name: cols[name] for name in FIELDS}, source, notices, dict(skipped or {}))
        return trace

    def _derive(self, cols: Columns, notice: str) -> "Trace":
        return Trace._from_columns(cols, source=self.source, notices=[*self.notices, notice],
                                   skipped=self.skipped)

    # --- the collection -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cols["arrival_s"])

    @property
    def requests(self) -> list[Request]:
        if self._requests is None:
            self._requests = requests_from_columns([self._cols[name].tolist() for name in FIELDS])
        return self._requests

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    @overload
    def __getitem__(self, index: int) -> Request: ...
    @overload
    def __getitem__(self, index: slice) -> "Trace": ...

    def __getitem__(self, index: int | slice) -> Request | "Trace":
        if isinstance(index, slice):
            return Trace._from_columns({k: v[index] for k, v in self._cols.items()}, source=self.source,
                                       notices=list(self.notices), skipped=self.skipped)
        if self._requests is not None:
            return self._requests[index]
        return Request(*(self._cols[name][index].item() if name in _NUMERIC else self._cols[name][index]
                         for name in FIELDS))

    def __repr__(self) -> str:
        return f"Trace({len(self)} requests over {self.duration_s:.3f} s from {self.source})"

    @property
    def duration_s(self) -> float:
        """Time from the first arrival to the last."""
        arrival = self._cols["arrival_s"]
        return float(arrival[-1] - arrival[0]) if len(arrival) else 0.0

    def column(self, name: str) -> np.ndarray:
        """One field for all requests, as a read-only numpy array (no Request objects built)."""
        values = self._cols[name].view()
        values.flags.writeable = False
        return values

    # --- pandas and files -----------------------------------------------------------------------

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame({name: pd.Series(self._cols[name].copy(), dtype=_NUMERIC.get(name, object))
                             for name in FIELDS})

    @classmethod
    def from_pandas(cls, df: pd.DataFrame, *, source: str = "<DataFrame>") -> "Trace":
        """A trace from a frame with the field names as columns (arrival_s, prompt_tokens and
        output_tokens required). Bad cells raise `source:<index label>: field: reason`."""
        for name in REQUIRED_COLUMNS:
            if name not in df.columns:
                raise error(f"{source}:columns", name, "missing column")
        problems = Problems(Locator(source, df.index))
        cols = native_columns(df.reset_index(drop=True), problems)
        arrival_span(cols["arrival_s"], "arrival_s", problems)
        problems.raise_first()
        cols = {name: values.copy() for name, values in cols.items()}  # never share the caller's memory
        cols, out_of_order = sort_by_arrival(cols)
        notices = [f"sorted by arrival (stable): {out_of_order} requests arrived before an earlier one"] \
            if out_of_order else []
        return cls._from_columns(cols, source=source, notices=notices)

    def to_csv(self, path: str | Path) -> None:
        """The native CSV format: every field as a column; empty cells for no prefix group or hash
        ids, hash ids space-separated. Same trace, same bytes."""
        frame = self.to_pandas()
        frame["hash_ids"] = [" ".join(map(str, h)) if h is not None else None for h in self._cols["hash_ids"]]
        frame.to_csv(path, index=False, lineterminator="\n")

    def to_jsonl(self, path: str | Path) -> None:
        """The native JSONL format: one object per request, keys in field order."""
        with open(path, "w", encoding="utf-8") as out:
            for row in zip(*(self._cols[name].tolist() for name in FIELDS)):
                record = dict(zip(FIELDS, row))
                if record["hash_ids"] is not None:
                    record["hash_ids"] = list(record["hash_ids"])
                out.write(json.dumps(record) + "\n")

    # --- transformations ------------------------------------------------------------------------

    def head(self, n: int) -> "Trace":
        """The first `n` requests by arrival."""
        if n < 0:
            raise ValueError(f"head: n: must be >= 0, got {n}")
        kept = min(n, len(self))
        return self._derive({k: v[:kept] for k, v in self._cols.items()},
                            f"head: kept the first {kept} of {len(self)} requests")

    def window(self, start_s: float, end_s: float = math.inf) -> "Trace":
        """Requests arriving in [start_s, end_s), re-based so the window's first request arrives at 0
        (as in a loaded trace)."""
        if not (start_s >= 0 and end_s > start_s):
            raise ValueError(f"window: need 0 <= start < end, got [{start_s}, {end_s})")
        arrival = self._cols["arrival_s"]
        lo, hi = np.searchsorted(arrival, start_s, "left"), np.searchsorted(arrival, end_s, "left")
        cols = {k: v[lo:hi] for k, v in self._cols.items()}
        shift = float(cols["arrival_s"][0]) if hi > lo else 0.0
        cols["arrival_s"] = cols["arrival_s"] - shift
        return self._derive(cols, f"window [{start_s:g}, {end_s:g}) s: kept {hi - lo} of {len(self)} "
                                  f"requests; arrivals shifted by {-shift if shift else 0:g} s")

    def scale_rate(self, factor: float) -> "Trace":
        """Arrival rate times `factor`: 2 doubles the rate (halves every gap)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"scale_rate: factor: must be finite and > 0, got {factor}")
        cols = dict(self._cols)
        cols["arrival_s"] = self._cols["arrival_s"] / factor
        if len(self) and cols["arrival_s"][-1] > MAX_ARRIVAL_S:
            raise ValueError(f"scale_rate: factor: {factor:g} stretches the trace to {cols['arrival_s'][-1]:.3g} s, "
                             f"more than the {MAX_ARRIVAL_S:.0e} s a trace may span")
        return self._derive(cols, f"rate scaled by {factor:g}")

    def clip(self, max_context: int) -> "Trace":
        """Fit every request into a `max_context`-token context, as a server would: the output stops
        at the limit; a prompt that leaves no room for one output token keeps its first
        `max_context - 1` tokens (its head, so shared prefixes and hash ids stay valid)."""
        if max_context < 2:
            raise ValueError(f"clip: max_context: must be >= 2, got {max_context}")
        prompt, output = self._cols["prompt_tokens"], self._cols["output_tokens"]
        over = prompt + output > max_context
        long_prompt = over & (prompt >= max_context)
        cols = dict(self._cols)
        cols["output_tokens"] = np.where(over, np.maximum(max_context - prompt, 1), output)
        cols["prompt_tokens"] = np.where(long_prompt, max_context - 1, prompt)
        cols["prefix_tokens"] = np.minimum(self._cols["prefix_tokens"], cols["prompt_tokens"])
        if long_prompt.any():
            hash_ids = self._cols["hash_ids"].copy()
            for pos in np.flatnonzero(long_prompt):
                if hash_ids[pos] is not None:
                    hash_ids[pos] = hash_ids[pos][: -(-(max_context - 1) // HASH_BLOCK_TOKENS)]
            cols["hash_ids"] = hash_ids
        return self._derive(cols, f"clipped {int(over.sum())} of {len(self)} requests to a {max_context}-token "
                                  f"context{_clip_changes(self._cols, cols, max_context)}")

    def drop_longer(self, max_context: int) -> "Trace":
        """Leave out the requests whose prompt + output exceeds `max_context` tokens (counted in
        `skipped`, said in `notices`)."""
        if max_context < 2:
            raise ValueError(f"drop_longer: max_context: must be >= 2, got {max_context}")
        keep = self._cols["prompt_tokens"] + self._cols["output_tokens"] <= max_context
        num_dropped = int((~keep).sum())
        if num_dropped == len(self):
            raise ValueError(f"max-context: all {len(self)} requests exceed a {max_context}-token context; "
                             "nothing would be left (clip them instead)")
        skipped = dict(self.skipped)
        if num_dropped:
            reason = f"requests longer than {max_context} tokens (prompt + output)"
            skipped[reason] = skipped.get(reason, 0) + num_dropped
        return Trace._from_columns({k: v[keep] for k, v in self._cols.items()}, source=self.source,
                                   notices=[*self.notices, f"dropped {num_dropped} of {len(self)} requests longer "
                                            f"than a {max_context}-token context (prompt + output)"],
                                   skipped=skipped)
