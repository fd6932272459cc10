"""What a reader of the comparison report sees in words: units under the tables, code spans in the HTML."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.plot_common import load_text
from analysis.report_render import LATENCY_NOTE, MEMORY_NOTE, html_text
from test_analysis_report import build_report


def test_html_text_turns_code_spans_into_code_and_escapes_the_rest() -> None:
    assert html_text("`R+` means every rate < R passed") == "<code>R+</code> means every rate &lt; R passed"
    assert html_text("a `<b>` tag") == "a <code>&lt;b&gt;</code> tag"
    assert html_text("one ` alone") == "one ` alone"


def test_loads_carry_their_unit() -> None:
    assert load_text("rate", 4.0) == "rate 4 req/s"
    assert load_text("rate scale", 2.5) == "rate scale 2.5x"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_report(tmp_path_factory.mktemp("report") / "out")


def test_both_renderings_say_the_units_of_their_tables(report: dict[str, Path]) -> None:
    page, text = report["html"].read_text(), report["markdown"].read_text()
    for note in (LATENCY_NOTE, MEMORY_NOTE):
        assert note in text
        assert f"<p>{html_text(note)}</p>" in page
    assert "tokens/s" in LATENCY_NOTE and "req/s" in LATENCY_NOTE


def test_html_shows_no_markdown_backticks_in_its_prose(report: dict[str, Path]) -> None:
    page = report["html"].read_text()
    prose = re.sub(r"<pre>.*?</pre>", "", page, flags=re.S)
    assert "`" not in prose
    assert "<code>R+</code> means every tested rate passed" in page
