"""swelab.analyze.report: figures, chart files and report.html, checked in a real headless Chromium."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import pytest
from bs4 import BeautifulSoup
from test_results import write_synthetic_run

from swelab.analyze import report
from swelab.io import write_json

ENSURE = Path(__file__).with_name("ensure_chromium.sh")
PLOTLY_BANNER = "* plotly.js v"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of a headless-capable Chromium; installs it with apt when root (tests/ensure_chromium.sh)."""
    done = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not done.stdout.strip():
        pytest.skip(f"chromium cannot be installed here: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]


def _dump_dom(browser: str, page: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


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
    assert len(expected) == 8
    rendered = _chart_divs(_dump_dom(chromium, path))
    assert set(rendered) == expected
    blank = [name for name, div in rendered.items() if div.select_one("svg.main-svg") is None]
    assert not blank, f"charts without an svg.main-svg after rendering: {blank}"
