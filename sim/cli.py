"""The `pagedlab` command: a thin dispatcher over each package's subcommands.

Each subcommand module exposes `add_parser(subparsers) -> None`, which registers its parser and sets
`func=run` (a callable taking the parsed args and returning an exit code). Those modules must not import
torch or triton at module level: `pagedlab replay` has to start fast.

Bad input anywhere raises `ValueError` (or `OSError` for files) with a one-line message such as
`path:line: field: reason`; it is printed as `pagedlab: error: ...` with exit code 2, never as a
traceback. Set PAGEDLAB_TRACEBACK=1 to see the traceback anyway.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# (module, description) for every subcommand family; each module's add_parser registers its commands.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "traces.cli",          # pagedlab trace stats|gen
    "sim.replay_cli",      # pagedlab replay
    "analysis.compare_cli",  # pagedlab compare
    "analysis.sweep_cli",  # pagedlab sweep
    "kernels.bench_cli",   # pagedlab bench kernels
    "sim.calibrate_cli",   # pagedlab calibrate
    "memory.demo_cli",     # pagedlab demo-memory
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pagedlab",
        description="Design workbench for PagedAttention-style LLM serving.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A subcommand family not built yet; only swallow the module's own absence.
            if exc.name != module_name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `pagedlab ... | head`: the reader left; not an error worth a message.
        sys.stderr.close()
        return 0
    except (ValueError, OSError) as exc:
        if os.environ.get("PAGEDLAB_TRACEBACK"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"pagedlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pagedlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
