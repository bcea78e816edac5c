"""Metrics on the tidy frames of `swelab.analyze.results` (pure functions: no file I/O, no plotting).

`attempts` below is `results.attempt_table(...)`: one row per attempt with model, instance_id, repo,
attempt, status, oracle, resolved (nullable bool), usage and timing columns. `calls` is `results.load_calls`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from statistics import NormalDist

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


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k of one instance: the chance that k attempts drawn (without replacement) from its n graded
    attempts ALL resolve, C(c, k) / C(n, k); the reliability view beside pass@k's "at least one".

    Source: Yao et al. 2024, "tau-bench: A Benchmark for Tool-Agent-User Interaction in Real-World Domains"
    (arXiv:2406.12045), which defines pass^k and estimates it with C(c, k) / C(n, k) from n >= k trials.
    pass^1 = pass@1; pass^k can only fall as k grows, where pass@k can only rise."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_hat_k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass_hat_k needs k <= n (got n={n}, k={k})")
    return math.comb(c, k) / math.comb(n, k)


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


def _model_estimate(attempts: pd.DataFrame, k: int, estimator: Callable[[int, int, int], float]) -> pd.Series:
    outcomes = instance_outcomes(attempts)
    eligible = outcomes[outcomes["n"] >= k]
    scores = [estimator(int(n), int(c), k) for n, c in zip(eligible["n"], eligible["c"], strict=True)]
    series = pd.Series(scores, index=eligible.index, dtype="float64").groupby(eligible["model"]).mean()
    return series.reindex(_models(attempts))


def model_pass_at_k(attempts: pd.DataFrame, k: int) -> pd.Series:
    """pass@k per model, averaged over the instances with at least k graded attempts (NaN if none)."""
    return _model_estimate(attempts, k, pass_at_k)


def model_pass_hat_k(attempts: pd.DataFrame, k: int) -> pd.Series:
    """pass^k per model (pass_hat_k), averaged over the instances with at least k graded attempts (NaN if none)."""
    return _model_estimate(attempts, k, pass_hat_k)


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


def clustered_se(values: Sequence[float] | np.ndarray, clusters: Sequence[object] | np.ndarray) -> float:
    """Standard error of the mean of per-instance scores when instances of one cluster (a repository) are not
    independent: the cluster-robust (CR1) variance of a mean,

        V = G / (G - 1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2

    with n instances in G clusters (Cameron & Miller 2015, "A Practitioner's Guide to Cluster-Robust
    Inference", J. Human Resources 50(2), eqs. 7 and 11 with one regressor, the constant). NaN with fewer than
    two clusters: one repository gives no estimate of how repositories differ."""
    data = np.asarray(values, dtype=float)
    groups = pd.Series(np.asarray(clusters, dtype=object))
    if data.size != len(groups):
        raise ValueError(f"clustered_se needs one cluster per value (got {data.size} values, {len(groups)})")
    n_clusters = groups.nunique()
    if data.size == 0 or n_clusters < 2:
        return math.nan
    sums = pd.Series(data - data.mean()).groupby(groups.to_numpy()).sum()
    variance = n_clusters / (n_clusters - 1) * float((sums**2).sum()) / data.size**2
    return math.sqrt(variance)


def instance_scores(attempts: pd.DataFrame) -> pd.DataFrame:
    """Per (model, instance): repo and pass@1 (c/n of its graded attempts), the unit of every uncertainty."""
    outcomes = instance_outcomes(attempts)
    repos = attempts.drop_duplicates("instance_id").set_index("instance_id")["repo"]
    return outcomes.assign(score=outcomes["c"] / outcomes["n"], repo=outcomes["instance_id"].map(repos))


def standard_errors(attempts: pd.DataFrame) -> pd.DataFrame:
    """Per model: the SE of pass@1 treating instances as independent (sd / sqrt(n)) and clustered by repository
    (clustered_se), with the number of repositories it rests on."""
    scores = instance_scores(attempts)
    rows = {}
    for model, group in scores.groupby("model"):
        values = group["score"].to_numpy(dtype=float)
        naive = float(np.std(values, ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
        rows[model] = {"pass@1_se": naive, "pass@1_se_repo": clustered_se(values, group["repo"].to_numpy()),
                       "n_repos": int(group["repo"].nunique())}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["pass@1_se", "pass@1_se_repo", "n_repos"])
    return frame.reindex(_models(attempts))


def z_value(p: float) -> float:
    """The standard normal quantile."""
    return NormalDist().inv_cdf(p)


def minimum_detectable_difference(n_tasks: int, k: int = 1, sigma2: float = 0.25, omega2: float = 0.0,
                                  alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference in pass@1 between two models that a paired comparison on `n_tasks` tasks
    with `k` attempts each detects with probability `power` at two-sided level `alpha`:

        MDD = (z_{1-alpha/2} + z_{power}) * sqrt((omega2 + 2 * sigma2 / k) / n_tasks)

    (Miller 2024, "Adding Error Bars to Evals: A Statistical Approach to Language Model Evaluations",
    arXiv:2411.00640, section on power analysis). sigma2 is the within-task variance of one attempt's
    pass/fail, p(1 - p), at most 0.25 (p = 0.5, the default: the worst case); omega2 the variance across tasks
    of the difference between the two models' per-task resolution chances, 0 by default (the best case for a
    paired design): so the default is the difference that no run of this size can tell apart, whatever the
    models. NaN without a task."""
    if n_tasks < 1 or k < 1:
        return math.nan
    return (z_value(1 - alpha / 2) + z_value(power)) * math.sqrt((omega2 + 2 * sigma2 / k) / n_tasks)


def observed_mdd(differences: Sequence[float] | np.ndarray, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable difference of a pair from its observed per-task differences:
    (z_{1-alpha/2} + z_{power}) * sd(d) / sqrt(n) (the same formula with omega2 + 2 sigma2 / k estimated by the
    variance of d). NaN with fewer than two tasks."""
    data = np.asarray(differences, dtype=float)
    if data.size < 2:
        return math.nan
    return (z_value(1 - alpha / 2) + z_value(power)) * float(np.std(data, ddof=1)) / math.sqrt(data.size)


def paired_difference(attempts: pd.DataFrame, model_a: str, model_b: str, n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """pass@1 of A minus B on the instances both were graded on (per-instance c/n, all attempts), its seeded
    bootstrap 95% CI over those instances, and the pair's observed minimum detectable difference."""
    scores = instance_scores(attempts).pivot_table(index="instance_id", columns="model", values="score")
    if model_a not in scores or model_b not in scores:
        return {"diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "mdd_80": math.nan}
    both = scores[[model_a, model_b]].dropna()
    differences = (both[model_a] - both[model_b]).to_numpy(dtype=float)
    low, high = bootstrap_ci(differences, n_boot=n_boot, seed=seed)
    return {"diff": float(differences.mean()) if differences.size else math.nan, "diff_ci_low": low,
            "diff_ci_high": high, "mdd_80": observed_mdd(differences)}


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


PAIR_COLUMNS = ["model A", "model B", "n", "a_only", "b_only", "both", "neither", "p_value", "diff", "diff_ci_low",
                "diff_ci_high", "mdd_80"]


def pairwise_comparisons(attempts: pd.DataFrame, board: pd.DataFrame, attempt: int | None = 1) -> pd.DataFrame:
    """For every pair of contenders (oracle rows left out), in leaderboard order: compare_models (exact McNemar
    on one attempt) and paired_difference (pass@1 difference, its CI, the pair's minimum detectable difference)."""
    contenders = [] if board.empty else list(board.loc[~board["oracle"].astype(bool), "model"])
    rows = [{"model A": a, "model B": b, **compare_models(attempts, a, b, attempt),
             **paired_difference(attempts, a, b)}
            for i, a in enumerate(contenders) for b in contenders[i + 1:]]
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


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


def token_source_shares(calls: pd.DataFrame) -> pd.DataFrame:
    """Per model: the share of calls whose token counts came from each source -- `tokens_provider` (reported),
    `tokens_tokenizer` (counted with the model's tokenizer), `tokens_approx` (chars/4), `tokens_none` (no tokens:
    failed calls) -- summing to 1. Calls written before `token_source` existed count as provider when they have
    tokens. Anything but provider makes the model's token (and priced cost) columns partly estimated."""
    columns = ["tokens_provider", "tokens_tokenizer", "tokens_approx", "tokens_none"]
    if calls.empty or "model" not in calls.columns:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="model"), dtype="float64")
    has_tokens = pd.Series(False, index=calls.index)
    for name in ("prompt_tokens", "completion_tokens"):
        if name in calls.columns:
            has_tokens |= calls[name].notna()
    given = calls["token_source"] if "token_source" in calls.columns else pd.Series(None, index=calls.index)
    source = given.where(given.notna(), has_tokens.map({True: "provider", False: "none"}))
    shares = pd.crosstab(calls["model"], source, normalize="index")
    shares = shares.reindex(columns=["provider", "tokenizer", "approx", "none"], fill_value=0.0).astype("float64")
    shares.columns = columns
    shares.index.name = "model"
    return shares


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
    """model, oracle, attempted, resolved, pass@1, pass@k and pass^k for k = 2..K; pass@1 is 0.0 (not NaN) when
    nothing resolved."""
    k = k or default_k(attempts)
    counts = resolved_counts(attempts)
    board = pd.DataFrame({"oracle": attempts.groupby("model")["oracle"].any()}).reindex(counts.index)
    board = board.join(counts)
    board.insert(board.columns.get_loc("graded") + 1, "pending", board["attempts"] - board["graded"])
    board["pass@1"] = pass_at_1(attempts)
    for j in range(2, k + 1):
        board[f"pass@{j}"] = model_pass_at_k(attempts, j)
    for j in range(2, k + 1):
        board[f"pass^{j}"] = model_pass_hat_k(attempts, j)
    rates = failure_rates(attempts)
    board = board.join(rates[[c for c in rates.columns if c.startswith("fail_") or c == "run_failure_rate"]])
    board["note"] = board.apply(_note, axis=1)
    board = board.drop(columns=[c for c in rates.columns if c in board.columns])
    return board.sort_values(["oracle", "pass@1"], ascending=[True, False], na_position="last").reset_index()


def _with_ci(board: pd.DataFrame, attempts: pd.DataFrame, seed: int) -> pd.DataFrame:
    bounds = [bootstrap_ci(per_instance_scores(attempts, m), seed=seed) for m in board["model"]]
    board["pass@1_ci_low"] = [low for low, _ in bounds]
    board["pass@1_ci_high"] = [high for _, high in bounds]
    return board.merge(standard_errors(attempts), left_on="model", right_index=True, how="left")


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
    extra = extra.join(token_source_shares(calls), how="left")  # how many token counts are estimates
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


# ---------------------------------------------------------------- instances that cannot count

FLAG_COLUMNS = ["instance_id", "non_discriminating", "flaky", "gold_fails", "trusted", "repeats"]


def _true(value: object) -> bool:
    """A flag read from a frame: True only for a true scalar (a missing field is NaN, which bool() calls True)."""
    return isinstance(value, bool | np.bool_) and bool(value)


def _count(value: object, default: int = 1) -> int:
    return int(value) if isinstance(value, int | float | np.integer | np.floating) and not pd.isna(value) else default


def _verdict_list(value: object) -> list[bool]:
    if isinstance(value, list | tuple | np.ndarray):
        return [bool(v) for v in value]
    return []


def instance_flags(discrimination: pd.DataFrame, attempts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per instance: whether its verdicts can count. `discrimination` is eval/discrimination.json as a frame
    (instance_id, non_discriminating, and where evaluation repeated it: flaky, gold_resolved, no_patch_resolved
    as lists of verdicts). An instance is
      non_discriminating  its FAIL_TO_PASS tests pass with no patch (in any repeat),
      flaky               its repeated gold or no-patch verdicts disagree (the repeats of eval_repeats, or the
                          attempts of a `gold` model: an oracle replaying the reference patch, mode builtin),
      gold_fails          the gold patch never resolves it (in any repeat, in any gold model attempt);
    and trusted when none of these holds."""
    rows: dict[str, dict] = {}
    for record in discrimination.to_dict("records") if not discrimination.empty else []:
        gold = _verdict_list(record.get("gold_resolved"))
        rows[str(record["instance_id"])] = {
            "non_discriminating": _true(record.get("non_discriminating")), "flaky": _true(record.get("flaky")),
            "gold_fails": bool(gold) and not any(gold), "repeats": _count(record.get("repeats"))}
    if attempts is not None and not attempts.empty and "mode" in attempts:
        gold_rows = attempts[attempts["oracle"].astype(bool) & (attempts["mode"] == "builtin")
                             & (attempts["status"] == "ok") & attempts["resolved"].notna()]
        for iid, group in gold_rows.groupby("instance_id"):
            row = rows.setdefault(str(iid), {"non_discriminating": False, "flaky": False, "gold_fails": False,
                                             "repeats": 1})
            solved = group["resolved"].astype(bool)
            row["gold_fails"] = row["gold_fails"] or not solved.any()
            row["flaky"] = row["flaky"] or solved.nunique() > 1       # the same patch, two verdicts
    frame = pd.DataFrame([{"instance_id": iid, **row} for iid, row in sorted(rows.items())],
                         columns=[c for c in FLAG_COLUMNS if c != "trusted"])
    frame["trusted"] = ~(frame["non_discriminating"].astype(bool) | frame["flaky"].astype(bool)
                         | frame["gold_fails"].astype(bool))
    return frame[FLAG_COLUMNS]


def untrusted_ids(flags: pd.DataFrame) -> list[str]:
    """The instances whose verdicts cannot count (instance_flags), sorted."""
    return sorted(flags.loc[~flags["trusted"].astype(bool), "instance_id"]) if not flags.empty else []


def trusted_scores(attempts: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """Per model: pass@1 on the trusted instances only (untrusted_ids left out) and how many it rests on;
    instances without a flag row count as trusted (nothing says otherwise)."""
    kept = attempts[~attempts["instance_id"].isin(untrusted_ids(flags))]
    frame = pd.DataFrame({"pass@1_trusted": pass_at_1(kept) if not kept.empty else pd.Series(dtype="float64"),
                          "n_trusted": kept.groupby("model")["instance_id"].nunique()})
    frame = frame.reindex(_models(attempts))
    frame["n_trusted"] = frame["n_trusted"].fillna(0).astype("int64")
    return frame


# ---------------------------------------------------------------- per-instance difficulty

FAILURE_CLASSES = ("run failure", "infra error", "apply error", "wrong patch")
RUN_FAILURES = ("malformed", "timeout", "provider_error", "skipped")


def failure_class(attempts: pd.DataFrame) -> pd.Series:
    """Per attempt: resolved | pending | one of FAILURE_CLASSES:
      run failure  the model produced no usable answer (malformed, timeout, provider error, skipped),
      infra error  our side failed (status error: an agent crash, a missing sandbox),
      apply error  graded, but its patch did not apply,
      wrong patch  graded: applied (or empty) and unresolved."""
    resolved = verdicts(attempts)
    applied = attempts["patch_applied"] if "patch_applied" in attempts else pd.Series(pd.NA, index=attempts.index)
    has_patch = attempts["has_patch"] if "has_patch" in attempts else pd.Series(True, index=attempts.index)
    out = pd.Series("pending", index=attempts.index, dtype=object)
    out[resolved.fillna(False).astype(bool)] = "resolved"
    unresolved = (attempts["status"] == "ok") & (resolved == False).fillna(False)  # noqa: E712 (nullable)
    out[unresolved] = "wrong patch"
    out[unresolved & (applied == False).fillna(False) & has_patch.astype(bool)] = "apply error"  # noqa: E712
    out[attempts["status"].isin(RUN_FAILURES)] = "run failure"
    out[attempts["status"] == "error"] = "infra error"
    return out


def instance_difficulty(attempts: pd.DataFrame, exclude: Iterable[str] = ()) -> pd.DataFrame:
    """Per instance, over the contenders (oracle rows and the models in `exclude`, e.g. the no-patch baseline,
    left out): graded attempts, resolved attempts, share resolved (models x attempts), models that resolve it at
    least once, and counts per failure class. Hardest first."""
    columns = ["instance_id", "repo", "graded", "resolved", "share_resolved", "models", "models_resolving",
               *FAILURE_CLASSES]
    pool = attempts[~attempts["oracle"].astype(bool) & ~attempts["model"].isin(list(exclude))]
    pool = pool.assign(_class=failure_class(pool), _resolved=verdicts(pool))
    pool = pool[pool["_class"] != "pending"]
    if pool.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (iid, repo), group in pool.groupby(["instance_id", "repo"]):
        solved = group["_resolved"].astype(bool)
        counts = group["_class"].value_counts()
        rows.append({"instance_id": iid, "repo": repo, "graded": len(group), "resolved": int(solved.sum()),
                     "share_resolved": float(solved.mean()), "models": group["model"].nunique(),
                     "models_resolving": group.loc[solved, "model"].nunique(),
                     **{kind: int(counts.get(kind, 0)) for kind in FAILURE_CLASSES}})
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["share_resolved", "instance_id"], ignore_index=True)


def unsolved_by_all(difficulty: pd.DataFrame) -> pd.DataFrame:
    """The instances no contender resolved in any attempt, with how their attempts failed (`failures`: the
    non-zero failure classes, most frequent first)."""
    unsolved = difficulty[difficulty["resolved"] == 0].copy()
    unsolved["failures"] = [
        ", ".join(f"{kind} x{int(row[kind])}" for kind in sorted(FAILURE_CLASSES, key=lambda k: -row[k]) if row[kind])
        for _, row in unsolved.iterrows()]
    return unsolved[["instance_id", "repo", "graded", "models", "failures"]].reset_index(drop=True)


# ---------------------------------------------------------------- contamination probe

PROBE_COLUMNS = ["model", "family", "n", "probe_exact", "probe_any_hit", "cost_usd"]


def probe_hits(named: Iterable[str] | None, gold: Iterable[str]) -> tuple[bool, bool]:
    """(exact set, any hit) of the files a probe named against the gold patch's files."""
    named_set, gold_set = set(named or ()), set(gold)
    return bool(gold_set) and named_set == gold_set, bool(named_set & gold_set)


def probe_scores(probe: pd.DataFrame) -> pd.DataFrame:
    """Per probe model and task family (minibench or the run's benchmark): the share of answered attempts whose
    named files are exactly the gold patch's files (probe_exact) and that name at least one of them
    (probe_any_hit), n answered attempts, and the probe's cost. `probe` has one row per probe attempt: model,
    family, status, probe_files (list or None), gold_files (list), cost_usd. An attempt that got no answer
    (timeout, provider error, skipped) is left out; a reply that named no file (malformed) counts as a miss."""
    if probe.empty:
        return pd.DataFrame(columns=PROBE_COLUMNS)
    answered = probe[probe["status"].isin(("ok", "malformed"))]
    hits = [probe_hits(named if isinstance(named, list | tuple) else (), gold)
            for named, gold in zip(answered["probe_files"], answered["gold_files"], strict=True)]
    answered = answered.assign(probe_exact=[float(e) for e, _ in hits], probe_any_hit=[float(a) for _, a in hits])
    cost = probe.groupby(["model", "family"])["cost_usd"].sum(min_count=1)
    scored = answered.groupby(["model", "family"]).agg(n=("probe_exact", "size"), probe_exact=("probe_exact", "mean"),
                                                        probe_any_hit=("probe_any_hit", "mean"))
    frame = scored.reindex(cost.index).assign(cost_usd=cost)
    frame["n"] = frame["n"].fillna(0).astype("int64")
    return frame.reset_index()[PROBE_COLUMNS]


# ---------------------------------------------------------------- leaderboard v4


def leaderboard_v4(attempts: pd.DataFrame, calls: pd.DataFrame | None = None,
                   pricing: dict[str, dict[str, float]] | None = None, flags: pd.DataFrame | None = None,
                   probe: pd.DataFrame | None = None, k: int | None = None, seed: int = 0) -> pd.DataFrame:
    """v3 + pass@1 on the trusted instances beside it (instance_flags), cost per resolved instance, and for
    models with a contamination probe (`probe`: rows of probe_scores keyed by the contender's model name) its
    scores and cost."""
    board = leaderboard_v3(attempts, calls, pricing, k, seed)
    flags = flags if flags is not None else pd.DataFrame(columns=FLAG_COLUMNS)
    trusted = trusted_scores(attempts, flags)
    position = board.columns.get_loc("pass@1") + 1
    board.insert(position, "pass@1_trusted", board["model"].map(trusted["pass@1_trusted"]))
    board.insert(position + 1, "n_trusted", board["model"].map(trusted["n_trusted"]).astype("Int64"))
    board["cost_per_resolved"] = board["cost_usd"] / board["resolved"].where(board["resolved"] > 0)
    probe = probe if probe is not None and not probe.empty else pd.DataFrame(columns=PROBE_COLUMNS)
    per_model = probe.groupby("model").agg(probe_exact=("probe_exact", "mean"),
                                           probe_any_hit=("probe_any_hit", "mean"),
                                           probe_cost_usd=("cost_usd", lambda v: v.sum(min_count=1)))
    return board.merge(per_model.astype("float64"), left_on="model", right_index=True, how="left")
