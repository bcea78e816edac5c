"""Every artifact of the analysis from one load of the run: leaderboard.csv/.parquet, charts/*.html, report.html.

04_analyze calls `write_analysis` once and displays what it returns; `swelab run` calls it when 04 did not run, so
the artifacts never depend on a notebook's cells.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from swelab.analyze import memo, metrics, results
from swelab.analyze.report import (
    Figure,
    RunData,
    build_figures,
    detectable_text,
    load_run,
    probe_summary,
    write_charts,
    write_report,
)
from swelab.params import load_params

NO_ATTEMPT = "No attempt has finished in this run yet."


@dataclass
class AnalysisResult:
    """What write_analysis computed and wrote; the notebook only displays these."""

    data: RunData
    boards: dict[str, pd.DataFrame]
    """Leaderboards v0..v3 by name; empty when no attempt has finished (then no leaderboard file is written)."""
    pairs: pd.DataFrame
    """Exact McNemar comparisons between contenders (metrics.pairwise_comparisons)."""
    figures: dict[str, Figure]
    """Every chart by name; a str says why that chart is absent."""
    outcomes: pd.DataFrame
    """Attempts per model and outcome (resolved, wrong, run failures, pending)."""
    written: list[Path] = field(default_factory=list)
    """Every file written, report.html last."""
    memo: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The iteration memo: each exit criterion of the plan, its status (met / not met / not measurable), why."""
    flags: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per instance: non-discriminating, flaky, gold fails, trusted (metrics.instance_flags)."""
    difficulty: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per instance: share of the contenders' attempts that resolve it, failures by class, hardest first."""
    unsolved: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The instances no contender resolved, with how their attempts failed."""
    probe: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Contamination probe scores per run, model and task family (metrics.probe_scores)."""
    detectable: str = ""
    """The run's minimum detectable difference, in words."""

    @property
    def run_dir(self) -> Path:
        return self.data.run_dir

    @property
    def report_path(self) -> Path:
        return self.written[-1]

    @property
    def summary(self) -> str:
        return f"{self.run_dir}: {len(self.data.attempts)} attempts, {len(self.data.calls)} model calls"


def counts_by_model(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows per model and value of `column` (status, outcome), one column per value; empty frame in, empty out."""
    if frame.empty:
        return pd.DataFrame(index=pd.Index([], name="model"))
    return frame.groupby(["model", column]).size().unstack(fill_value=0)


def leaderboards(data: RunData) -> dict[str, pd.DataFrame]:
    """v0: resolution (pass@k, pass^k) · v1: + CI, standard errors, effort, run failures · v2: + per repository
    · v3: + tokens, cost, latency · v4: + trusted-instance score, cost per resolved, contamination probe."""
    if data.attempts.empty:
        return {}
    attempts = data.attempts
    # v4 (the run's leaderboard) was computed by load_run; v3 is it without v4's columns, not computed twice
    v3 = data.leaderboard.drop(columns=V4_ONLY, errors="ignore")
    return {"v0": metrics.leaderboard_v0(attempts), "v1": metrics.leaderboard_v1(attempts),
            "v2": metrics.leaderboard_v2(attempts), "v3": v3, "v4": data.leaderboard}


V4_ONLY = ["pass@1_trusted", "n_trusted", "cost_per_resolved", "probe_exact", "probe_any_hit", "probe_cost_usd"]


def run_dir_for(params_file: str | Path, run_dir: str | Path | None = None) -> Path:
    """The run folder to analyse: `run_dir` when given, else the one the params file names."""
    return Path(run_dir) if run_dir is not None else load_params(params_file).run_dir


def write_analysis(run_dir: str | Path, pricing: dict[str, dict[str, float]] | None = None,
                   run_dirs: Iterable[str | Path] | None = None, seed: int = 0) -> AnalysisResult:
    """Load the run once; write leaderboard.csv/.parquet (when an attempt has finished), charts/*.html and
    report.html; return the frames and figures. `run_dirs` are other runs for the steps-by-workers chart."""
    data = load_run(run_dir, pricing, run_dirs or (), seed)
    boards = leaderboards(data)
    pairs = metrics.pairwise_comparisons(data.attempts, data.leaderboard)
    figures = build_figures(data)
    written: list[Path] = []
    if boards:
        written += results.write_leaderboards(data.run_dir, data.leaderboard)
    written += write_charts(data.run_dir, figures)
    written.append(write_report(data, figures, pairs))
    unsolved = metrics.unsolved_by_all(data.difficulty) if not data.difficulty.empty else pd.DataFrame()
    return AnalysisResult(data, boards, pairs, figures, counts_by_model(data.attempts, "outcome"), written,
                          memo=memo.memo_frame(data.memo), flags=data.flags, difficulty=data.difficulty,
                          unsolved=unsolved, probe=probe_summary(data.probe), detectable=detectable_text(data))
