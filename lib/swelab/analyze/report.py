"""Plotly figures, chart files and the self-contained report.html of a run (no metric is computed here).

Each figure function takes frames and returns a figure, or a sentence (str) saying why there is none.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from swelab.analyze import metrics, results
from swelab.io import atomic_write_text

Figure = go.Figure | str
TEMPLATE = "plotly_white"
PHASES = ("prefill_s", "decode_s", "pause_s", "tool_s")


def _label(model: str, oracle: bool) -> str:
    return f"{model} (oracle)" if oracle else model


# ---------------------------------------------------------------- figures


def leaderboard_bar(board: pd.DataFrame) -> Figure:
    """pass@1 per model with its bootstrap 95% CI; oracle rows drawn apart."""
    rows = board.dropna(subset=["pass@1"])
    if rows.empty:
        return "No attempt has been graded yet, so there is no resolution rate to chart."
    low = rows.get("pass@1_ci_low", rows["pass@1"])
    high = rows.get("pass@1_ci_high", rows["pass@1"])
    fig = go.Figure(go.Bar(
        x=[_label(m, o) for m, o in zip(rows["model"], rows["oracle"], strict=True)], y=rows["pass@1"],
        marker_color=["#999999" if o else "#1f77b4" for o in rows["oracle"]],
        error_y={"type": "data", "symmetric": False, "array": high - rows["pass@1"],
                 "arrayminus": rows["pass@1"] - low},
        text=[f"{v:.1%}" for v in rows["pass@1"]], textposition="outside"))
    fig.update_layout(title="Resolution rate (pass@1) with bootstrap 95% CI", yaxis_title="pass@1",
                      yaxis_range=[0, 1.05], template=TEMPLATE)
    return fig


def pass_at_k_curves(attempts: pd.DataFrame) -> Figure:
    """pass@k for k = 1..K per model (unbiased estimator)."""
    k_max = metrics.default_k(attempts) if not attempts.empty else 0
    if k_max < 2 or attempts["resolved"].notna().sum() == 0:
        return "pass@k curves need graded instances with at least two attempts each."
    fig = go.Figure()
    ks = list(range(1, k_max + 1))
    for model in sorted(attempts["model"].unique()):
        mine = attempts[attempts["model"] == model]
        values = [metrics.model_pass_at_k(mine, k).iloc[0] for k in ks]
        fig.add_trace(go.Scatter(x=ks, y=values, mode="lines+markers", name=model))
    fig.update_layout(title="pass@k (unbiased, Chen et al. 2021)", xaxis_title="k", yaxis_title="pass@k",
                      xaxis_dtick=1, yaxis_range=[0, 1.05], template=TEMPLATE)
    return fig


def cost_vs_resolution(board: pd.DataFrame) -> Figure:
    """$ cost against pass@1, with the Pareto front (nothing both cheaper and better)."""
    if "cost_usd" not in board:
        return "No cost column in the leaderboard."
    points = board.dropna(subset=["cost_usd", "pass@1"])
    if points.empty:
        return "No model has both a known cost and a graded attempt, so there is no cost/resolution chart."
    front = metrics.pareto_front(points)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=points["cost_usd"], y=points["pass@1"], mode="markers+text", name="models",
        text=points["model"], textposition="top center",
        customdata=points.get("cost_source", pd.Series("", index=points.index)),
        hovertemplate="%{text}<br>$%{x:.4f} (%{customdata})<br>pass@1 %{y:.1%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=front["cost_usd"], y=front["pass@1"], mode="lines", name="Pareto front",
                             line={"dash": "dash"}))
    fig.update_layout(title="Cost vs resolution", xaxis_title="total cost (USD)", yaxis_title="pass@1",
                      xaxis_rangemode="tozero", yaxis_range=[0, 1.05], template=TEMPLATE)
    return fig


def latency_percentiles(calls: pd.DataFrame) -> Figure:
    """P50/P90/P99 model-call latency per model."""
    if calls.empty or calls["latency_s"].dropna().empty:
        return "No model call with a recorded latency, so there is no latency chart."
    table = metrics.latency_table(calls, "latency_s", "call_s")
    fig = go.Figure([go.Bar(x=table.index, y=table[f"call_s_p{q}"], name=f"P{q}")
                     for q in metrics.PERCENTILES])
    fig.update_layout(title="Model-call latency percentiles", yaxis_title="seconds", barmode="group",
                      template=TEMPLATE)
    return fig


def throughput_chart(calls: pd.DataFrame, bin_s: float | None = None) -> Figure:
    """Output tokens per second over the run, per model."""
    series = metrics.throughput_over_time(calls, bin_s)
    if series.empty:
        return "No model call with an end time, so there is no throughput chart."
    bin_s = float(series["bin_s"].iloc[0])
    fig = go.Figure([go.Scatter(x=g["t_s"] / 60.0, y=g["output_tokens_per_s"], mode="lines+markers", name=m)
                     for m, g in series.groupby("model")])
    fig.update_layout(title=f"Output tokens/s over time ({bin_s:g} s bins)",
                      xaxis_title="minutes since start", yaxis_title="output tokens/s",
                      yaxis_rangemode="tozero", template=TEMPLATE)
    return fig


def per_repo_heatmap(attempts: pd.DataFrame) -> Figure:
    """pass@1 per model and repository."""
    repos = metrics.per_repo(attempts)
    repos = repos.dropna(subset=["pass@1"])
    if repos.empty:
        return "No graded attempt, so there is no per-repository breakdown."
    wide = repos.pivot(index="model", columns="repo", values="pass@1")
    text = [["" if pd.isna(v) else f"{v:.0%}" for v in row] for row in wide.to_numpy()]
    fig = go.Figure(go.Heatmap(z=wide.to_numpy(), x=list(wide.columns), y=list(wide.index), zmin=0, zmax=1,
                               colorscale="Blues", colorbar={"title": "pass@1"}, text=text,
                               texttemplate="%{text}"))
    fig.update_layout(title="pass@1 per repository", template=TEMPLATE)
    return fig


def steps_by_workers(runs: pd.DataFrame) -> Figure:
    """Steps/minute (steady state) of several runs against their worker count."""
    runs = runs.dropna(subset=["workers", "steps_per_minute"]) if not runs.empty else runs
    if runs.empty:
        return "No run with both a worker count and timed model calls to compare."
    fig = go.Figure()
    for label, group in runs.sort_values("workers").groupby("series"):
        fig.add_trace(go.Scatter(x=group["workers"], y=group["steps_per_minute"], mode="lines+markers",
                                 name=str(label), text=group["run_id"]))
    fig.update_layout(title="LLM steps per minute (steady state) by worker count", xaxis_title="workers",
                      xaxis={"tickmode": "array", "tickvals": sorted(runs["workers"].unique())},
                      yaxis_title="steps/minute", yaxis_rangemode="tozero", template=TEMPLATE)
    return fig


def profile_breakdown(profiles: pd.DataFrame) -> Figure:
    """ThunderAgent per-program time split: prefill, decode, pause, tool."""
    if profiles.empty:
        return "No ThunderAgent profile (thunderagent/profiles.json) in this run."
    fig = go.Figure([go.Bar(x=profiles["program_id"], y=profiles[phase], name=phase.removesuffix("_s"))
                     for phase in PHASES])
    fig.update_layout(title="Per-program time breakdown (ThunderAgent)", barmode="stack",
                      yaxis_title="seconds", template=TEMPLATE)
    return fig


# ---------------------------------------------------------------- assembling a run


@dataclass
class RunData:
    """Every frame the report needs, loaded once."""

    run_dir: Path
    attempts: pd.DataFrame
    calls: pd.DataFrame
    profiles: pd.DataFrame
    manifest: dict[str, Any]
    leaderboard: pd.DataFrame
    compare: pd.DataFrame = field(default_factory=pd.DataFrame)


def load_run(run_dir: str | Path, pricing: dict[str, dict[str, float]] | None = None,
             run_dirs: Iterable[str | Path] = (), seed: int = 0) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist: run the earlier notebooks first")
    attempts, calls = results.attempt_table(run_dir), results.load_calls(run_dir)
    pricing = pricing if pricing is not None else _default_pricing()
    board = pd.DataFrame()
    if not attempts.empty:
        board = metrics.leaderboard_v3(attempts, calls, pricing, seed=seed)
    return RunData(run_dir, attempts, calls, results.load_profiles(run_dir), results.load_manifest(run_dir),
                   board, compare_runs([run_dir, *run_dirs]))


def _default_pricing() -> dict[str, dict[str, float]]:
    path = results.default_pricing_path()
    return results.load_pricing(path) if path is not None else {}


def compare_runs(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (run, model): workers, steady-state steps/minute, for the multi-run chart."""
    rows = []
    for run_dir in dict.fromkeys(Path(p) for p in run_dirs):
        params, calls = results.load_resolved_params(run_dir), results.load_calls(run_dir)
        workers = params.get("workers")
        for model, group in calls.groupby("model"):
            rows.append({"run_id": run_dir.name, "series": model, "workers": workers,
                         "steps_per_minute": metrics.steps_per_minute(group)})
    return pd.DataFrame(rows, columns=["run_id", "series", "workers", "steps_per_minute"])


def build_figures(data: RunData) -> dict[str, Figure]:
    """Every chart of the report, by file name; a str value says why that chart is absent."""
    empty = "No attempt has finished in this run yet."
    board, attempts = data.leaderboard, data.attempts
    return {
        "leaderboard": leaderboard_bar(board) if not board.empty else empty,
        "pass_at_k": pass_at_k_curves(attempts) if not attempts.empty else empty,
        "cost_vs_resolution": cost_vs_resolution(board) if not board.empty else empty,
        "latency": latency_percentiles(data.calls),
        "throughput": throughput_chart(data.calls),
        "per_repo": per_repo_heatmap(attempts) if not attempts.empty else empty,
        "steps_by_workers": steps_by_workers(data.compare),
        "thunderagent_profile": profile_breakdown(data.profiles),
    }


def write_charts(run_dir: str | Path, figs: dict[str, Figure]) -> list[Path]:
    """Write `charts/<name>.html` per figure; plotly.js goes once into charts/plotly.min.js (offline)."""
    charts = Path(run_dir) / "charts"
    written = [atomic_write_text(charts / "plotly.min.js", get_plotlyjs())]
    for name, fig in figs.items():
        if isinstance(fig, go.Figure):
            page = fig.to_html(include_plotlyjs="directory", div_id=f"chart-{name}")
            written.append(atomic_write_text(charts / f"{name}.html", page))
    return written


# ---------------------------------------------------------------- report.html


def _dataset_text(manifest: dict[str, Any]) -> str:
    dataset = manifest.get("dataset") or {}
    if not isinstance(dataset, dict):
        dataset = {"source": dataset}
    keys = ("source", "name", "split", "revision", "fingerprint")
    parts = [f"{k}={dataset[k]}" for k in keys if dataset.get(k)]
    return ", ".join(parts) or str(manifest.get("dataset_source") or "unknown")


def _commit_text(manifest: dict[str, Any]) -> str:
    project = manifest.get("project") or {}
    commit = project.get("commit") or manifest.get("project_commit") or "unknown"
    return f"{commit} (uncommitted changes)" if project.get("dirty") else str(commit)


def _models_text(params: dict[str, Any], attempts: pd.DataFrame) -> str:
    models = params.get("models") or []
    if models:
        return "; ".join(f"{m.get('name')} ({m.get('kind')}"
                         + (f", {m['provider']}" if m.get("provider") else "") + ")" for m in models)
    return ", ".join(sorted(attempts["model"].unique())) or "none yet"


def _instances_text(manifest: dict[str, Any], attempts: pd.DataFrame) -> str:
    ids = [str(i) for i in manifest.get("instance_ids") or sorted(attempts["instance_id"].unique())]
    return f"{len(ids)}: {', '.join(ids[:30])}" + (" …" if len(ids) > 30 else "")


def _limits_text(params: dict[str, Any]) -> str:
    parts = [f"{params[key]} {unit}" for key, unit in (("attempt_timeout_s", "s per attempt"),
                                                       ("command_timeout_s", "s per shell command"),
                                                       ("workers", "workers"), ("eval_workers", "eval workers"))
             if params.get(key) is not None]
    return ", ".join(parts) or "unknown"


def _evaluation_text(params: dict[str, Any], attempts: pd.DataFrame) -> str:
    """The backend asked for, and the labels the verdicts actually carry."""
    labels = sorted(attempts["eval_label"].dropna().unique()) if "eval_label" in attempts else []
    asked = f"eval_backend={params.get('eval_backend', 'unknown')}"
    return f"{asked}; verdicts: {', '.join(map(str, labels))}" if labels else f"{asked}; no verdicts yet"


def _header(data: RunData) -> str:
    """What was run, from the manifest (and the cells)."""
    manifest = data.manifest
    params = manifest.get("params") or {}
    name = params.get("name") or "unknown"
    facts = [
        ("params", f"{name} ({manifest['params_file']})" if manifest.get("params_file") else name),
        ("run_id", manifest.get("run_id") or data.run_dir.name),
        ("instances", _instances_text(manifest, data.attempts)),
        ("dataset", _dataset_text(manifest)),
        ("models", _models_text(params, data.attempts)),
        ("attempts per instance (K)", params.get("attempts", "unknown")),
        ("limits", _limits_text(params)),
        ("evaluation", _evaluation_text(params, data.attempts)),
        ("project commit", _commit_text(manifest)),
        ("rendered", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    items = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f"<table class='facts'>{items}</table>"


MAIN_COLUMNS = ("model", "oracle", "attempted", "attempts", "pending", "resolved", "pass@1", "95% CI",
                "run_failure_rate", "wrong_answer_rate", "cost_usd", "cost_source", "note")


def _main_board(board: pd.DataFrame) -> pd.DataFrame:
    """The headline columns, with the CI as one readable column."""
    shown = board.copy()
    shown["95% CI"] = [("" if pd.isna(lo) else f"{lo:.0%}–{hi:.0%}")
                       for lo, hi in zip(board["pass@1_ci_low"], board["pass@1_ci_high"], strict=True)]
    return shown


def _table(board: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    if board.empty:
        return "<p>No attempt has finished in this run yet, so there is no leaderboard.</p>"
    shown = board[[c for c in columns if c in board]].copy() if columns else board.copy()
    for column in shown.columns:
        if column.startswith("pass@") or column.endswith("_rate") or column.startswith("fail_"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
    return shown.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:,.4g}", classes="board",
                         border=0, escape=True)


def _pairs_table(attempts: pd.DataFrame, board: pd.DataFrame) -> str:
    """Exact McNemar tests between contenders (attempt 1, instances both were graded on)."""
    frame = metrics.pairwise_comparisons(attempts, board)
    if frame.empty:
        return "<p class='absent'>Fewer than two contenders, so there is no paired comparison.</p>"
    frame = frame.rename(columns={"a_only": "only A", "b_only": "only B"})
    return ("<p>Exact McNemar test on attempt 1 of the instances both models were graded on; "
            "a small p-value means the two resolution rates differ by more than chance.</p>"
            + frame.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.3g}", classes="board",
                            border=0))


TITLES = {
    "leaderboard": ("Resolution rate", "pass@1 per model; the bars are bootstrap 95% confidence intervals."),
    "pass_at_k": ("pass@k", "How the chance of at least one resolved attempt grows with k."),
    "cost_vs_resolution": ("Cost vs resolution", "Models on the dashed Pareto front are not beaten on both "
                                                 "cost and pass@1 by any other model."),
    "latency": ("Model-call latency", "P50/P90/P99 seconds per model call."),
    "throughput": ("Throughput over time", "Output tokens per second, per model, over the run."),
    "per_repo": ("Per repository", "pass@1 per model and repository."),
    "steps_by_workers": ("Steps per minute by worker count", "LLM calls per minute in the steady state "
                         "(first and last 10% of the time span cut), for this run and the runs compared."),
    "thunderagent_profile": ("ThunderAgent program profile", "Seconds per program in prefill, decode, "
                             "pause and tool execution."),
}


def _section(name: str, fig: Figure) -> str:
    title, blurb = TITLES.get(name, (name.replace("_", " "), ""))
    if isinstance(fig, go.Figure):
        body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}")
    else:
        body = f"<p class='absent'>{html.escape(fig)}</p>"
    return f"<section><h2>{html.escape(title)}</h2><p>{html.escape(blurb)}</p>{body}</section>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table.facts th{text-align:left;padding-right:1em;vertical-align:top}
table.board{border-collapse:collapse;font-size:12px;display:block;overflow-x:auto}
table.board th,table.board td{border-bottom:1px solid #ddd;padding:3px 6px;white-space:nowrap;text-align:left}
p.absent{color:#777;font-style:italic}
"""

_GLOSSARY = (
    "<p><b>pass@1</b>: share of graded attempts that resolve the instance (official SWE-bench grading), "
    "averaged over instances; <b>pass@k</b>: unbiased estimator of Chen et al. (2021). Run failures "
    "(malformed output, timeout, provider error, error) count as unresolved and are reported apart "
    "from wrong answers. <i>pending</i> attempts are finished but not graded yet and are left out. "
    "CIs are seeded percentile bootstraps over instances. Cost comes from the provider when reported, "
    "else token counts × approximate prices (params/pricing.yaml); its source is in "
    "<code>cost_source</code>. Models marked <i>oracle</i> submit the reference patch: a harness check, "
    "not a contender.</p>")


def _discrimination_warning(run_dir: Path) -> str:
    """Instances whose FAIL_TO_PASS tests pass with no patch at all cannot tell a fix from no fix: say so."""
    path = run_dir / "eval" / "discrimination.json"
    if not path.exists():
        return ""
    flagged = sorted(iid for iid, flag in json.loads(path.read_text()).items() if flag.get("non_discriminating"))
    if not flagged:
        return ""
    return ("<p class='warning'><b>Non-discriminating instances</b> (their FAIL_TO_PASS tests pass without any "
            f"patch in this environment, so resolving them proves nothing): {html.escape(', '.join(flagged))}</p>")


def render_html(data: RunData, figs: dict[str, Figure]) -> str:
    """The whole report page: plotly.js embedded once, every figure after it without its own copy."""
    sections = "".join(_section(name, fig) for name, fig in figs.items())
    board = data.leaderboard
    main = _table(_main_board(board) if not board.empty else board, MAIN_COLUMNS)
    full = "" if data.leaderboard.empty else (
        "<details><summary>Full leaderboard (effort, failures by kind, per-repo, tokens, latency)</summary>"
        f"{_table(data.leaderboard)}</details>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>swelab report {html.escape(data.run_dir.name)}</title><style>{_STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>swelab report: {html.escape(data.run_dir.name)}</h1>{_header(data)}"
        f"{_discrimination_warning(data.run_dir)}<h2>Leaderboard</h2>{_GLOSSARY}{main}{full}"
        f"<h2>Paired comparison</h2>{_pairs_table(data.attempts, data.leaderboard)}{sections}</body></html>")


def render_report(run_dir: str | Path, run_dirs: Iterable[str | Path] = (),
                  pricing: dict[str, dict[str, float]] | None = None, seed: int = 0) -> Path:
    """Write `<run_dir>/report.html` (self-contained, works offline) and return its path."""
    data = load_run(run_dir, pricing, run_dirs, seed)
    return atomic_write_text(Path(run_dir) / "report.html", render_html(data, build_figures(data)))



def setup_notebook_plotting() -> None:
    """Figures in executed notebooks carry plotly.js inline once (offline) besides plotly's own mimetype, so
    the nbconvert export of a notebook shows its charts too, with no network."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"
