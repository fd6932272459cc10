"""The data the docs, tests and benchmarks use ships with the repository, with its licence: nothing points
outside the checkout, and nothing skips for want of it on a fresh clone."""
from __future__ import annotations

import re
from pathlib import Path

from traces import load

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def test_the_shipped_data_files_each_have_attribution_and_a_licence() -> None:
    readmes = (DATA / "README.md").read_text() + (DATA / "vidur" / "README.md").read_text()
    shipped = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and p.name != "README.md")
    assert {"AzureLLMInferenceTrace_code.csv", "vidur/LICENSE",
            "vidur/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"} <= set(shipped)
    for name in shipped:
        if name.endswith(".csv"):
            assert Path(name).name in readmes, f"{name} is not described in a data README"
    assert "CC-BY 4.0" in readmes and "MIT" in readmes and "MIT License" in (DATA / "vidur" / "LICENSE").read_text()
    for p in DATA.rglob("*"):
        assert p.stat().st_size < 2 * 2**20, f"{p}: keep each shipped file under a few MB"
    azure = load(DATA / "AzureLLMInferenceTrace_code.csv")
    assert len(azure) == 8819 and azure.notices[0] == "read as azure"


def test_no_doc_test_or_benchmark_points_outside_the_checkout() -> None:
    outside = re.compile(r"\.\./shared|parent\s*/\s*\"shared\"|parents\[1\]\.parent")
    offenders = []
    for path in [*REPO.glob("*.md"), *REPO.glob("docs/*.md"), *REPO.glob("scripts/*"), *REPO.glob("tests/*.py"),
                 *REPO.glob("*/*.py")]:
        if path == Path(__file__) or ".venv" in path.parts:
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(REPO)}:{i}" for i, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert offenders == []
