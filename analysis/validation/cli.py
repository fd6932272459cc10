"""`pagedlab validate [--quick] [--cases 1,3] [--out DIR]`: the simulator against published results.

Writes `validation.md`, `validation.csv` and figures to --out; exit code 1 when a check that should pass
leaves its band (a regression), 0 otherwise (known misses are reported as `expected-fail`, never hidden).
Heavy imports happen inside `run`, so `pagedlab --help` stays fast.
"""
from __future__ import annotations

import argparse
import shlex
import sys

DEFAULT_OUT = "out/validate"


def _one_line_error(parser: argparse.ArgumentParser):
    def error(message: str):
        print(f"pagedlab: error: validate: {message}", file=sys.stderr)
        raise SystemExit(2)
    return error


def _reject_unknown(parser: argparse.ArgumentParser) -> None:
    """Unknown options fail in this parser (one line) instead of reaching the dispatcher's usage message."""
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        namespace, extras = parse_known(args, namespace)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate", help="check the simulator against published measurements and papers",
        description="Run the validation cases (operator times against Vidur's H100/A100 data, the PagedAttention "
                    "and Sarathi-Serve papers' results, published vLLM latencies) and write validation.md, "
                    "validation.csv and figures to --out. See docs/validation.md.",
    )
    p.add_argument("--quick", action="store_true",
                   help="a subset of the checks, with the same settings (CI; under a minute)")
    p.add_argument("--cases", metavar="1,2,...", help="run only these cases (default: all)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output directory (default: {DEFAULT_OUT})")
    p.error = _one_line_error(p)  # type: ignore[method-assign]
    _reject_unknown(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.validation.runner import parse_cases, run_suite

    cases = parse_cases(args.cases)
    words = ["pagedlab", "validate"] + (["--quick"] if args.quick else [])
    words += (["--cases", ",".join(cases)] if args.cases else []) + ["--out", args.out]
    outcome = run_suite(args.out, quick=args.quick, cases=cases, command=shlex.join(words))
    for c in outcome.checks:
        print(f"{c.verdict:>15}  case {c.case}  {c.check}: ours {c.ours:.4g} (band "
              f"{'' if c.band_lo is None else f'{c.band_lo:.4g}'}..{'' if c.band_hi is None else f'{c.band_hi:.4g}'})")
    print(f"validation: {outcome.out_dir / 'validation.md'} (and validation.csv, figures); "
          f"{len(outcome.checks)} checks in {outcome.wall_s:.1f} s")
    if outcome.regressions:
        print(f"pagedlab: error: validate: {len(outcome.regressions)} check(s) left their band: "
              f"{', '.join(f'case {c.case} {c.check}' for c in outcome.regressions)}", file=sys.stderr)
        return 1
    return 0
