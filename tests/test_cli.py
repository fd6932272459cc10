"""The dispatcher turns bad input into one line and exit code 2."""
from __future__ import annotations

import argparse

import pytest

from sim import cli


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: pagedlab" in capsys.readouterr().err


def test_value_error_becomes_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def add_parser(subparsers: argparse._SubParsersAction) -> None:
        p = subparsers.add_parser("boom")

        def run(args: argparse.Namespace) -> int:
            raise ValueError("trace.csv:3: prompt_tokens:\n must be >= 0")

        p.set_defaults(func=run)

    real_build = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = real_build()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        add_parser(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    monkeypatch.delenv("PAGEDLAB_TRACEBACK", raising=False)
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err == "pagedlab: error: trace.csv:3: prompt_tokens: must be >= 0\n"


@pytest.mark.parametrize("argv,expected", [
    (["compare", "--rates", "1,x"],
     "pagedlab: error: compare: --rates: expected comma-separated positive numbers, got '1,x' (see pagedlab compare --help)\n"),
    (["replay", "--trace"], "pagedlab: error: replay: --trace: expected one argument (see pagedlab replay --help)\n"),
    # an argument the subcommand does not know points to its own help
    (["demo-memory", "--foo"],
     "pagedlab: error: demo-memory: unrecognized arguments: --foo (see pagedlab demo-memory --help)\n"),
    (["trace", "gen", "--out", "x", "--foo"],
     "pagedlab: error: trace gen: unrecognized arguments: --foo (see pagedlab trace gen --help)\n"),
    (["trace", "gen"],
     "pagedlab: error: trace gen: the following arguments are required: --out (see pagedlab trace gen --help)\n"),
])
def test_a_bad_command_line_is_one_line_not_a_usage_dump(argv: list[str], expected: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == expected


def test_an_unknown_command_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bogus"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pagedlab: error: ") and "'replay'" in err and "'compare'" in err


def test_a_value_that_starts_with_a_minus_stays_with_its_option() -> None:
    assert cli.attach_negative_values(["compare", "--rates", "-1,2", "--seed", "-3", "--quiet"]) == \
        ["compare", "--rates=-1,2", "--seed=-3", "--quiet"]
    # after `--`, or after an option that already has its value, nothing moves
    assert cli.attach_negative_values(["x", "--", "-1"]) == ["x", "--", "-1"]
    assert cli.attach_negative_values(["x", "--rates=1", "-1"]) == ["x", "--rates=1", "-1"]
