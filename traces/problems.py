"""How bad input is reported: one line, `where: field: reason` (`error`), where `where` is the row's origin
(`Locator`: a file line, or a DataFrame index label) of the earliest offending row over all the checks
(`Problems`), and the offending value quoted short (`shown`)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd


def error(where: str, field: str, reason: str) -> ValueError:
    """The one shape every bad-input message has."""
    return ValueError(f"{where}: {field}: {reason}")


class Locator:
    """Maps a row position of a parsed table back to where the row came from: a file line, or a
    DataFrame index label."""

    def __init__(self, source: str, lines: np.ndarray | pd.Index) -> None:
        self.source = source
        self.lines = lines

    def where(self, pos: int) -> str:
        return f"{self.source}:{self.lines[pos]}"

    def take(self, keep: np.ndarray) -> "Locator":
        """The locator of the rows that `keep` (a boolean mask or positions) selects."""
        return Locator(self.source, self.lines[keep])


class Problems:
    """Collects the first offending row of each check, then reports the earliest one in the input
    (ties go to the check made first), so the message points at the first line to fix."""

    def __init__(self, locator: Locator) -> None:
        self.locator = locator
        self._first: tuple[int, int, str, Callable[[int], str]] | None = None
        self._checks = 0

    def flag(self, bad: np.ndarray, field: str, reason: Callable[[int], str]) -> None:
        self._checks += 1
        if not bad.any():
            return
        pos = int(np.argmax(bad))
        if self._first is None or (pos, self._checks) < self._first[:2]:
            self._first = (pos, self._checks, field, reason)

    def raise_first(self) -> None:
        if self._first is not None:
            pos, _, field, reason = self._first
            raise error(self.locator.where(pos), field, reason(pos))


def shown(value: object) -> str:
    """A cell's value as a message quotes it: its repr, cut at 40 characters."""
    if isinstance(value, np.generic):
        value = value.item()  # 2.5, not np.float64(2.5)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
