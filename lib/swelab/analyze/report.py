"""Plotly figures, chart files and the self-contained report.html of a run (no metric is computed here).

Each figure function takes frames and returns a figure, or a sentence (str) saying why there is none.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs

from swelab.analyze import memo as memo_lib
from swelab.analyze import metrics, results
from swelab.diffs import patch_paths
from swelab.generate.autoscale import workers_timeline
from swelab.io import atomic_write_text, read_json, read_jsonl
from swelab.rundir import RunLayout

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
        text=[f"{v:.1%}" for v in rows["pass@1"]], textposition="outside", name="all instances"))
    trusted = rows["pass@1_trusted"] if "pass@1_trusted" in rows else None
    if trusted is not None and not trusted.round(12).equals(rows["pass@1"].round(12)):
        # some instances cannot count: their score without them, side by side
        fig.add_trace(go.Bar(x=list(fig.data[0].x), y=trusted, name="trusted instances only",
                             marker_color="#ff7f0e", text=[("" if pd.isna(v) else f"{v:.1%}") for v in trusted],
                             textposition="outside"))
        fig.update_layout(barmode="group")
    fig.update_layout(title="Resolution rate (pass@1) with bootstrap 95% CI", yaxis_title="pass@1",
                      yaxis_range=[0, 1.05], template=TEMPLATE)
    return fig


def pass_at_k_curves(attempts: pd.DataFrame) -> Figure:
    """pass@k (Chen et al. 2021) and pass^k (tau-bench) for k = 1..K per model, both unbiased estimators."""
    k_max = metrics.default_k(attempts) if not attempts.empty else 0
    if k_max < 2 or attempts["resolved"].notna().sum() == 0:
        return "pass@k curves need graded instances with at least two attempts each."
    fig = go.Figure()
    ks = list(range(1, k_max + 1))
    colors = qualitative.Plotly
    for number, model in enumerate(sorted(attempts["model"].unique())):
        mine = attempts[attempts["model"] == model]
        color = colors[number % len(colors)]
        at_k = [metrics.model_pass_at_k(mine, k).iloc[0] for k in ks]
        hat_k = [metrics.model_pass_hat_k(mine, k).iloc[0] for k in ks]
        fig.add_trace(go.Scatter(x=ks, y=at_k, mode="lines+markers", name=f"{model} pass@k", legendgroup=model,
                                 line={"color": color}))
        fig.add_trace(go.Scatter(x=ks, y=hat_k, mode="lines+markers", name=f"{model} pass^k", legendgroup=model,
                                 line={"color": color, "dash": "dot"}, marker={"symbol": "square"}))
    fig.update_layout(title="pass@k (any of k resolves, solid) and pass^k (all k resolve, dotted)",
                      xaxis_title="k", yaxis_title="share of instances", xaxis_dtick=1, yaxis_range=[0, 1.05],
                      template=TEMPLATE)
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
        customdata=list(zip(points.get("cost_source", pd.Series("", index=points.index)),
                            [_money(v) for v in points.get("cost_per_resolved", pd.Series(index=points.index))],
                            [_money(v) for v in points.get("probe_cost_usd", pd.Series(index=points.index))],
                            strict=True)),
        hovertemplate="%{text}<br>$%{x:.4f} (%{customdata[0]})<br>pass@1 %{y:.1%}<br>per resolved instance: "
                      "%{customdata[1]}<br>contamination probe: %{customdata[2]}<extra></extra>"))
    fig.add_trace(go.Scatter(x=front["cost_usd"], y=front["pass@1"], mode="lines", name="Pareto front",
                             line={"dash": "dash"}))
    fig.update_layout(title="Cost vs resolution", xaxis_title="total cost (USD)", yaxis_title="pass@1",
                      xaxis_rangemode="tozero", yaxis_range=[0, 1.05], template=TEMPLATE)
    return fig


def _money(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"${float(value):.4f}"


def difficulty_chart(difficulty: pd.DataFrame, flags: pd.DataFrame) -> Figure:
    """Share of contender attempts (models x attempts) that resolve each instance, hardest first; instances
    whose verdicts cannot count (non-discriminating, flaky, gold fails) drawn grey."""
    if difficulty.empty:
        return "No contender attempt has been graded yet, so there is no per-instance difficulty."
    untrusted = set(metrics.untrusted_ids(flags))
    colors = ["#bbbbbb" if iid in untrusted else "#1f77b4" for iid in difficulty["instance_id"]]
    fig = go.Figure(go.Bar(
        x=difficulty["instance_id"], y=difficulty["share_resolved"], marker_color=colors,
        customdata=difficulty[["models_resolving", "models", "graded"]].to_numpy(),
        hovertemplate="%{x}<br>%{y:.0%} of %{customdata[2]} graded attempts resolve<br>"
                      "%{customdata[0]} of %{customdata[1]} models resolve it at least once<extra></extra>"))
    fig.update_layout(title="Per-instance difficulty: share of models x attempts that resolve it (grey: cannot "
                      "count)", yaxis_title="share resolved", yaxis_range=[0, 1.05], template=TEMPLATE)
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


def workers_over_time(manifest: dict[str, Any]) -> Figure | str:
    """`workers: auto`: the generation workers the run chose over time (a step line)."""
    rows = workers_timeline(manifest)
    if not rows:
        count = ((manifest or {}).get("workers") or {}).get("count")
        return f"A fixed worker count ({count}) was used." if count else "No worker record in this run."
    frame = pd.DataFrame(rows)
    fig = go.Figure(go.Scatter(x=pd.to_datetime(frame["at"]), y=frame["workers"], mode="lines+markers",
                               line_shape="hv", text=frame.get("reason"), name="workers"))
    fig.update_layout(xaxis_title="time (UTC)", yaxis_title="generation workers", height=320)
    return fig


def estimated_tokens_text(calls: pd.DataFrame) -> str:
    """Which models' token counts (and the costs priced from them) are partly estimated, and how."""
    shares = metrics.token_source_shares(calls)
    if shares.empty:
        return ""
    estimated = shares[(shares["tokens_tokenizer"] + shares["tokens_approx"]) > 0]
    if estimated.empty:
        return "<p>Every token count was reported by the provider.</p>"
    parts = [f"{html.escape(str(model))} ({row.tokens_tokenizer:.0%} tokenizer, {row.tokens_approx:.0%} chars/4)"
             for model, row in estimated.iterrows()]
    return ("<p class='mdd'>Token counts and priced costs are partly estimated (the provider reported no usage) "
            f"for: {'; '.join(parts)}.</p>")


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
    """Attempts of the graded models (the contamination probe's cells are in `probe`)."""
    calls: pd.DataFrame
    profiles: pd.DataFrame
    manifest: dict[str, Any]
    leaderboard: pd.DataFrame
    compare: pd.DataFrame = field(default_factory=pd.DataFrame)
    flags: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=metrics.FLAG_COLUMNS))
    """metrics.instance_flags: which instances' verdicts cannot count, and why."""
    probe: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROBE_ROW_COLUMNS))
    """One row per probe attempt, of this run and the runs compared (column run_id)."""
    difficulty: pd.DataFrame = field(default_factory=pd.DataFrame)
    """metrics.instance_difficulty over the contenders (baselines left out)."""
    memo: list[memo_lib.Criterion] = field(default_factory=list)
    """The plan's exit criteria, judged (swelab.analyze.memo)."""


PROBE_ROW_COLUMNS = ["run_id", "model", "instance_id", "attempt", "family", "status", "probe_files", "gold_files",
                     "cost_usd"]


def model_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in (manifest.get("params") or {}).get("models") or [] if isinstance(m, dict)]


def probe_model_names(manifest: dict[str, Any], cells: pd.DataFrame) -> set[str]:
    """Models of kind probe: from the params, and any cell whose mode says so (a run without a manifest)."""
    names = {str(m.get("name")) for m in model_entries(manifest) if m.get("kind") == "probe"}
    if not cells.empty and "mode" in cells:
        names |= set(cells.loc[cells["mode"] == "probe", "model"])
    return names


def family_of(instance_id: str) -> str:
    """minibench (written for this project: in no training set) or SWE-bench (everything else)."""
    return "minibench" if str(instance_id).startswith("minibench__") else "SWE-bench"


def _named_files(layout: RunLayout, model: str, instance_id: str, attempt: int) -> list[str] | None:
    """The probe's answer: the cell's probe_files, else the trajectory's `probe` row (older runners)."""
    cell = layout.read_cell(model, instance_id, attempt)
    if cell is not None and cell.probe_files is not None:
        return list(cell.probe_files)
    trajectory = layout.attempt_dir(model, instance_id, attempt) / "trajectory.jsonl"
    if not trajectory.is_file():
        return None
    rows = [row for row in read_jsonl(trajectory) if row.get("role") == "probe"]
    return list(rows[-1].get("probe_files") or []) if rows else None


def load_probe(run_dir: Path, cells: pd.DataFrame, names: set[str],
               pricing: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per probe attempt: the files named, the gold patch's files (from instances.jsonl), the cost."""
    mine = cells[cells["model"].isin(names)] if not cells.empty else cells
    if mine.empty:
        return pd.DataFrame(columns=PROBE_ROW_COLUMNS)
    layout = RunLayout(run_dir)
    gold = {row["instance_id"]: patch_paths(row.get("patch") or "") for row in read_jsonl(layout.instances)} \
        if layout.instances.is_file() else {}
    costed = metrics.row_costs(mine, pricing)
    rows = [{"run_id": run_dir.name, "model": row["model"], "instance_id": row["instance_id"],
             "attempt": int(row["attempt"]), "family": family_of(row["instance_id"]), "status": row["status"],
             "probe_files": _named_files(layout, row["model"], row["instance_id"], int(row["attempt"])),
             "gold_files": gold.get(row["instance_id"], []), "cost_usd": row["cost_usd"]}
            for row in costed.to_dict("records")]
    return pd.DataFrame(rows, columns=PROBE_ROW_COLUMNS)


def probe_for_contenders(scores: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    """The probe's scores keyed by the contenders it probes: a probe entry covers every graded entry with the
    same provider and model_id (the probe of `qwen` is shown on qwen's patch and shell rows)."""
    if scores.empty:
        return scores
    entries = model_entries(manifest)
    key = {str(m.get("name")): (m.get("provider"), m.get("model_id")) for m in entries}
    probes = {str(m.get("name")) for m in entries if m.get("kind") == "probe"}
    rows = []
    for name, target in key.items():
        if name in probes or target == (None, None):
            continue
        mine = scores[scores["model"].map(lambda p, t=target: p in probes and key.get(p) == t)]
        rows += [{**row, "model": name} for row in mine.to_dict("records")]
    return pd.DataFrame(rows, columns=scores.columns)


def load_discrimination(run_dir: Path) -> pd.DataFrame:
    """eval/discrimination.json as one row per instance (empty before evaluation)."""
    path = RunLayout(run_dir).discrimination
    data = read_json(path) if path.is_file() else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object keyed by instance_id")
    return pd.DataFrame([{"instance_id": iid, **(flag if isinstance(flag, dict) else {})}
                         for iid, flag in sorted(data.items())], columns=None if data else ["instance_id"])


def load_run(run_dir: str | Path, pricing: dict[str, dict[str, float]] | None = None,
             run_dirs: Iterable[str | Path] = (), seed: int = 0) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist: run the earlier notebooks first")
    cells, calls = results.attempt_table(run_dir), results.load_calls(run_dir)
    manifest = results.load_manifest(run_dir)
    params = manifest.get("params") or {}
    pricing = pricing if pricing is not None else _default_pricing()
    probes = probe_model_names(manifest, cells)
    attempts = cells[~cells["model"].isin(probes)].reset_index(drop=True)
    flags = metrics.instance_flags(load_discrimination(run_dir), attempts)
    probe = load_probe(run_dir, cells, probes, pricing)
    for other in dict.fromkeys(Path(p) for p in run_dirs if Path(p) != run_dir):
        other_cells, other_manifest = results.load_cells(other), results.load_manifest(other)
        found = load_probe(other, other_cells, probe_model_names(other_manifest, other_cells), pricing)
        probe = pd.concat([probe, found], ignore_index=True) if not found.empty else probe
    board = pd.DataFrame()
    baselines = memo_lib.baseline_models(params) or (["empty"] if "empty" in set(attempts["model"]) else [])
    if not attempts.empty:
        scores = metrics.probe_scores(probe[probe["run_id"] == run_dir.name])
        board = metrics.leaderboard_v4(attempts, calls, pricing, flags, probe_for_contenders(scores, manifest),
                                       seed=seed)
    inventory = memo_lib.artifact_inventory(run_dir, cells, probes, memo_lib.local_server_models(params))
    criteria = memo_lib.exit_criteria(attempts, board, baselines, memo_lib.selection_evidence(run_dir, manifest),
                                      flags, inventory)
    difficulty = metrics.instance_difficulty(attempts, baselines) if not attempts.empty else pd.DataFrame()
    # this run's calls and params are already loaded: only the other runs are read for the comparison
    loaded = {run_dir: (params, calls)}
    return RunData(run_dir, attempts, calls, results.load_profiles(run_dir), manifest, board,
                   compare_runs([run_dir, *run_dirs], loaded), flags, probe, difficulty, criteria)


def _default_pricing() -> dict[str, dict[str, float]]:
    path = results.default_pricing_path()
    return results.load_pricing(path) if path is not None else {}


def compare_runs(run_dirs: Sequence[str | Path],
                 loaded: Mapping[Path, tuple[dict[str, Any], pd.DataFrame]] | None = None) -> pd.DataFrame:
    """One row per (run, model): workers, steady-state steps/minute, for the multi-run chart.

    `loaded` maps a run folder to its (resolved params, calls) when the caller has read them already."""
    rows = []
    loaded = loaded or {}
    for run_dir in dict.fromkeys(Path(p) for p in run_dirs):
        if run_dir in loaded:
            params, calls = loaded[run_dir]
        else:
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
        "difficulty": difficulty_chart(data.difficulty, data.flags) if not attempts.empty else empty,
        "steps_by_workers": steps_by_workers(data.compare),
        "workers": workers_over_time(data.manifest),
        "thunderagent_profile": profile_breakdown(data.profiles),
    }


def write_charts(run_dir: str | Path, figs: dict[str, Figure]) -> list[Path]:
    """Write `charts/<name>.html` per figure; plotly.js goes once into charts/plotly.min.js (offline)."""
    charts = RunLayout(run_dir).charts_dir
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
                "SE (repo-clustered)", "pass@1_trusted", "n_trusted", "pass^k", "run_failure_rate",
                "wrong_answer_rate", "cost_usd", "cost_source", "cost_per_resolved", "probe_exact", "probe_any_hit",
                "probe_cost_usd", "note")


def _main_board(board: pd.DataFrame) -> pd.DataFrame:
    """The headline columns, with the CI and the clustered SE as readable columns and pass^K as `pass^k`."""
    shown = board.copy()
    shown["95% CI"] = [("" if pd.isna(lo) else f"{lo:.0%}–{hi:.0%}")
                       for lo, hi in zip(board["pass@1_ci_low"], board["pass@1_ci_high"], strict=True)]
    se = board["pass@1_se_repo"] if "pass@1_se_repo" in board else pd.Series(math.nan, index=board.index)
    repos = board["n_repos"] if "n_repos" in board else pd.Series(0, index=board.index)
    shown["SE (repo-clustered)"] = [
        (f"±{v:.1%} ({int(r)} repos)" if not pd.isna(v) else f"n/a ({int(r) if not pd.isna(r) else 0} repo)")
        for v, r in zip(se, repos, strict=True)]
    hat = sorted((c for c in board.columns if c.startswith("pass^")), key=lambda c: int(c[5:]))
    if hat:
        shown = shown.rename(columns={hat[-1]: "pass^k"})
    return shown


def _table(board: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    if board.empty:
        return "<p>No attempt has finished in this run yet, so there is no leaderboard.</p>"
    shown = board[[c for c in columns if c in board]].copy() if columns else board.copy()
    for column in shown.columns:
        if column.startswith(("pass@", "pass^", "fail_", "probe_exact", "probe_any")) or column.endswith("_rate"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
    return shown.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:,.4g}", classes="board",
                         border=0, escape=True)


def _pairs_table(frame: pd.DataFrame) -> str:
    """Per pair of contenders: the pass@1 difference with its CI and detectable size, and the McNemar test."""
    if frame.empty:
        return "<p class='absent'>Fewer than two contenders, so there is no paired comparison.</p>"
    shown = frame.rename(columns={"a_only": "only A", "b_only": "only B"}).copy()
    shown["A − B (pass@1)"] = [_points(v) for v in frame["diff"]]
    shown["95% CI of A − B"] = [("" if pd.isna(lo) else f"{_points(lo)} to {_points(hi)}")
                               for lo, hi in zip(frame["diff_ci_low"], frame["diff_ci_high"], strict=True)]
    shown["detectable (80% power)"] = [_points(v, sign=False) for v in frame["mdd_80"]]
    shown = shown.drop(columns=["diff", "diff_ci_low", "diff_ci_high", "mdd_80"])
    return ("<p><b>A − B</b>: pass@1 difference on the instances both were graded on (all attempts), with a "
            "seeded bootstrap 95% CI over those instances; <b>detectable</b>: the smallest true difference this "
            "pair's spread lets a paired test find 80% of the time at the 5% level. <b>p_value</b>: exact "
            "McNemar test on attempt 1; a small p-value means the two resolution rates differ by more than "
            "chance.</p>"
            + shown.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.3g}", classes="board",
                            border=0))


def _points(value: float, sign: bool = True) -> str:
    """A difference of shares in percentage points."""
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value * 100:+.1f} pts" if sign else f"{value * 100:.1f} pts"


def run_size(data: RunData) -> tuple[int, int]:
    """(tasks, K) of the run: the instances with a graded contender attempt, and the attempts per instance."""
    attempts = data.attempts
    graded = attempts[~attempts["oracle"].astype(bool) & attempts["resolved"].notna()] if not attempts.empty \
        else attempts
    params = data.manifest.get("params") or {}
    k = int(params.get("attempts") or (metrics.default_k(attempts) if not attempts.empty else 1))
    return (int(graded["instance_id"].nunique()) if not graded.empty else 0), k


DETECTABLE_BASIS = ("a paired comparison of two models at a 50% resolution rate (the worst case), two-sided 5% "
                    "level, 80% power; Miller 2024, Adding Error Bars to Evals. Tasks the models disagree on raise "
                    "it further; each pair's own detectable difference is in the paired comparison")


def detectable_text(data: RunData) -> str:
    """The minimum detectable difference of the run's size, in one sentence ('' before any graded attempt)."""
    n_tasks, k = run_size(data)
    if n_tasks == 0:
        return ""
    mdd = metrics.minimum_detectable_difference(n_tasks, k)
    return (f"With {n_tasks} task{'s' if n_tasks != 1 else ''} and K={k}, differences under {mdd * 100:.0f} points "
            "cannot be told apart.")


def detectable_sentence(data: RunData) -> str:
    """detectable_text as the report's paragraph, with its basis."""
    text = detectable_text(data)
    if not text:
        return ("<p class='absent'>No contender attempt is graded yet, so the smallest difference this run can "
                "detect is not known.</p>")
    return f"<p class='mdd'><b>{html.escape(text)}</b> ({html.escape(DETECTABLE_BASIS)}).</p>"


def memo_html(criteria: list[memo_lib.Criterion]) -> str:
    """The iteration memo: each exit criterion of the plan with its status and why."""
    if not criteria:
        return ""
    rows = "".join(f"<tr class='memo-{html.escape(c.status.replace(' ', '-'))}'><th>{html.escape(c.name)}</th>"
                   f"<td class='status'>{html.escape(c.status)}</td><td>{html.escape(c.why)}</td></tr>"
                   for c in criteria)
    return ("<section id='memo'><h2>Iteration memo: exit criteria</h2><p>Each criterion of the plan, checked "
            f"from this run's data.</p><table class='memo'>{rows}</table></section>")


def flags_html(flags: pd.DataFrame) -> str:
    """Which instances cannot count and why; the leaderboard's pass@1_trusted leaves them out."""
    if flags.empty:
        return ("<p class='absent'>No discrimination check yet (eval/discrimination.json): every instance "
                "counts.</p>")
    reasons = {"non_discriminating": "Non-discriminating instances (their FAIL_TO_PASS tests pass without any "
                                     "patch, so resolving them proves nothing)",
               "flaky": "Flaky instances (repeated gold / no-patch verdicts disagree)",
               "gold_fails": "Gold fails (the reference patch does not resolve them here)"}
    items = [f"<li>{text}: {html.escape(', '.join(sorted(flags.loc[flags[col].astype(bool), 'instance_id'])))}</li>"
             for col, text in reasons.items() if flags[col].astype(bool).any()]
    repeats = int(flags["repeats"].max()) if "repeats" in flags and not flags.empty else 1
    checked = f"{len(flags)} instances checked, gold and no patch graded {repeats} time{'s' * (repeats > 1)} each"
    if not items:
        return f"<p>Instances that cannot count: none ({checked}).</p>"
    return (f"<div class='warning'><p><b>Instances that cannot count</b> ({checked}), left out of "
            f"<code>pass@1_trusted</code>:</p><ul>{''.join(items)}</ul></div>")


def unsolved_html(difficulty: pd.DataFrame) -> str:
    if difficulty.empty:
        return ""
    unsolved = metrics.unsolved_by_all(difficulty)
    if unsolved.empty:
        return "<p>Every instance was resolved by at least one contender.</p>"
    return ("<h3>Unsolved by every model</h3><p>How their attempts failed: run failure (no usable answer), infra "
            "error (our side), apply error (the patch did not apply), wrong patch (applied, tests fail).</p>"
            + unsolved.to_html(index=False, classes="board", border=0))


def probe_summary(probe: pd.DataFrame) -> pd.DataFrame:
    """metrics.probe_scores per run (run_id first); empty when no run has a probe."""
    if probe.empty:
        return pd.DataFrame(columns=["run_id", *metrics.PROBE_COLUMNS])
    frames = [metrics.probe_scores(group).assign(run_id=run) for run, group in probe.groupby("run_id", sort=False)]
    return pd.concat(frames, ignore_index=True)[["run_id", *metrics.PROBE_COLUMNS]]


def probe_html(probe: pd.DataFrame) -> str:
    """The contamination probe per model and task family, this run and the runs compared."""
    if probe.empty:
        return ("<p class='absent'>No contamination probe in this run (add a model entry of <code>kind: probe"
                "</code>).</p>")
    scores = probe_summary(probe)
    families = set(scores["family"])
    note = ("" if {"minibench", "SWE-bench"} <= families else
            "<p>Only one task family is probed here; probe the same model on minibench (written for this "
            "project, in no training set) and on SWE-bench, and compare: the gap is the signal.</p>")
    shown = scores[["run_id", "model", "family", "n", "probe_exact", "probe_any_hit", "cost_usd"]]
    return ("<p>From the issue text alone (no code, no file list) the model names the files it would change; "
            "<b>probe_exact</b>: the named set is the gold patch's set, <b>probe_any_hit</b>: at least one named "
            "file is the gold patch's. Far higher scores on SWE-bench than on minibench point to memorised "
            f"benchmark tasks rather than reasoning.</p>{note}" + _table(shown))


TITLES = {
    "leaderboard": ("Resolution rate", "pass@1 per model; the bars are bootstrap 95% confidence intervals."),
    "pass_at_k": ("pass@k and pass^k", "pass@k: the chance that at least one of k attempts resolves (grows with "
                  "k); pass^k: the chance that all k resolve (falls with k): how reliably a model solves what it "
                  "can solve."),
    "cost_vs_resolution": ("Cost vs resolution", "Models on the dashed Pareto front are not beaten on both "
                                                 "cost and pass@1 by any other model."),
    "latency": ("Model-call latency", "P50/P90/P99 seconds per model call."),
    "throughput": ("Throughput over time", "Output tokens per second, per model, over the run."),
    "per_repo": ("Per repository", "pass@1 per model and repository."),
    "difficulty": ("Per-instance difficulty", "Share of the contenders' graded attempts (models x attempts) that "
                   "resolve each instance; the baseline and oracles are left out."),
    "steps_by_workers": ("Steps per minute by worker count", "LLM calls per minute in the steady state "
                         "(first and last 10% of the time span cut), for this run and the runs compared."),
    "workers": ("Generation workers over time", "With `workers: auto` the runner scales generation workers "
                "down while the machine's CPU stays above 80 % and back up with headroom."),
    "thunderagent_profile": ("ThunderAgent program profile", "Seconds per program in prefill, decode, "
                             "pause and tool execution."),
}


def _section(name: str, fig: Figure, extra: str = "") -> str:
    title, blurb = TITLES.get(name, (name.replace("_", " "), ""))
    if isinstance(fig, go.Figure):
        body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}")
    else:
        body = f"<p class='absent'>{html.escape(fig)}</p>"
    return f"<section><h2>{html.escape(title)}</h2><p>{html.escape(blurb)}</p>{body}{extra}</section>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table.facts th{text-align:left;padding-right:1em;vertical-align:top}
table.board{border-collapse:collapse;font-size:12px;display:block;overflow-x:auto}
table.board th,table.board td{border-bottom:1px solid #ddd;padding:3px 6px;white-space:nowrap;text-align:left}
p.absent{color:#777;font-style:italic}
table.memo{border-collapse:collapse;margin-bottom:1em}
table.memo th,table.memo td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
tr.memo-met td.status{color:#1a7f37;font-weight:bold}
tr.memo-not-met td.status{color:#c62828;font-weight:bold}
tr.memo-not-measurable td.status{color:#777;font-weight:bold}
p.mdd{background:#f4f6fa;padding:6px 10px}
"""

_GLOSSARY = (
    "<p><b>pass@1</b>: share of graded attempts that resolve the instance (official SWE-bench grading), "
    "averaged over instances; <b>pass@k</b>: unbiased estimator of Chen et al. (2021), at least one of k "
    "attempts resolves; <b>pass^k</b>: all k resolve, unbiased C(c,k)/C(n,k) (tau-bench, Yao et al. 2024), shown "
    "for k = K. <b>pass@1_trusted</b>: pass@1 on the <i>n_trusted</i> instances whose verdicts can count (not "
    "non-discriminating, flaky or failing with the gold patch). <b>SE (repo-clustered)</b>: standard error of "
    "pass@1 with the instances of one repository treated as one cluster (CR1). <b>probe_*</b>: the "
    "contamination probe of the same model (below). Run failures "
    "(malformed output, timeout, provider error, error) count as unresolved and are reported apart "
    "from wrong answers. <i>pending</i> attempts are finished but not graded yet and are left out. "
    "CIs are seeded percentile bootstraps over instances. Cost comes from the provider when reported, "
    "else token counts × approximate prices (params/pricing.yaml); its source is in "
    "<code>cost_source</code>; <b>cost_per_resolved</b> is cost over instances resolved. Models marked "
    "<i>oracle</i> submit the reference patch: a harness check, "
    "not a contender.</p>")


def render_html(data: RunData, figs: dict[str, Figure], pairs: pd.DataFrame | None = None) -> str:
    """The whole report page: the iteration memo first, plotly.js embedded once, every figure after it without
    its own copy.

    `pairs` is metrics.pairwise_comparisons of the run, computed here when not given."""
    if pairs is None:
        pairs = metrics.pairwise_comparisons(data.attempts, data.leaderboard)
    after = {"difficulty": unsolved_html(data.difficulty)}
    sections = "".join(_section(name, fig, after.get(name, "")) for name, fig in figs.items())
    board = data.leaderboard
    main = _table(_main_board(board) if not board.empty else board, MAIN_COLUMNS)
    full = "" if data.leaderboard.empty else (
        "<details><summary>Full leaderboard (pass@k and pass^k for every k, standard errors, effort, failures by "
        f"kind, per-repo, tokens, latency)</summary>{_table(data.leaderboard)}</details>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>swelab report {html.escape(data.run_dir.name)}</title><style>{_STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>swelab report: {html.escape(data.run_dir.name)}</h1>{memo_html(data.memo)}{_header(data)}"
        f"<h2>Leaderboard</h2>{_GLOSSARY}{estimated_tokens_text(data.calls)}{flags_html(data.flags)}{main}{full}"
        f"<h2>Paired comparison</h2>{detectable_sentence(data)}{_pairs_table(pairs)}"
        f"<h2>Contamination probe</h2>{probe_html(data.probe)}{sections}</body></html>")


def render_report(run_dir: str | Path, run_dirs: Iterable[str | Path] = (),
                  pricing: dict[str, dict[str, float]] | None = None, seed: int = 0) -> Path:
    """Write `<run_dir>/report.html` (self-contained, works offline) and return its path; only the report:
    swelab.analyze.artifacts.write_analysis writes every artifact of the analysis from one load."""
    data = load_run(run_dir, pricing, run_dirs, seed)
    return write_report(data, build_figures(data))


def write_report(data: RunData, figs: dict[str, Figure], pairs: pd.DataFrame | None = None) -> Path:
    """`<run_dir>/report.html` from what is already loaded and drawn."""
    return atomic_write_text(RunLayout(data.run_dir).report_html, render_html(data, figs, pairs))
