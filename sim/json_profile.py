"""Loading a frozen dataclass of constants from a JSON file, by name in a folder or by path.

Shared by the cost profiles (`sim.cost.CostProfile`) and the per-operator models (`sim.gemm_time.OpTimeModel`):
one place for the name lookup and the one-line errors (unknown name, bad JSON with its line, unknown key).
"""
from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class FieldError(ValueError):
    """A constant out of its range, as `owner: field: reason`; the loader re-reads it as `file:line: field: reason`."""

    def __init__(self, owner: str, field: str, reason: str) -> None:
        super().__init__(f"{owner}: {field}: {reason}")
        self.field, self.reason = field, reason


def check_constants(obj: Any, owner: str, skip: tuple[str, ...] = ()) -> None:
    """Every field of the dataclass `obj` but `skip` is a finite number >= 0 (None where its default is None),
    an `*efficiency` a fraction of a peak in (0, 1]: a `FieldError` names the first that is not."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in skip or (value is None and f.default is None):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
            raise FieldError(owner, f.name, f"must be a finite number >= 0, got {value!r}")
        if f.name.endswith("efficiency") and not 0 < value <= 1:
            raise FieldError(owner, f.name, f"must be in (0, 1], got {value!r}")


def _key_line(text: str, key: str) -> int:
    """The line of a JSON file where `key` is first given (1 if it is not found)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if f'"{key}"' in line:
            return number
    return 1


def load_json_dataclass(cls: type[T], name_or_path: str, directory: Path, field: str) -> T:
    """`cls(**data)` from `directory/<name>.json` or from a path ending in `.json`; `field` names the option
    an unknown name came from. Every error names the file (and the line of the key at fault)."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        names = sorted(p.stem for p in directory.glob("*.json"))
        if path.exists() or len(path.parts) > 1:  # meant as a file, not a name
            raise ValueError(f"{name_or_path}: {field}: a profile file must be JSON with a name ending in .json; "
                             f"or give a name: {', '.join(names)}")
        path = directory / f"{name_or_path}.json"
        if not path.is_file():
            raise ValueError(f"{field}: unknown name {name_or_path!r}; valid names: {', '.join(names)}")
    text = path.read_text()
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}:1: json: expected an object of constants, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}:{_key_line(text, unknown[0])}: {unknown[0]}: unknown key; valid keys: "
                         f"{', '.join(sorted(known))}")
    try:
        return cls(**data)
    except FieldError as exc:  # `cost profile default: ...` would name the default, not this file
        raise ValueError(f"{path}:{_key_line(text, exc.field)}: {exc.field}: {exc.reason}") from None
