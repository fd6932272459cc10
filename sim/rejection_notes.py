"""One-line notes on requests a replay refuses: before it (`context_note`, longer than the model's context)
and after it (`rejection_note`, from the requests table's reasons), each with what to try instead. Shared by
`pagedlab replay` and `compare`."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def share_of_requests(count: int, total: int) -> str:
    """`count` of `total` as a whole percentage that never reads 100% unless all are (nor 0% unless none are):
    8,775 of 8,819 is 99.5%, not 100%."""
    share = count / total
    text = f"{share:.0%}"
    if (text == "100%" and count < total) or (text == "0%" and count > 0):
        text = f"{share:.1%}"
        if text == "100.0%":
            text = ">99.9%"
        elif text == "0.0%":
            text = "<0.1%"
    return f"{text} of requests ({count} of {total})"


def _suggested_model(needed: int, current: str) -> str | None:
    """The preset with the shortest context that still holds `needed` tokens (tensor-parallel ones aside)."""
    from sim.presets import MODELS

    fits = [m for m in MODELS.values() if m.max_model_len >= needed and m.tp == 1 and m.name not in (current, "tiny")]
    return min(fits, key=lambda m: (m.max_model_len, m.name)).name if fits else None


def too_long_reason(num_too_long: int, longest: int, model: str, context_len: int) -> str:
    """Why requests longer than the context are refused, and what to do about it."""
    better = _suggested_model(longest, model)
    hint = f"--model {better} or " if better else ""
    return (f"{num_too_long} exceed max_model_len {context_len} of {model} (prompt + output, up to {longest} "
            f"tokens); try {hint}--max-context {context_len}")


def context_note(trace: object, model: str, context_len: int) -> str | None:
    """Before a replay: one line when any of a trace's requests cannot fit the context."""
    lengths = trace.column("prompt_tokens") + trace.column("output_tokens")  # type: ignore[attr-defined]
    too_long = int((lengths > context_len).sum())
    if not too_long:
        return None
    return (f"{share_of_requests(too_long, len(lengths))} will be rejected: "
            f"{too_long_reason(too_long, int(lengths.max()), model, context_len)}")


def rejection_note(requests: "pd.DataFrame", model: str, context_len: int) -> str | None:
    """One line saying why, when any request was rejected (a lost request is never a quiet success); None
    otherwise. Reads the requests table: rejected rows, their lengths and their `reason`."""
    import re

    rejected = requests[requests["status"] == "rejected"]
    total = len(requests)
    if not len(rejected):
        return None
    share = f"{share_of_requests(len(rejected), total)} were rejected"
    length = rejected["prompt_tokens"] + rejected["output_tokens"]
    too_long = length > context_len
    if too_long.sum() * 2 >= len(rejected):
        return f"{share}: {too_long_reason(int(too_long.sum()), int(length.max()), model, context_len)}"
    kinds = rejected["reason"].astype(str).map(lambda r: re.sub(r"\d+", "N", r))
    common = kinds.value_counts().index[0]
    group = rejected[kinds == common]
    first = group.iloc[0]
    others = int((kinds != common).sum())
    rest = f"; {others} for other reasons (the reason column of requests.csv)" if others else ""
    if group["reason"].nunique() == 1:
        return f"{share}: {len(group)} for this reason (request {first['request_id']}): {first['reason']}{rest}"
    # One kind of reason with different figures per request: quote one, say that the figures differ.
    return (f"{share}: {len(group)} for reasons of this kind, their figures differing (request "
            f"{first['request_id']}: {first['reason']}){rest}")
