"""swelab.analyze.report: figures, chart files and report.html, checked in a real headless Chromium."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from bs4 import BeautifulSoup
from scaffold import chromium_dom, write_params
from test_results import write_synthetic_run

from swelab.analyze import artifacts, display, report, results
from swelab.io import write_json
from swelab.params import load_params

PLOTLY_BANNER = "* plotly.js v"


def _dump_dom(browser: str, page: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        return chromium_dom(browser, page.as_uri(), Path(profile))


def _chart_divs(html_text: str) -> dict[str, object]:
    soup = BeautifulSoup(html_text, "html.parser")
    return {div["id"]: div for div in soup.find_all("div", id=lambda i: bool(i) and i.startswith("chart-"))}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = write_synthetic_run(tmp_path / "synthetic-0123abcd", workers=4)
    write_json(run / "thunderagent" / "profiles.json", [
        {"program_id": "p1", "prefill_s": 1.0, "decode_s": 4.0, "pause_s": 0.5, "tool_s": 2.0},
        {"program_id": "p2", "prefill_s": 0.5, "decode_s": 2.0, "pause_s": 0.0, "tool_s": 6.0}])
    return run


def test_report_embeds_plotly_once_and_names_the_run(run_dir: Path, tmp_path: Path) -> None:
    other = write_synthetic_run(tmp_path / "synthetic-8-workers", workers=8)
    path = report.render_report(run_dir, run_dirs=[other])
    text = path.read_text(encoding="utf-8")
    assert path == run_dir / "report.html"
    assert text.count(PLOTLY_BANNER) == 1
    soup = BeautifulSoup(text, "html.parser")
    assert not [tag for tag in soup.find_all("script") if tag.get("src")]   # nothing fetched: works offline
    for fact in ("synthetic-0123abcd", "revision=abc123", "deadbeef", "org/model-a", "gold (oracle)"):
        assert fact in text
    figs = report.build_figures(report.load_run(run_dir, run_dirs=[other]))
    drawn = {name for name, fig in figs.items() if isinstance(fig, go.Figure)}
    assert drawn == set(figs)                       # this run has data for every chart
    assert set(_chart_divs(text)) == {f"chart-{name}" for name in drawn}


def test_missing_data_gives_sentences_not_charts(tmp_path: Path) -> None:
    empty = tmp_path / "empty-run"
    empty.mkdir()
    text = report.render_report(empty).read_text(encoding="utf-8")
    assert not _chart_divs(text)
    assert "no leaderboard" in text and "No ThunderAgent profile" in text
    figs = report.build_figures(report.load_run(empty))
    assert all(isinstance(fig, str) and fig for fig in figs.values())


def test_run_without_calls_has_no_latency_chart(run_dir: Path) -> None:
    for calls in (run_dir / "cells").glob("*/*/*/calls.jsonl"):
        calls.unlink()
    figs = report.build_figures(report.load_run(run_dir))
    assert isinstance(figs["latency"], str) and "latency" in figs["latency"]
    assert isinstance(figs["leaderboard"], go.Figure)


def test_write_charts_share_one_plotly_js(run_dir: Path) -> None:
    figs = report.build_figures(report.load_run(run_dir))
    written = report.write_charts(run_dir, figs)
    charts = run_dir / "charts"
    assert (charts / "plotly.min.js").read_text(encoding="utf-8").count(PLOTLY_BANNER) == 1
    assert {p.name for p in written} == {"plotly.min.js"} | {f"{n}.html" for n in figs}
    assert PLOTLY_BANNER not in (charts / "leaderboard.html").read_text(encoding="utf-8")


def test_every_chart_renders_in_headless_chromium(chromium: str, run_dir: Path, tmp_path: Path) -> None:
    other = write_synthetic_run(tmp_path / "synthetic-8-workers", workers=8)
    path = report.render_report(run_dir, run_dirs=[other])
    expected = set(_chart_divs(path.read_text(encoding="utf-8")))
    assert len(expected) == 10
    rendered = _chart_divs(_dump_dom(chromium, path))
    assert set(rendered) == expected
    blank = [name for name, div in rendered.items() if div.select_one("svg.main-svg") is None]
    assert not blank, f"charts without an svg.main-svg after rendering: {blank}"


# ---------------------------------------------------------------- write_analysis: every artifact from one load


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Path]]:
    """Record every run folder that results.attempt_table / results.load_calls read."""
    seen: dict[str, list[Path]] = {"attempt_table": [], "load_calls": []}
    for name in seen:
        original = getattr(results, name)

        def counting(run_dir, _original=original, _name=name):
            seen[_name].append(Path(run_dir))
            return _original(run_dir)

        monkeypatch.setattr(results, name, counting)
    return seen


def test_write_analysis_writes_every_artifact_from_one_load(run_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    other = write_synthetic_run(tmp_path / "synthetic-8-workers", workers=8)
    seen = _count_loads(monkeypatch)
    analysis = artifacts.write_analysis(run_dir, run_dirs=[other])
    assert seen["attempt_table"] == [run_dir]                 # the run is loaded once, not once per artifact
    assert seen["load_calls"] == [run_dir, other]             # the other run only for the comparison chart
    names = {p.relative_to(run_dir).as_posix() for p in analysis.written}
    assert names == {"leaderboard.csv", "leaderboard.parquet", "charts/plotly.min.js", "report.html",
                     *(f"charts/{n}.html" for n in analysis.figures)}
    assert all(p.is_file() for p in analysis.written) and analysis.report_path == run_dir / "report.html"
    assert set(analysis.boards) == {"v0", "v1", "v2", "v3", "v4"}
    assert list(pd.read_csv(run_dir / "leaderboard.csv")["model"]) == list(analysis.boards["v4"]["model"])
    assert "pass@1_trusted" in analysis.boards["v4"] and "pass@1_trusted" not in analysis.boards["v3"]
    assert all(isinstance(f, go.Figure) for f in analysis.figures.values())
    text = analysis.report_path.read_text(encoding="utf-8")
    assert set(_chart_divs(text)) == {f"chart-{n}" for n in analysis.figures}
    assert "McNemar" in text and not analysis.pairs.empty
    assert analysis.outcomes.loc["gold"].sum() == (analysis.data.attempts["model"] == "gold").sum()
    assert "attempts" in analysis.summary


def test_write_analysis_of_a_run_with_no_attempt_writes_no_leaderboard(tmp_path: Path) -> None:
    empty = tmp_path / "empty-run"
    empty.mkdir()
    analysis = artifacts.write_analysis(empty)
    assert analysis.boards == {} and analysis.outcomes.empty
    assert not (empty / "leaderboard.csv").exists()
    assert analysis.report_path.is_file() and (empty / "charts" / "plotly.min.js").is_file()
    assert all(isinstance(f, str) for f in analysis.figures.values())


def test_write_analysis_names_a_missing_run_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        artifacts.write_analysis(tmp_path / "nowhere")


def test_run_dir_for_prefers_the_given_folder(tmp_path: Path) -> None:
    params = write_params(tmp_path, "name: p\nmodels:\n  - {name: gold, kind: gold}\n")
    assert artifacts.run_dir_for(params, tmp_path / "elsewhere") == tmp_path / "elsewhere"
    assert artifacts.run_dir_for(params) == load_params(params).run_dir


def test_counts_by_model_has_a_column_per_value() -> None:
    frame = pd.DataFrame({"model": ["a", "a", "b"], "status": ["ok", "timeout", "ok"]})
    table = artifacts.counts_by_model(frame, "status")
    assert table.loc["a", "timeout"] == 1 and table.loc["b", "timeout"] == 0 and table.loc["a", "ok"] == 1
    assert artifacts.counts_by_model(frame.iloc[:0], "status").empty


def test_displayables_heads_tables_and_turns_reasons_into_sentences() -> None:
    board, fig = pd.DataFrame({"model": ["a"]}), go.Figure()
    shown = display.displayables({"v0": board, "latency": "No model call."})
    assert [type(s).__name__ for s in shown] == ["Markdown", "DataFrame", "Markdown"]
    assert shown[0].data == "### v0" and shown[2].data == "**latency**: No model call."
    assert display.displayables({"chart": fig}, headings=False) == [fig]
    assert [s.data for s in display.displayables({}, empty="Nothing yet.")] == ["Nothing yet."]
    assert display.displayables([fig, fig]) == [fig, fig]


# ---------------------------------------------------------------- analysis v2 in the report


def test_report_states_the_detectable_difference_and_the_new_columns(run_dir: Path) -> None:
    write_json(run_dir / "eval" / "discrimination.json", {
        "astropy__astropy-1": {"non_discriminating": False, "flaky": True, "repeats": 3,
                               "gold_resolved": [True, False, True], "no_patch_resolved": [False] * 3},
        "django__django-2": {"non_discriminating": False, "flaky": False, "repeats": 3,
                             "gold_resolved": [True] * 3, "no_patch_resolved": [False] * 3}})
    analysis = artifacts.write_analysis(run_dir)
    text = analysis.report_path.read_text(encoding="utf-8")
    # two tasks with a graded contender, K = 2 attempts (max per instance): (1.96 + 0.84) * sqrt(0.25 / 2)
    assert "With 2 tasks and K=2, differences under 99 points cannot be told apart" in text
    assert analysis.detectable.startswith("With 2 tasks and K=2")
    soup = BeautifulSoup(text, "html.parser")
    headers = [th.get_text() for th in soup.select("table.board")[0].find_all("th")]
    for column in ("pass@1_trusted", "n_trusted", "pass^k", "SE (repo-clustered)", "cost_per_resolved"):
        assert column in headers, column
    assert "Flaky instances (repeated gold / no-patch verdicts disagree): astropy__astropy-1" in text
    board = analysis.boards["v4"].set_index("model")
    assert board.loc["org/model-a", "pass@1"] == 0.25                      # astropy 1/2, django 0/1 graded
    assert board.loc["org/model-a", "pass@1_trusted"] == 0.0               # only django counts
    assert "A − B (pass@1)" in text and "detectable (80% power)" in text
    assert "Contamination probe" in text and "kind: probe" in text


def test_the_report_says_which_token_counts_are_estimates() -> None:
    calls = pd.DataFrame({"model": ["m", "m", "p"], "prompt_tokens": [5, 6, 7],
                          "token_source": ["approx", "provider", "provider"]})
    text = report.estimated_tokens_text(calls)
    assert "m (0% tokenizer, 50% chars/4)" in text and "p (" not in text
    assert "reported by the provider" in report.estimated_tokens_text(calls.assign(token_source="provider"))
