"""Run the validation cases and write `validation.csv`, `validation.md` and the figures to one directory.

Each case is a module with `run(quick, out_dir) -> list[CheckResult]`; with `quick` it runs a subset of its
checks with the same settings, so a check's value never depends on the mode. Cases run in the order of
`CASE_MODULES`; the output directory is replaced atomically (`analysis.atomic`).
"""
from __future__ import annotations

import importlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.atomic import VALIDATE_KIND, atomic_directory, write_manifest
from analysis.validation.case import RESULT_COLUMNS, CheckResult, band_text

CASE_MODULES: dict[str, str] = {
    "1": "analysis.validation.ops",
    "2": "analysis.validation.orca",
    "3": "analysis.validation.sharing",
    "4": "analysis.validation.waste",
    "5": "analysis.validation.sarathi",
    "6": "analysis.validation.host",
}


@dataclass
class SuiteOutcome:
    checks: list[CheckResult]
    case_wall_s: dict[str, float]
    wall_s: float
    out_dir: Path

    @property
    def regressions(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == "FAIL"]


def parse_cases(text: str | None) -> list[str]:
    """`1,3,5` -> ["1", "3", "5"]; None -> every case."""
    if text is None:
        return list(CASE_MODULES)
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASE_MODULES]
    if not cases or unknown:
        bad = unknown[0] if unknown else text
        raise ValueError(f"cases: unknown case {bad!r}; valid cases: {', '.join(CASE_MODULES)}")
    repeated = next((c for i, c in enumerate(cases) if c in cases[:i]), None)
    if repeated is not None:  # it would run twice and write its checks twice
        raise ValueError(f"cases: case {repeated!r} given twice in {text!r}")
    return cases


def run_suite(out_dir: str | Path, *, quick: bool = False, cases: list[str] | None = None,
              command: str = "pagedlab validate") -> SuiteOutcome:
    started = time.perf_counter()
    cases = list(CASE_MODULES) if cases is None else cases
    checks: list[CheckResult] = []
    case_wall: dict[str, float] = {}
    final = Path(out_dir)
    with atomic_directory(final, VALIDATE_KIND) as tmp:
        for case in cases:
            module = importlib.import_module(CASE_MODULES[case])
            t0 = time.perf_counter()
            found = module.run(quick, tmp)
            case_wall[case] = time.perf_counter() - t0
            assert found and all(c.case == case for c in found), f"case {case} must return its own checks"
            checks.extend(found)
        wall = time.perf_counter() - started
        table = pd.DataFrame([c.row() for c in checks], columns=list(RESULT_COLUMNS))
        table.to_csv(tmp / "validation.csv", index=False, float_format="%.6g")
        (tmp / "validation.md").write_text(render_markdown(checks, case_wall, wall, quick, command))
        write_manifest(tmp, {"command": command, "quick": quick, "cases": cases, "wall_s": round(wall, 3),
                             "case_wall_s": {k: round(v, 3) for k, v in case_wall.items()}}, VALIDATE_KIND)
    return SuiteOutcome(checks, case_wall, wall, final.resolve())


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "fraction":
        return f"{value:.1%}"
    return f"{value:.3g}" + (f" {unit}" if unit else "")


def render_markdown(checks: list[CheckResult], case_wall: dict[str, float], wall_s: float, quick: bool,
                    command: str) -> str:
    counts = {v: sum(c.verdict == v for c in checks) for v in ("pass", "FAIL", "expected-fail", "unexpected-pass")}
    lines = [
        "# Validation against published results", "",
        f"Command: `{command}`{' (quick: a subset of the checks, same settings)' if quick else ''}. "
        f"Machine: {platform.machine()} `{platform.node()}`, {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end. Wall time {wall_s:.1f} s "
        f"({', '.join(f'case {k}: {v:.1f} s' for k, v in case_wall.items())}).", "",
        f"Checks: {len(checks)}; pass {counts['pass']}, FAIL {counts['FAIL']}, expected-fail "
        f"{counts['expected-fail']}, unexpected-pass {counts['unexpected-pass']}. A check passes when ours lies "
        "in the band; `expected-fail` is a known miss (reason below), `FAIL` a regression.", "",
        "| case | check | setting | published | band | ours | verdict | fitted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        band = band_text(c.band_lo, c.band_hi, "{:.1%}" if c.unit == "fraction" else "{:.3g}")
        lines.append(f"| {c.case} | {c.check} | {c.setting} | {c.published} | {band} | {_fmt(c.ours, c.unit)} "
                     f"| {c.verdict} | {'yes' if c.used_for_fitting else 'no'} |")
    lines += ["", "## Sources and notes", ""]
    seen: set[tuple[str, str]] = set()
    for c in checks:
        if (c.source, c.case) not in seen:
            seen.add((c.source, c.case))
            lines.append(f"- case {c.case}: {c.source}")
    lines.append("")
    by_reason: dict[tuple[str, str], list[CheckResult]] = {}
    for c in checks:
        if c.reason:
            by_reason.setdefault((c.case, c.reason), []).append(c)
    for (case, reason), group in by_reason.items():
        names = "; ".join(f"{c.check} ({c.verdict})" for c in group)
        lines.append(f"- **case {case}**, {names}: {reason}")
    return "\n".join(lines) + "\n"
