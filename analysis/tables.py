"""The comparison tables: which columns each shows, how numbers print, and Markdown / HTML / console rendering."""
from __future__ import annotations

import html
import math
from typing import Sequence

import pandas as pd

# Headline table: what a reader compares first (vLLM benchmark names).
LATENCY_COLUMNS: tuple[str, ...] = (
    "policy", "load", "rate", "completed", "rejected", "request_throughput", "output_throughput",
    "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "p99_itl_ms", "p99_e2el_ms",
    "mean_normalized_latency_s", "request_goodput", "slo_attainment",
)
MEMORY_COLUMNS: tuple[str, ...] = (
    "policy", "load", "kv_usage_mean", "kv_usage_peak", "kv_token_usage_mean", "kv_unused_fraction",
    "mean_batch_size", "mean_num_running", "preemptions", "swaps_out", "swaps_in", "cow_copies", "sharing_saved_fraction",
)
CONSOLE_COLUMNS: tuple[str, ...] = (
    "policy", "load", "completed", "rejected", "output_throughput", "p99_ttft_ms", "p99_tpot_ms",
    "mean_normalized_latency_s", "request_goodput", "kv_usage_mean", "preemptions",
)
PERCENT_COLUMNS = frozenset(
    {"slo_attainment", "kv_usage_mean", "kv_usage_peak", "kv_token_usage_mean", "kv_unused_fraction",
     "sharing_saved_fraction"}
)
LOAD_COLUMNS = frozenset({"load", "rate", "rate_scale"})
INT_COLUMNS = frozenset({"completed", "rejected", "num_requests", "preemptions", "swaps_out", "swaps_in", "cow_copies"})


def format_value(column: str, value: object) -> str:
    """Short, readable numbers: percentages for fractions, 3 significant figures or more for larger values."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    number = float(value)  # type: ignore[arg-type]
    if column in LOAD_COLUMNS:  # as given for load and scale; a measured rate needs no more than 3 digits
        return f"{number:.3g}" if column == "rate" else f"{number:.4g}"
    if column in PERCENT_COLUMNS:
        return f"{100 * number:.1f}%"
    if column in INT_COLUMNS or (number.is_integer() and abs(number) >= 1000):
        return f"{int(round(number)):d}"
    magnitude = abs(number)
    if magnitude >= 100:
        return f"{number:.0f}"
    if magnitude >= 10:
        return f"{number:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{number:.2f}"
    return f"{number:.3g}"


def formatted(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The chosen columns (those present) as display strings."""
    present = [c for c in columns if c in table.columns]
    return pd.DataFrame({c: [format_value(c, v) for v in table[c]] for c in present})


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table of already-formatted strings."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" if c == "policy" else "---:" for c in table.columns) + "|"
    rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


TEXT_COLUMNS = frozenset({"policy"})


def to_html(table: pd.DataFrame) -> str:
    """An HTML table of already-formatted strings (escaped); cells of text columns have class `text`, the
    others (numbers) class `num`, so a style sheet can align them."""
    kinds = ["text" if c in TEXT_COLUMNS else "num" for c in table.columns]
    head = "".join(f"<th class='{k}'>{html.escape(str(c))}</th>" for c, k in zip(table.columns, kinds))
    body = "".join(
        "<tr>" + "".join(f"<td class='{k}'>{html.escape(str(v))}</td>" for v, k in zip(row, kinds)) + "</tr>"
        for row in table.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_console(table: pd.DataFrame) -> str:
    """Fixed-width text: the policy column left-aligned, numbers right-aligned."""
    columns = list(table.columns)
    widths = [max(len(str(c)), *(len(str(v)) for v in table[c])) if len(table) else len(str(c)) for c in columns]

    def line(values: Sequence[object]) -> str:
        cells = [str(v).ljust(w) if c == "policy" else str(v).rjust(w) for c, v, w in zip(columns, values, widths)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(columns), *(line(row) for row in table.itertuples(index=False))])
