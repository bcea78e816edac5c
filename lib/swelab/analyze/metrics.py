"""Metrics on the tidy frames of `swelab.analyze.results` (pure functions: no file I/O, no plotting).

`attempts` below is `results.attempt_table(...)`: one row per attempt with model, instance_id, repo,
attempt, status, oracle, resolved (nullable bool), usage and timing columns. `calls` is `results.load_calls`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

FAILURE_KINDS = ("malformed", "timeout", "provider_error", "error")
PERCENTILES = (50, 90, 99)


# ---------------------------------------------------------------- resolution


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one instance (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass_at_k needs k <= n (got n={n}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def verdicts(attempts: pd.DataFrame) -> pd.Series:
    """`resolved` with every run failure (status != "ok") counted as unresolved; <NA> while pending."""
    resolved = attempts["resolved"].astype("boolean").copy()
    resolved[attempts["status"] != "ok"] = False
    return resolved


def instance_outcomes(attempts: pd.DataFrame) -> pd.DataFrame:
    """Per (model, instance): n graded attempts (run failures count, pending ones do not), c resolved."""
    attempts = attempts.assign(resolved=verdicts(attempts))
    graded = attempts[attempts["resolved"].notna()]
    resolved = graded["resolved"].astype(bool).astype(int)
    out = resolved.groupby([graded["model"], graded["instance_id"]]).agg(n="count", c="sum")
    return out.reset_index()


def model_pass_at_k(attempts: pd.DataFrame, k: int) -> pd.Series:
    """pass@k per model, averaged over the instances with at least k graded attempts (NaN if none)."""
    outcomes = instance_outcomes(attempts)
    eligible = outcomes[outcomes["n"] >= k]
    scores = [pass_at_k(int(n), int(c), k) for n, c in zip(eligible["n"], eligible["c"], strict=True)]
    series = pd.Series(scores, index=eligible.index, dtype="float64").groupby(eligible["model"]).mean()
    return series.reindex(_models(attempts))


def pass_at_1(attempts: pd.DataFrame) -> pd.Series:
    """pass@1 per model: the share of graded attempts resolved, per instance, averaged over instances."""
    return model_pass_at_k(attempts, 1)


def resolved_counts(attempts: pd.DataFrame) -> pd.DataFrame:
    """Per model: instances attempted, attempts, graded attempts, resolved attempts, instances resolved."""
    attempts = attempts.assign(resolved=verdicts(attempts))
    resolved = attempts["resolved"].fillna(False).astype(bool)
    grouped = attempts.assign(_resolved=resolved).groupby("model")
    frame = pd.DataFrame({
        "attempted": grouped["instance_id"].nunique(),
        "attempts": grouped.size(),
        "graded": grouped["resolved"].count(),
        "resolved_attempts": grouped["_resolved"].sum(),
        "resolved": attempts[resolved].groupby("model")["instance_id"].nunique(),
    })
    return frame.fillna({"resolved": 0}).astype("int64").reindex(_models(attempts))


def per_instance_scores(attempts: pd.DataFrame, model: str) -> np.ndarray:
    """Per-instance pass@1 (c/n) of one model: the resampling unit of its bootstrap CI."""
    outcomes = instance_outcomes(attempts)
    mine = outcomes[outcomes["model"] == model]
    return (mine["c"] / mine["n"]).to_numpy(dtype=float)


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (seeded, so the same input gives the same bounds)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_boot, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return (float(low), float(high))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c (binomial test, p=0.5)."""
    n = b + c
    if n == 0:
        return 1.0
    try:
        from scipy.stats import binomtest
    except ImportError:
        tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
        return min(1.0, 2.0 * tail)
    return float(binomtest(min(b, c), n, 0.5).pvalue)


def compare_models(attempts: pd.DataFrame, model_a: str, model_b: str, attempt: int | None = 1) -> dict:
    """McNemar on the instances both models were graded on.

    With `attempt` set, the pair is that attempt's verdict; with None, "resolved in any attempt".
    """
    attempts = attempts.assign(resolved=verdicts(attempts))
    graded = attempts[attempts["resolved"].notna()]
    if attempt is not None:
        graded = graded[graded["attempt"] == attempt]
    wide = graded.assign(r=graded["resolved"].astype(bool)).pivot_table(
        index="instance_id", columns="model", values="r", aggfunc="max")
    if model_a not in wide or model_b not in wide:
        return {"n": 0, "a_only": 0, "b_only": 0, "both": 0, "neither": 0, "p_value": math.nan}
    pair = wide[[model_a, model_b]].dropna().astype(bool)
    a, b = pair[model_a], pair[model_b]
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    return {"n": len(pair), "a_only": a_only, "b_only": b_only, "both": int((a & b).sum()),
            "neither": int((~a & ~b).sum()), "p_value": mcnemar_exact(a_only, b_only)}


def pairwise_comparisons(attempts: pd.DataFrame, board: pd.DataFrame, attempt: int | None = 1) -> pd.DataFrame:
    """compare_models for every pair of contenders (oracle rows left out), in leaderboard order."""
    contenders = [] if board.empty else list(board.loc[~board["oracle"].astype(bool), "model"])
    rows = [{"model A": a, "model B": b, **compare_models(attempts, a, b, attempt)}
            for i, a in enumerate(contenders) for b in contenders[i + 1:]]
    return pd.DataFrame(rows, columns=["model A", "model B", "n", "a_only", "b_only", "both", "neither", "p_value"])


# ---------------------------------------------------------------- failures, effort, time


def failure_rates(attempts: pd.DataFrame) -> pd.DataFrame:
    """Per model: run failures by kind (status), kept apart from wrong answers (graded, unresolved)."""
    grouped = attempts.groupby("model")
    frame = pd.DataFrame({f"fail_{kind}": grouped["status"].apply(lambda s, k=kind: float((s == k).mean()))
                          for kind in FAILURE_KINDS})
    frame["fail_skipped"] = grouped["status"].apply(lambda s: float((s == "skipped").mean()))
    frame["run_failure_rate"] = grouped["status"].apply(lambda s: float((s != "ok").mean()))
    wrong = (attempts["status"] == "ok") & (attempts["resolved"] == False)  # noqa: E712 (nullable)
    frame["wrong_answer_rate"] = wrong.fillna(False).astype(float).groupby(attempts["model"]).mean()
    return frame.reindex(_models(attempts))


def effort(attempts: pd.DataFrame) -> pd.DataFrame:
    """Per model: wall-clock per attempt, steps and tool calls per attempt, tool calls in total."""
    grouped = attempts.groupby("model")
    frame = pd.DataFrame({
        "wall_clock_mean_s": grouped["duration_s"].mean(),
        "wall_clock_total_s": grouped["duration_s"].sum(min_count=1),
        "steps_mean": grouped["steps"].mean(),
        "tool_calls_mean": grouped["tool_calls"].mean(),
        "tool_calls_total": grouped["tool_calls"].sum(min_count=1),
    })
    return frame.astype("float64").reindex(_models(attempts))


def percentiles(values: Iterable[float], qs: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """{"p50": .., "p90": .., "p99": ..} with linear interpolation; NaN for no data."""
    data = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    if data.size == 0:
        return {f"p{q}": math.nan for q in qs}
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(data, qs), strict=True)}


def latency_table(frame: pd.DataFrame, column: str, prefix: str) -> pd.DataFrame:
    """Per-model percentiles of one duration column (call latency_s or attempt duration_s)."""
    if frame.empty:
        return pd.DataFrame(columns=[f"{prefix}_p{q}" for q in PERCENTILES], dtype="float64")
    rows = {model: percentiles(group[column]) for model, group in frame.groupby("model")}
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.add_prefix(f"{prefix}_")


def _epoch(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.map(lambda t: t.timestamp() if not pd.isna(t) else math.nan).astype(float)
    return pd.to_numeric(series, errors="coerce").astype(float)


def attempts_per_hour(attempts: pd.DataFrame, min_span_s: float = 60.0) -> pd.Series:
    """Per model: finished attempts / hours between its first start and its last finish.

    NaN when that span is under `min_span_s`: a rate extrapolated from a few seconds says nothing.
    """
    start, end = _epoch(attempts["started_at"]), _epoch(attempts["finished_at"])
    grouped = pd.DataFrame({"model": attempts["model"], "start": start, "end": end}).groupby("model")
    span_s = grouped["end"].max() - grouped["start"].min()
    rate = grouped.size() / (span_s.where(span_s >= min_span_s) / 3600.0)
    return rate.astype(float).reindex(_models(attempts))


NICE_BINS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def nice_bin(span_s: float, target_bins: int = 30) -> float:
    """A round bin width that cuts `span_s` into about `target_bins` bins."""
    wanted = span_s / target_bins if span_s > 0 else 1.0
    return float(next((b for b in NICE_BINS_S if b >= wanted), NICE_BINS_S[-1]))


def throughput_over_time(calls: pd.DataFrame, bin_s: float | None = None) -> pd.DataFrame:
    """Per model and time bin (seconds since the run's first call end): calls and output tokens/s.

    Bins without calls are kept as zeros, so a stall shows as a dip instead of a line across the gap.
    """
    columns = ["model", "t_s", "calls", "output_tokens_per_s", "bin_s"]
    ends = _epoch(calls["ended_at"]) if not calls.empty else pd.Series(dtype=float)
    if ends.dropna().empty:
        return pd.DataFrame(columns=columns)
    t0 = ends.min()
    bin_s = bin_s or nice_bin(ends.max() - t0)
    frame = pd.DataFrame({"model": calls["model"], "t_s": ((ends - t0) // bin_s) * bin_s,
                          "tokens": pd.to_numeric(calls["completion_tokens"], errors="coerce").fillna(0)})
    out = frame.dropna(subset=["t_s"]).groupby(["model", "t_s"]).agg(calls=("tokens", "size"),
                                                                      tokens=("tokens", "sum"))
    grid = pd.MultiIndex.from_product([out.index.levels[0], np.arange(0.0, out.index.levels[1].max() + bin_s,
                                                                       bin_s)], names=["model", "t_s"])
    out = out.reindex(grid, fill_value=0)
    out["output_tokens_per_s"] = out["tokens"] / bin_s
    return out.reset_index().assign(bin_s=bin_s)[columns]


def steady_window(times: pd.Series, trim: float = 0.1) -> tuple[float, float]:
    """The steady-state window: the time span with the first and last `trim` share cut off."""
    data = times.dropna()
    if data.empty:
        return (math.nan, math.nan)
    t0, t1 = float(data.min()), float(data.max())
    return (t0 + trim * (t1 - t0), t1 - trim * (t1 - t0))


def steps_per_minute(calls: pd.DataFrame, trim: float = 0.1) -> float:
    """ThunderAgent-style throughput: LLM calls finished per minute inside the steady-state window."""
    if calls.empty:
        return math.nan
    ends = _epoch(calls["ended_at"])
    low, high = steady_window(ends, trim)
    if not high > low:
        return math.nan
    inside = ((ends >= low) & (ends <= high)).sum()
    return float(inside) / ((high - low) / 60.0)


# ---------------------------------------------------------------- tokens and cost


def _price(pricing: dict[str, dict[str, float]], model: str) -> dict[str, float] | None:
    if model in pricing:
        return pricing[model]
    base = model.rsplit("/", 1)[-1].lower()
    return next((p for name, p in pricing.items() if name.rsplit("/", 1)[-1].lower() == base), None)


def row_costs(frame: pd.DataFrame, pricing: dict[str, dict[str, float]]) -> pd.DataFrame:
    """cost_usd per row and where it came from: provider → pricing (token count × $/1M) → unknown."""
    costs, sources = [], []
    for model, reported, tin, tout in zip(frame["model"], frame["cost_usd"], frame["prompt_tokens"],
                                          frame["completion_tokens"], strict=True):
        price = _price(pricing, model)
        if not pd.isna(reported):
            costs.append(float(reported))
            sources.append("provider")
        elif price is not None and not (pd.isna(tin) and pd.isna(tout)):
            tin, tout = (0 if pd.isna(tin) else tin), (0 if pd.isna(tout) else tout)
            costs.append((tin * price["input"] + tout * price["output"]) / 1e6)
            sources.append("pricing")
        else:
            costs.append(math.nan)
            sources.append("unknown")
    return frame.assign(cost_usd=pd.Series(costs, index=frame.index, dtype="float64"),
                        cost_source=sources)


def _source_label(sources: pd.Series) -> str:
    known = sorted(set(sources) - {"unknown"})
    label = "+".join(known) if known else "unknown"
    if known and "unknown" in set(sources):
        label += " (partial)"
    return label


def token_cost(attempts: pd.DataFrame, pricing: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Per model: prompt/completion/total tokens, $ cost (sum of known rows) and its source."""
    costed = row_costs(attempts, pricing or {})
    grouped = costed.groupby("model")
    frame = pd.DataFrame({
        "prompt_tokens": grouped["prompt_tokens"].sum(min_count=1),
        "completion_tokens": grouped["completion_tokens"].sum(min_count=1),
        "cost_usd": grouped["cost_usd"].sum(min_count=1),
    }).astype("float64")
    frame.insert(2, "total_tokens", frame["prompt_tokens"].fillna(0) + frame["completion_tokens"].fillna(0))
    frame.loc[frame["prompt_tokens"].isna() & frame["completion_tokens"].isna(), "total_tokens"] = math.nan
    frame["cost_source"] = grouped["cost_source"].apply(_source_label)
    return frame.reindex(_models(attempts))


# ---------------------------------------------------------------- leaderboards


def _models(attempts: pd.DataFrame) -> pd.Index:
    return pd.Index(sorted(attempts["model"].unique()), name="model")


def default_k(attempts: pd.DataFrame) -> int:
    """K = the most attempts any instance got (at least 1)."""
    if attempts.empty:
        return 1
    return int(max(1, attempts.groupby(["model", "instance_id"]).size().max()))


def _note(row: pd.Series) -> str:
    """Say plainly what a 0 or a missing number means."""
    parts = []
    if row["graded"] == 0:
        parts.append("not evaluated yet")
    elif row["fail_skipped"] == 1.0:
        parts.append("skipped (model unavailable): nothing was run")
    elif row["resolved"] == 0:
        if row["run_failure_rate"] == 1.0:
            kinds = [k for k in ("malformed", "timeout", "provider_error", "error") if row.get(f"fail_{k}", 0) > 0]
            parts.append(f"nothing resolved: every attempt was a run failure ({', '.join(kinds) or 'see cells'})")
        else:
            parts.append("nothing resolved")
    if 0 < row["pending"] < row["attempts"]:
        parts.append(f"{row['pending']} attempt(s) not graded yet")
    if row["oracle"]:
        parts.append("oracle (reference patch): a harness check, not a contender")
    return "; ".join(parts)


def leaderboard_v0(attempts: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """model, oracle, attempted, resolved, pass@1, pass@K; pass@1 is 0.0 (not NaN) when nothing resolved."""
    k = k or default_k(attempts)
    counts = resolved_counts(attempts)
    board = pd.DataFrame({"oracle": attempts.groupby("model")["oracle"].any()}).reindex(counts.index)
    board = board.join(counts)
    board.insert(board.columns.get_loc("graded") + 1, "pending", board["attempts"] - board["graded"])
    board["pass@1"] = pass_at_1(attempts)
    if k > 1:
        board[f"pass@{k}"] = model_pass_at_k(attempts, k)
    rates = failure_rates(attempts)
    board = board.join(rates[[c for c in rates.columns if c.startswith("fail_") or c == "run_failure_rate"]])
    board["note"] = board.apply(_note, axis=1)
    board = board.drop(columns=[c for c in rates.columns if c in board.columns])
    return board.sort_values(["oracle", "pass@1"], ascending=[True, False], na_position="last").reset_index()


def _with_ci(board: pd.DataFrame, attempts: pd.DataFrame, seed: int) -> pd.DataFrame:
    bounds = [bootstrap_ci(per_instance_scores(attempts, m), seed=seed) for m in board["model"]]
    board["pass@1_ci_low"] = [low for low, _ in bounds]
    board["pass@1_ci_high"] = [high for _, high in bounds]
    return board


def leaderboard_v1(attempts: pd.DataFrame, k: int | None = None, seed: int = 0) -> pd.DataFrame:
    """v0 + bootstrap CI, wall-clock, tool calls, run failures by kind, wrong-answer rate."""
    board = _with_ci(leaderboard_v0(attempts, k), attempts, seed)
    extra = effort(attempts).join(failure_rates(attempts))
    return board.merge(extra, left_on="model", right_index=True, how="left")


def per_repo(attempts: pd.DataFrame) -> pd.DataFrame:
    """Long frame: model, repo, attempted instances, graded attempts, resolved instances, pass@1."""
    rows = []
    for (model, repo), group in attempts.groupby(["model", "repo"]):
        counts = resolved_counts(group).iloc[0]
        rows.append({"model": model, "repo": repo, "attempted": int(counts["attempted"]),
                     "resolved": int(counts["resolved"]), "pass@1": float(pass_at_1(group).iloc[0])})
    return pd.DataFrame(rows, columns=["model", "repo", "attempted", "resolved", "pass@1"])


def leaderboard_v2(attempts: pd.DataFrame, k: int | None = None, seed: int = 0) -> pd.DataFrame:
    """v1 + one `pass@1[<repo>]` column per repository."""
    board = leaderboard_v1(attempts, k, seed)
    repos = per_repo(attempts)
    if repos.empty:
        return board
    wide = repos.pivot(index="model", columns="repo", values="pass@1")
    wide.columns = [f"pass@1[{repo}]" for repo in wide.columns]
    return board.merge(wide, left_on="model", right_index=True, how="left")


def leaderboard_v3(attempts: pd.DataFrame, calls: pd.DataFrame | None = None,
                   pricing: dict[str, dict[str, float]] | None = None, k: int | None = None,
                   seed: int = 0) -> pd.DataFrame:
    """v2 + tokens, cost (with source), latency percentiles per call and per attempt, throughput."""
    board = leaderboard_v2(attempts, k, seed)
    calls = calls if calls is not None else pd.DataFrame(columns=["model", "latency_s", "ended_at"])
    extra = token_cost(attempts, pricing).join(latency_table(attempts, "duration_s", "attempt_s"))
    extra = extra.join(latency_table(calls, "latency_s", "call_s"), how="left")
    extra["attempts_per_hour"] = attempts_per_hour(attempts)
    extra["steps_per_minute"] = pd.Series({m: steps_per_minute(g) for m, g in calls.groupby("model")},
                                          dtype="float64")
    return board.merge(extra, left_on="model", right_index=True, how="left")


def pareto_front(frame: pd.DataFrame, cost: str = "cost_usd", score: str = "pass@1") -> pd.DataFrame:
    """Rows no other row beats on both axes (cheaper or equal AND better or equal), sorted by cost."""
    points = frame.dropna(subset=[cost, score]).sort_values([cost, score], ascending=[True, False])
    front, best = [], -math.inf
    for index, value in points[score].items():
        if value > best:
            front.append(index)
            best = value
    return points.loc[front]
