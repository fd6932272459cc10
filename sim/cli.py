"""The `pagedlab` command: a thin dispatcher over each package's subcommands.

Each subcommand module exposes `add_parser(subparsers) -> None`, which registers its parser and sets
`func=run` (a callable taking the parsed args and returning an exit code). Those modules must not import
torch or triton at module level: `pagedlab replay` has to start fast.

Bad input anywhere raises `ValueError` (or `OSError` for files) with a one-line message such as
`path:line: field: reason`; it is printed as `pagedlab: error: ...` with exit code 2, never as a
traceback. Set PAGEDLAB_TRACEBACK=1 to see the traceback anyway. SIGTERM unwinds like Ctrl-C, so
half-written outputs are removed either way.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, NoReturn, Sequence

# (module, description) for every subcommand family; each module's add_parser registers its commands.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "traces.cli",          # pagedlab trace stats|gen
    "sim.replay_cli",      # pagedlab replay
    "analysis.compare_cli",  # pagedlab compare
    "analysis.sweep_cli",  # pagedlab sweep
    "kernels.bench_cli",   # pagedlab bench kernels
    "sim.calibrate_cli",   # pagedlab calibrate
    "memory.demo_cli",     # pagedlab demo-memory
    "analysis.validation.cli",  # pagedlab validate
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line in the documented form (not a usage dump), exit 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("pagedlab").strip()
        message = message.removeprefix("argument ")
        where = f"{command}: " if command else ""
        help_hint = f"pagedlab {command} --help" if command else "pagedlab --help"
        self.exit(2, f"pagedlab: error: {where}{message} (see {help_hint})\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    _mark_commands(parser)
    return parser


def _mark_commands(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser in its own defaults (`command_parser`), so that arguments it does not know
    are reported against it: `demo-memory --foo` points to `pagedlab demo-memory --help`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(command_parser=sub)
                _mark_commands(sub)


class Terminated(BaseException):
    """SIGTERM arrived: unwind (running every cleanup) as Ctrl-C does."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While the command runs, SIGTERM raises `Terminated` in this process. A forked child (a worker
    of a process pool) that inherits the handler dies of the signal as it would have without it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def error_message(exc: BaseException) -> str:
    """One line. An OSError from the system ([Errno 13] Permission denied: 'x') becomes
    `x: file: permission denied`."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: file: {exc.strerror[0].lower()}{exc.strerror[1:]}"
    else:
        message = str(exc)
    return " ".join(message.split()) or type(exc).__name__


# A value that starts like a negative number, e.g. `-1,2` or `-1e3`: argparse would take it for an option.
NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """`--rates -1,2` as `--rates=-1,2`, so that the option's own check says what is wrong with the value
    (argparse alone says `expected one argument`); `--`, and a value after `--opt=`, are left alone."""
    out: list[str] = []
    for word in argv:
        previous = out[-1] if out else ""
        if (NEGATIVE_VALUE.match(word) and previous.startswith("--") and previous != "--" and "=" not in previous
                and "--" not in out):
            out[-1] = f"{previous}={word}"
        else:
            out.append(word)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(attach_negative_values(sys.argv[1:] if argv is None else argv))
    if unknown:  # argparse would report them against `pagedlab` itself
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        with sigterm_unwinds():
            return int(args.func(args) or 0)
    except BrokenPipeError:
        # `pagedlab ... | head`: the reader left; not an error worth a message.
        sys.stderr.close()
        return 0
    except (ValueError, OSError) as exc:
        if os.environ.get("PAGEDLAB_TRACEBACK"):
            raise
        print(f"pagedlab: error: {error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pagedlab: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("pagedlab: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
