"""Loading a frozen dataclass of constants from a JSON file, by name in a folder or by path.

Shared by the cost profiles (`sim.cost.CostProfile`) and the per-operator models (`sim.gemm_time.OpTimeModel`):
one place for the name lookup and the one-line errors (unknown name, bad JSON with its line, unknown key).
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def load_json_dataclass(cls: type[T], name_or_path: str, directory: Path, field: str) -> T:
    """`cls(**data)` from `directory/<name>.json` or from a path ending in `.json`; `field` names the option
    an unknown name came from."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = directory / f"{name_or_path}.json"
        if not path.is_file():
            names = sorted(p.stem for p in directory.glob("*.json"))
            raise ValueError(f"{field}: unknown name {name_or_path!r}; valid names: {', '.join(names)}")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
    return cls(**data)
