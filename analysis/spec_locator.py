"""Errors that name the spec file's line: TOML keys located by line (tomllib keeps no line numbers).

Every mistake in a sweep spec is a one-line `SpecError` (a `ValueError`) `spec.toml:LINE: key: reason`.
`check_table` and `check_number` are the checks every section of the spec shares.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


class SpecError(ValueError):
    """A one-line error about a spec file."""


class Locator:
    """Line numbers of TOML keys (tomllib keeps none): `[table]` headers and `key =` lines under them."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if header := re.match(r"^\[\s*([A-Za-z0-9_.\-\s\"']+?)\s*\]", stripped):
                table = header.group(1).replace(" ", "").replace('"', "").replace("'", "")
                self.lines.setdefault(table, number)
            elif key := re.match(r"^([A-Za-z0-9_\-.\"']+)\s*=", stripped):
                name = key.group(1).replace('"', "").replace("'", "")
                self.lines.setdefault(f"{table}.{name}" if table else name, number)

    def error(self, key: str, reason: str) -> SpecError:
        """`path:line: key: reason`, at the key's line, else its table's, else line 1."""
        line, probe = 1, key
        while probe:
            if probe in self.lines:
                line = self.lines[probe]
                break
            probe = probe.rpartition(".")[0]
        return SpecError(f"{self.path}:{line}: {key}: {reason}")


def check_table(where: Locator, data: dict, key: str, allowed: tuple[str, ...], parent: str = "") -> dict[str, Any]:
    """`data[key]` (a table, else {}), with every key in `allowed`; `parent` prefixes names in errors."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise where.error(parent + key, f"must be a table ([{parent + key}]), got {value!r}")
    for name in value:
        if name not in allowed:
            raise where.error(f"{parent}{key}.{name}", f"unknown key; valid keys: {', '.join(allowed)}")
    return value


def check_number(where: Locator, key: str, value: Any, *, positive: bool = True) -> float:
    """`value` as a float: a finite number (above zero unless `positive` is False), else an error at `key`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            (positive and value <= 0):
        raise where.error(key, f"must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)
