"""One replay's tables, read from a `SimResult` or from the directory `SimResult.write` made, and its metrics row."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.memory_view import memory_metrics
from analysis.metrics import DEFAULT_PERCENTILES, serving_metrics
from analysis.slo import SLO
from sim.schema import CONFIG_JSON, ITL_NPY, OUTPUT_FILES, REQUESTS_CSV, STEPS_CSV, SUMMARY_JSON

RUN_FILES: tuple[str, ...] = OUTPUT_FILES


@dataclass
class RunData:
    """The tables of one replay: `requests`, `steps`, every inter-token gap `itl_s`, `summary`, `config`."""

    requests: pd.DataFrame
    steps: pd.DataFrame
    itl_s: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: Any) -> "RunData":
        """From a `sim.SimResult` (duck-typed: only its five attributes are read)."""
        return cls(result.requests, result.steps, np.asarray(result.itl_s, dtype=float),
                   dict(result.summary), dict(result.config))

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> "RunData":
        run_dir = Path(run_dir)
        missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
        if missing:
            raise OSError(f"{run_dir}: not a replay output, missing {', '.join(missing)}")
        return cls(
            requests=pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=True),
            steps=pd.read_csv(run_dir / STEPS_CSV),
            itl_s=np.load(run_dir / ITL_NPY),
            summary=json.loads((run_dir / SUMMARY_JSON).read_text()),
            config=json.loads((run_dir / CONFIG_JSON).read_text()),
        )


def run_metrics(run: RunData, slo: SLO | None = None, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict:
    """Serving metrics (vLLM names), the memory view, and the simulator's own run cost (`wall_s`)."""
    row = serving_metrics(run.requests, run.itl_s, slo=slo, percentiles=percentiles)
    row.update(memory_metrics(run.steps, run.summary))
    row["sim_wall_s"] = float(run.summary.get("wall_s", float("nan")))
    return row
