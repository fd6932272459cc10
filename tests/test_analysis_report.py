"""The report pipeline on hand-made runs: PNGs that decode, HTML that embeds them, atomic output."""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.atomic import COMPARE_KIND, VALIDATE_KIND, atomic_directory, write_manifest
from analysis.capacity import capacity_by_policy
from analysis.findings import findings
from analysis.report import write_report
from analysis.report_context import ReportContext
from analysis.runs import RunData, run_metrics
from analysis.slo import SLO

POLICIES = ("paged", "contiguous")
RATES = (1.0, 4.0)


def fake_run(policy: str, rate: float) -> RunData:
    """12 requests; latency grows with rate, and `contiguous` is twice as slow and reserves 4x the slots it uses."""
    slow = 2.0 if policy == "contiguous" else 1.0
    count = 12
    arrival = np.arange(count) / rate
    ttft = slow * rate * (0.05 + 0.01 * np.arange(count))
    out_tokens = np.array([1, 4, 8, 16] * 3)
    e2e = ttft + slow * 0.02 * (out_tokens - 1)
    requests = pd.DataFrame({
        "request_id": np.arange(count), "arrival_s": arrival, "first_token_s": arrival + ttft,
        "finish_s": arrival + e2e, "prompt_tokens": 100, "output_tokens": out_tokens, "n": 1,
        "sampling": "greedy", "status": "finished", "reason": "", "ttft_s": ttft, "e2e_s": e2e,
        "preemptions": 0, "generated_tokens": out_tokens,
    })
    steps_count = 30
    tokens = (np.arange(steps_count) % 10 + 1) * 16
    steps = pd.DataFrame({
        "step": np.arange(steps_count), "start_s": np.arange(steps_count) * 0.1, "end_s": np.arange(1, steps_count + 1) * 0.1,
        "duration_s": 0.1, "num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": 2, "batch_size": 2,
        "num_running": 2, "num_waiting": 0, "num_swapped": 0, "kv_blocks_used": tokens // 16,
        "kv_blocks_free": 1000 - tokens // 16, "kv_tokens": tokens,
        "kv_slots_reserved": tokens * (4 if policy == "contiguous" else 1),
        "cow_copies": 0, "preemptions": int(rate > 2 and policy == "paged"), "swaps_out": 0, "swaps_in": 0,
    })
    summary = {"policy": policy, "block_size": 16, "kv_blocks_total": 1000, "sharing_saved_fraction": 0.0, "wall_s": 0.01}
    return RunData(requests, steps, np.full(20, 0.02 * slow), summary, {"policy": policy})


def build_report(out_dir: Path, policies: tuple[str, ...] = POLICIES,
                 rates: tuple[float, ...] = RATES) -> dict[str, Path]:
    slo = SLO(ttft_ms=300, tpot_ms=30)
    runs = {(p, r): fake_run(p, r) for p in policies for r in rates}
    table = pd.DataFrame([{"policy": p, "load": r, "rate": r, **run_metrics(run, slo)} for (p, r), run in runs.items()])
    capacity = capacity_by_policy(table, target=0.9)
    ctx = ReportContext(command="pagedlab compare --test", trace_description="hand-made", model="tiny", gpu="h100-sxm",
                        seed=0, policies=policies, loads=rates, load_label="rate", slo=slo, slo_note="test",
                        target=0.9, timeline_load=max(rates))
    with atomic_directory(out_dir) as tmp:
        paths = write_report(tmp, table, capacity, runs, ctx)
        write_manifest(tmp, {"command": ctx.command})
    return {name: out_dir / path.relative_to(tmp) for name, path in paths.items()}


@pytest.fixture(scope="module")
def default_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One report of the default runs, built once: the tests below only read it."""
    return build_report(tmp_path_factory.mktemp("report") / "out")


def test_report_plots_decode_html_embeds_them_markdown_links_them(default_report: dict[str, Path]) -> None:
    report = default_report
    pngs = sorted((report["html"].parent / "plots").glob("*.png"))
    assert [p.name for p in pngs] == sorted(
        ["latency_cdf.png", "latency_vs_rate.png", "throughput_vs_rate.png", "kv_timeline.png", "capacity.png"]
    )
    for png in pngs:
        with Image.open(png) as image:
            image.load()  # decodes every pixel; raises on a truncated or corrupt file
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            # Not a blank canvas: a plot has many distinct colours.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 20

    # The HTML is self-contained and embeds exactly the PNG files.
    page = report["html"].read_text()
    sources = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {p.read_bytes() for p in pngs}
    for blob in embedded:
        Image.open(io.BytesIO(blob)).load()
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page

    # The Markdown has every section and links every plot.
    text = report["markdown"].read_text()
    for heading in ("## Findings", "## Latency and throughput", "## Capacity", "## Memory", "## Plots"):
        assert heading in text
    for png in pngs:
        assert f"(plots/{png.name})" in text
    summary = pd.read_csv(report["summary"])
    assert set(zip(summary["policy"], summary["load"])) == {(p, r) for p in POLICIES for r in RATES}
    # contiguous reserves 4x the slots it fills; paged fills what it holds.
    wasted = summary.groupby("policy")["kv_unused_fraction"].mean()
    assert wasted["contiguous"] == pytest.approx(0.75) and wasted["paged"] == pytest.approx(0.0)
    # paged meets ttft<=300ms at rate 1 (TTFTs 0.05..0.16 s), not at 4; contiguous never does.
    # The capacity is a range: paged passes 1 and fails 4; contiguous fails even the lowest rate.
    assert "paged 1-4; contiguous < 1" in text
    assert "| paged | 1-4 | 1 | 4 | 4 | no |" in text and "| contiguous | < 1 | - | 1 | 4 | no |" in text


def test_failed_write_leaves_nothing_and_rerun_replaces_previous_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(out) as tmp:
            (tmp / "report.md").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # neither the report nor the temporary directory
    for attempt in ("first", "second"):  # a previous report (it has a manifest) may be replaced
        with atomic_directory(out) as tmp:
            (tmp / "report.md").write_text(attempt)
            write_manifest(tmp, {"command": attempt})
    assert (out / "report.md").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old copy is gone


def test_refuses_to_replace_a_directory_that_is_not_a_report(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(OSError, match="not an earlier pagedlab report"):  # validate writes reports too
        with atomic_directory(tmp_path):
            pass
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_findings_flag_runs_whose_tables_disagree() -> None:
    slo = SLO(ttft_ms=300)
    runs = {(p, r): fake_run(p, r) for p in POLICIES for r in RATES}
    table = pd.DataFrame([{"policy": p, "load": r, "rate": r, **run_metrics(run, slo)} for (p, r), run in runs.items()])
    ctx = ReportContext(command="c", trace_description="t", model="m", gpu="g", seed=0, policies=POLICIES, loads=RATES,
                        load_label="rate", slo=slo, slo_note="test", target=0.9, timeline_load=4.0)
    capacity = capacity_by_policy(table)
    assert not any("CHECK FAILED" in line for line in findings(table, capacity, ctx))
    table.loc[(table["policy"] == "paged") & (table["load"] == 4.0), "kv_overfull_steps"] = 3
    flagged = [line for line in findings(table, capacity, ctx) if "CHECK FAILED" in line]
    assert len(flagged) == 1 and "paged@4" in flagged[0] and "contiguous" not in flagged[0]


def test_findings_at_the_highest_load_call_a_tie_a_tie_and_name_no_winner_when_nothing_finished() -> None:
    # Every policy kept up with the load (138.21, 138.09 tok/s): the report named one "the highest".
    slo = SLO(ttft_ms=300)
    runs = {(p, r): fake_run(p, r) for p in POLICIES for r in RATES}
    table = pd.DataFrame([{"policy": p, "load": r, "rate": r, **run_metrics(run, slo)} for (p, r), run in runs.items()])
    ctx = ReportContext(command="c", trace_description="t", model="m", gpu="g", seed=0, policies=POLICIES, loads=RATES,
                        load_label="rate", slo=slo, slo_note="test", target=0.9, timeline_load=4.0)
    top = table["load"] == max(RATES)
    table.loc[top, "output_throughput"] = [138.21, 138.09][:int(top.sum())]
    table.loc[top, "p99_ttft_ms"] = [100.0, 100.5][:int(top.sum())]
    lines = findings(table, capacity_by_policy(table), ctx)
    assert f"{', '.join(POLICIES)} share the highest output throughput (138 tok/s, within 1% of each other)." in \
        " ".join(lines)
    assert "At that load the p99 TTFT is the same for every policy (100 ms, within 1%)." in lines
    table.loc[top, "output_throughput"] = [138.21, 120.0][:int(top.sum())]
    assert f"{POLICIES[0]} has the highest output throughput (138 tok/s)." in \
        " ".join(findings(table, capacity_by_policy(table), ctx))
    # Only one policy has a p99 TTFT there (the other finished nothing): it is not both the lowest and the highest.
    table.loc[top & (table["policy"] == POLICIES[1]), "p99_ttft_ms"] = np.nan
    text = " ".join(findings(table, capacity_by_policy(table), ctx))
    assert f"At that load only {POLICIES[0]} has a p99 TTFT (100 ms)." in text and "the highest " + POLICIES[0] not in text

    # Nothing finished at that load: no throughput winner at 0 tok/s, no `nan/nan` batch sizes.
    table.loc[top, ["completed", "output_throughput", "mean_batch_size", "mean_num_running"]] = [0, 0.0, np.nan, np.nan]
    text = " ".join(findings(table, capacity_by_policy(table), ctx))
    assert "At the highest load (rate 4, 4 req/s) no policy finished a request." in text
    assert "0 tok/s" not in text and "nan" not in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Injected into a copy of the report: measures the layout and writes the verdict into the DOM, which
# `chromium --dump-dom` prints.
LAYOUT_PROBE = """<script>
(() => {
  const page = document.documentElement;
  const lines = el => { const r = document.createRange(); r.selectNodeContents(el); return r.getClientRects().length; };
  const names = [...document.querySelectorAll('td.text')];
  const result = {
    page_client: page.clientWidth, page_scroll: page.scrollWidth,
    names: names.map(td => td.textContent), wrapped: names.filter(td => lines(td) > 1).map(td => td.textContent),
    wrapped_numbers: [...document.querySelectorAll('td.num')].filter(td => lines(td) > 1).length,
    tables: document.querySelectorAll('table').length,
    unboxed: [...document.querySelectorAll('table')].filter(t => !t.parentElement.classList.contains('table-box')).length,
    not_right: [...document.querySelectorAll('td.num')].filter(td => getComputedStyle(td).textAlign !== 'right').length,
    boxes: [...document.querySelectorAll('.table-box')].map(b => [b.clientWidth, b.scrollWidth, getComputedStyle(b).overflowX]),
  };
  document.body.setAttribute('data-layout', JSON.stringify(result));
})();
</script></body>"""


def browser_layout(html_path: Path, width: int, profile: Path) -> dict:
    probed = html_path.with_name("probed.html")
    probed.write_text(html_path.read_text().replace("</body>", LAYOUT_PROBE))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--window-size={width},900", "--dump-dom", probed.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, f"no layout verdict in the dumped DOM ({len(dom)} characters)"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (Debian: apt-get install chromium)")
def test_report_tables_scroll_in_their_own_box_in_a_real_browser(tmp_path: Path) -> None:
    policies = ("vllm-v0", "vllm-swap", "sarathi", "orca-max", "orca-oracle", "static")
    report = build_report(tmp_path / "out", policies=policies, rates=(1.0, 2.0, 4.0))
    for width in (1400, 1920):
        layout = browser_layout(report["html"], width, tmp_path / "profile")
        assert layout["page_scroll"] <= layout["page_client"], f"the page scrolls sideways at {width} px: {layout}"
        assert layout["tables"] == 3 and layout["unboxed"] == 0
        assert set(layout["names"]) == set(policies) and layout["wrapped"] == [], (width, layout["wrapped"])
        assert layout["wrapped_numbers"] == 0 and layout["not_right"] == 0
        assert all(overflow == "auto" for _, _, overflow in layout["boxes"])
        if width == 1400:  # the latency table (16 columns) is wider: it scrolls inside its own box
            assert max(scroll - client for client, scroll, _ in layout["boxes"]) > 0


def test_capacity_is_a_range_of_tested_rates() -> None:
    import math

    from analysis.capacity import format_capacity

    table = pd.DataFrame({
        "policy": ["lowest", "lowest", "lowest", "middle", "middle", "middle", "all", "all", "none", "none"],
        "rate": [1.0, 2.0, 4.0, 1.0, 2.0, 4.0, 1.0, 2.0, 1.0, 2.0],
        "slo_attainment": [0.95, 0.5, 0.1, 0.99, 0.95, 0.2, 1.0, 0.99, 0.3, 0.2],
    })
    caps = capacity_by_policy(table).set_index("policy")
    shown = {p: format_capacity(r.capacity, r.all_loads_met, r.first_failing_load) for p, r in caps.iterrows()}
    # The lowest rate passing is not "1": the capacity lies between 1 and the first failing rate, 2.
    assert shown == {"lowest": "1-2", "middle": "2-4", "all": "2+", "none": "< 1"}
    assert math.isnan(caps.loc["all", "first_failing_load"]) and caps.loc["none", "first_failing_load"] == 1.0
    assert format_capacity(math.nan, False) == "none"
    # a trace whose requests all arrive at once: every rate scale of it is an infinite rate
    assert format_capacity(math.inf, True) == "met (all at once)"
    assert format_capacity(math.nan, False, math.inf) == "not met (all at once)"


def test_html_tables_sit_in_scroll_boxes_with_aligned_cells(default_report: dict[str, Path]) -> None:
    text = default_report["html"].read_text()
    assert text.count("<div class='table-box'><table>") == text.count("<table>") == 3
    assert "<td class='text'>paged</td>" in text and re.search(r"<td class='num'>\d", text)
    assert ".table-box{overflow-x:auto" in text and "white-space:nowrap" in text


def test_rejected_requests_are_named_per_policy_with_their_reason_and_miss_the_slos() -> None:
    slo = SLO(ttft_ms=300, tpot_ms=30)
    runs = {(p, r): fake_run(p, r) for p in POLICIES for r in RATES}
    for rate in RATES:  # `paged` rejects two requests at every load
        req = runs[("paged", rate)].requests
        req.loc[[1, 5], ["status", "reason"]] = ["rejected", "beam search: not in this engine"]
        req.loc[[1, 5], ["first_token_s", "finish_s", "ttft_s", "e2e_s"]] = np.nan
    table = pd.DataFrame([{"policy": p, "load": r, "rate": r, **run_metrics(run, slo)} for (p, r), run in runs.items()])
    capacity = capacity_by_policy(table, target=0.9)
    ctx = ReportContext(command="c", trace_description="t", model="tiny", gpu="h100-sxm", seed=0, policies=POLICIES,
                        loads=RATES, load_label="rate", slo=slo, slo_note="test", target=0.9, timeline_load=4.0)
    from analysis.findings import rejection_reasons

    lines = [s for s in findings(table, capacity, ctx, rejection_reasons(runs)) if s.startswith("Rejected requests")]
    assert lines == ["Rejected requests, which count as missing the SLOs in goodput and SLO attainment: paged 2 of 12 "
                     "at each load ('beam search: not in this engine'); none under contiguous."]
    paged = table[table["policy"] == "paged"]
    assert (paged["rejected"] == 2).all() and (paged["slo_attainment"] <= 10 / 12).all()
    assert not any(s.startswith("Rejected") for s in findings(table[table["policy"] == "contiguous"], capacity, ctx))


def test_a_policy_named_best_at_the_highest_load_says_it_rejected_requests_there() -> None:
    slo = SLO(ttft_ms=300, tpot_ms=30)
    runs = {(p, r): fake_run(p, r) for p in POLICIES for r in RATES}
    for rate in RATES:  # `paged` rejects its two slowest requests: its latencies look better for it
        req = runs[("paged", rate)].requests
        req.loc[[10, 11], ["status", "reason"]] = ["rejected", "beam search: not in this engine"]
        req.loc[[10, 11], ["first_token_s", "finish_s", "ttft_s", "e2e_s"]] = np.nan
    table = pd.DataFrame([{"policy": p, "load": r, "rate": r, **run_metrics(run, slo)} for (p, r), run in runs.items()])
    ctx = ReportContext(command="c", trace_description="t", model="tiny", gpu="h100-sxm", seed=0, policies=POLICIES,
                        loads=RATES, load_label="rate", slo=slo, slo_note="test", target=0.9, timeline_load=4.0)
    ttft = next(s for s in findings(table, capacity_by_policy(table, target=0.9), ctx) if "p99 TTFT" in s)
    assert ttft.startswith("At that load the lowest p99 TTFT is paged's (")
    assert " ms, over the requests it ran: it rejected 2 of 12), the highest contiguous's (" in ttft
    assert ttft.endswith("ms).")


def test_capacity_bars_start_at_zero_even_when_no_policy_has_a_capacity(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # With every capacity "< R" the bar axis ran from -0.06 to 0.06: a negative capacity scale around nothing.
    from analysis import plots

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig) or path)
    slo = SLO(ttft_ms=300)
    table = pd.DataFrame([{"policy": p, "load": r, "rate": r, **run_metrics(fake_run(p, r), slo)}
                          for p in POLICIES for r in RATES])
    capacity = capacity_by_policy(table).assign(capacity=np.nan, all_loads_met=False, first_failing_load=1.0)
    plots.plot_capacity(table, capacity, POLICIES, 0.9, slo, tmp_path / "capacity.png")
    low, high = figures[0].axes[1].get_ylim()
    assert low == 0 and high >= min(RATES)


@pytest.mark.parametrize("first, second, command", [
    (COMPARE_KIND, VALIDATE_KIND, "`pagedlab compare` report, which `pagedlab validate` does not replace"),
    (VALIDATE_KIND, COMPARE_KIND, "`pagedlab validate` report, which `pagedlab compare` does not replace"),
])
def test_a_report_of_one_command_is_never_replaced_by_the_other(tmp_path: Path, first: str, second: str,
                                                                command: str) -> None:
    out = tmp_path / "out"
    with atomic_directory(out, first) as tmp:
        (tmp / "report.md").write_text("kept")
        write_manifest(tmp, {"command": "first"}, first)
    with pytest.raises(OSError, match=f"^{out.resolve()}: out: holds a {command}; give another --out$"):
        with atomic_directory(out, second):
            pass
    assert (out / "report.md").read_text() == "kept"


def test_a_validation_report_from_when_both_shared_a_kind_is_still_a_validation_report(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"kind": "pagedlab-compare", "cases": ["vllm"], "files": []}')
    with pytest.raises(OSError, match="holds a `pagedlab validate` report"):
        with atomic_directory(tmp_path, COMPARE_KIND):
            pass
