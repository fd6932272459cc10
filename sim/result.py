"""`SimResult`: the tables of one replay, and writing them to a directory atomically."""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.csv_text import write_csv
from sim.schema import CONFIG_JSON, ITL_NPY, OUTPUT_FILES, REQUESTS_CSV, STEPS_CSV, SUMMARY_JSON

__all__ = ["OUTPUT_FILES", "SimResult", "check_makeable", "write_csv"]


@dataclass
class SimResult:
    requests: pd.DataFrame   # one row per request (see sim.schema.REQUEST_COLUMNS)
    steps: pd.DataFrame      # one row per engine step (see sim.schema.STEP_COLUMNS)
    summary: dict[str, Any]  # run totals, JSON-able
    config: dict[str, Any]   # the EngineConfig and what follows from it
    itl_s: np.ndarray        # every inter-token gap of every finished request, seconds
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)  # more CSV tables (execute: exec_steps.csv)

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write the five files (and any `extra` tables) into `out_dir` (created if needed), each via a temp
        file and a rename."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _atomic(out / REQUESTS_CSV, lambda f: write_csv(self.requests, f))
        _atomic(out / STEPS_CSV, lambda f: write_csv(self.steps, f))
        _atomic(out / SUMMARY_JSON, lambda f: f.write(_json(self.summary).encode()))
        _atomic(out / CONFIG_JSON, lambda f: f.write(_json(self.config).encode()))
        _atomic(out / ITL_NPY, lambda f: np.save(f, np.asarray(self.itl_s, dtype=np.float64)))
        for name, frame in self.extra.items():
            _atomic(out / name, lambda f, frame=frame: write_csv(frame, f))
        return out


def check_makeable(path: Path) -> None:
    """Raise `path: out: cannot be made (reason)` unless the directory `path` exists or can be created, found
    by creating it and its missing parents and removing them again: permission bits do not say it (root may
    write anywhere, yet not make a directory in /proc), and a long run should not end on it."""
    if path.exists():
        return
    missing = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        reason = reason[0].lower() + reason[1:]  # as sim.cli.error_message words the system's reasons
        raise OSError(f"{path}: out: cannot be made ({reason})") from None
    finally:
        for made in missing:
            try:
                made.rmdir()
            except OSError:
                pass


def _json(data: dict) -> str:
    # NaN is not JSON: write null.
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
    return json.dumps(clean, indent=2, sort_keys=False) + "\n"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
