"""swelab.analyze.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from swelab.analyze import metrics


def _attempts(rows: list[tuple]) -> pd.DataFrame:
    """rows: (model, instance_id, attempt, status, resolved or None, oracle)."""
    frame = pd.DataFrame(rows, columns=["model", "instance_id", "attempt", "status", "resolved", "oracle"])
    frame["resolved"] = frame["resolved"].astype("boolean")
    frame["repo"] = frame["instance_id"].str.split("-").str[0]
    frame["duration_s"] = 10.0 * frame["attempt"]
    frame["steps"], frame["tool_calls"] = 2, 3
    for name in ("prompt_tokens", "completion_tokens", "cost_usd", "started_at", "finished_at"):
        frame[name] = math.nan
    return frame


GRID = _attempts([
    # X: i1 resolved once of two, i2 never (one wrong, one timeout)
    ("X", "a-1", 1, "ok", True, False), ("X", "a-1", 2, "ok", False, False),
    ("X", "b-2", 1, "ok", False, False), ("X", "b-2", 2, "timeout", False, False),
    # Y: graded, nothing resolved
    ("Y", "a-1", 1, "ok", False, False), ("Y", "a-1", 2, "ok", False, False),
    ("Y", "b-2", 1, "malformed", False, False), ("Y", "b-2", 2, "ok", False, False),
    # O: oracle, one attempt each
    ("O", "a-1", 1, "ok", True, True), ("O", "b-2", 1, "ok", True, True),
    # W: finished but not graded yet
    ("W", "a-1", 1, "ok", None, False),
    # S: model unavailable, every cell skipped
    ("S", "a-1", 1, "skipped", None, False), ("S", "b-2", 1, "skipped", None, False),
])


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (2, 1, 1, 0.5), (2, 1, 2, 1.0), (5, 0, 1, 0.0), (5, 0, 5, 0.0), (5, 2, 2, 0.7),
    (10, 3, 5, 1 - 21 / 252), (3, 3, 1, 1.0),
])
def test_pass_at_k_hand_cases(n: int, c: int, k: int, expected: float) -> None:
    assert metrics.pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "c", "k"), [(2, 1, 3), (2, 3, 1), (2, 1, 0)])
def test_pass_at_k_rejects_impossible_input(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass_at_k"):
        metrics.pass_at_k(n, c, k)


def test_leaderboard_v0_values_and_honest_zeros() -> None:
    board = metrics.leaderboard_v0(GRID).set_index("model")
    assert board.loc["X", "pass@1"] == pytest.approx(0.25)   # (1/2 + 0/2) / 2
    assert board.loc["X", "pass@2"] == pytest.approx(0.5)    # (1 + 0) / 2
    assert board.loc["X", "resolved"] == 1 and board.loc["X", "attempted"] == 2
    assert board.loc["Y", "pass@1"] == 0.0 and board.loc["Y", "note"] == "nothing resolved"
    assert math.isnan(board.loc["W", "pass@1"]) and "not evaluated yet" in board.loc["W", "note"]
    assert bool(board.loc["O", "oracle"]) and "oracle" in board.loc["O", "note"]
    assert math.isnan(board.loc["O", "pass@2"])               # one attempt each: pass@2 undefined
    assert list(board.index)[-1] == "O"                       # oracle rows sort after contenders
    assert board.loc["S", "pass@1"] == 0.0 and board.loc["S", "note"].startswith("skipped")


def test_failure_rates_keep_run_failures_apart_from_wrong_answers() -> None:
    rates = metrics.failure_rates(GRID)
    assert rates.loc["X", "fail_timeout"] == 0.25 and rates.loc["X", "run_failure_rate"] == 0.25
    assert rates.loc["X", "wrong_answer_rate"] == 0.5
    assert rates.loc["Y", "fail_malformed"] == 0.25 and rates.loc["Y", "wrong_answer_rate"] == 0.75
    assert rates.loc["W", "wrong_answer_rate"] == 0.0 and rates.loc["W", "run_failure_rate"] == 0.0


def test_per_repo_and_leaderboard_v2_columns() -> None:
    repos = metrics.per_repo(GRID).set_index(["model", "repo"])
    assert repos.loc[("X", "a"), "pass@1"] == 0.5 and repos.loc[("X", "b"), "pass@1"] == 0.0
    board = metrics.leaderboard_v2(GRID).set_index("model")
    assert board.loc["X", "pass@1[a]"] == 0.5 and board.loc["O", "pass@1[b]"] == 1.0
    assert board.loc["X", "wall_clock_mean_s"] == 15.0 and board.loc["X", "tool_calls_total"] == 12


def test_percentiles_linear_interpolation() -> None:
    assert metrics.percentiles([5, 1, 4, 2, 3]) == pytest.approx({"p50": 3.0, "p90": 4.6, "p99": 4.96})
    assert metrics.percentiles([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0}
    assert all(math.isnan(v) for v in metrics.percentiles([None, math.nan]).values())


@pytest.mark.parametrize(("b", "c", "expected"), [
    (1, 5, 14 / 64), (5, 1, 14 / 64), (0, 6, 2 / 64), (3, 3, 1.0), (0, 0, 1.0), (2, 8, 2 * 56 / 1024),
])
def test_mcnemar_exact_p_values(b: int, c: int, expected: float) -> None:
    assert metrics.mcnemar_exact(b, c) == pytest.approx(expected)


def test_compare_models_counts_discordant_pairs() -> None:
    result = metrics.compare_models(GRID, "X", "O")           # attempt 1: X solves a-1 only, O both
    assert (result["n"], result["a_only"], result["b_only"], result["both"]) == (2, 0, 1, 1)
    assert result["p_value"] == pytest.approx(1.0)
    assert metrics.compare_models(GRID, "X", "missing")["n"] == 0


def test_pairwise_comparisons_cover_contenders_only() -> None:
    pairs = metrics.pairwise_comparisons(GRID, metrics.leaderboard_v0(GRID))
    assert all("O" not in (a, b) for a, b in zip(pairs["model A"], pairs["model B"], strict=True))  # oracle out
    assert len(pairs) == 6  # X, Y, W, S: every pair once
    assert metrics.pairwise_comparisons(GRID, metrics.leaderboard_v0(GRID).iloc[:0]).empty


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    values = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0]
    low, high = metrics.bootstrap_ci(values, seed=7)
    assert low <= np.mean(values) <= high and low < high
    assert metrics.bootstrap_ci(values, seed=7) == (low, high)
    assert metrics.bootstrap_ci([1.0, 1.0, 1.0], seed=1) == (1.0, 1.0)
    assert all(math.isnan(v) for v in metrics.bootstrap_ci([]))


def test_row_costs_source_order() -> None:
    frame = pd.DataFrame({"model": ["p/m", "p/m", "nobody"], "cost_usd": [0.01, math.nan, math.nan],
                          "prompt_tokens": [10, 1_000_000, 5], "completion_tokens": [1, 500_000, 5]})
    pricing = {"other/M": {"input": 1.0, "output": 2.0}}        # matched on the name after "/", any case
    costed = metrics.row_costs(frame, pricing)
    assert costed["cost_source"].tolist() == ["provider", "pricing", "unknown"]
    assert costed["cost_usd"].iloc[0] == 0.01 and costed["cost_usd"].iloc[1] == pytest.approx(2.0)
    assert math.isnan(costed["cost_usd"].iloc[2])
    totals = metrics.token_cost(frame, pricing)
    assert totals.loc["p/m", "cost_source"] == "pricing+provider"
    assert totals.loc["p/m", "cost_usd"] == pytest.approx(2.01)
    assert totals.loc["p/m", "total_tokens"] == 1_500_011
    assert totals.loc["nobody", "cost_source"] == "unknown"


def _calls(ends: list[float], model: str = "m") -> pd.DataFrame:
    return pd.DataFrame({"model": model, "ended_at": ends, "completion_tokens": 30,
                         "latency_s": 1.0})


def test_steps_per_minute_uses_steady_window() -> None:
    calls = _calls([float(t) for t in range(101)])          # one call per second over 100 s
    # window [10, 90] holds 81 calls in 80 s
    assert metrics.steps_per_minute(calls, trim=0.1) == pytest.approx(81 / (80 / 60))
    assert math.isnan(metrics.steps_per_minute(_calls([])))


def test_throughput_over_time_bins() -> None:
    series = metrics.throughput_over_time(_calls([100.0, 110.0, 230.0]), bin_s=60)
    assert series["t_s"].tolist() == [0.0, 60.0, 120.0]       # the empty middle bin is a zero, not a gap
    assert series["calls"].tolist() == [2, 0, 1]
    assert series["output_tokens_per_s"].tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert metrics.throughput_over_time(_calls([])).empty


def test_nice_bin_rounds_up() -> None:
    assert metrics.nice_bin(3600) == 120.0          # 3600 / 30 = 120
    assert metrics.nice_bin(100) == 5.0             # 3.3 -> 5
    assert metrics.nice_bin(0) == 1.0


def test_attempts_per_hour() -> None:
    frame = pd.DataFrame({"model": ["m", "m"], "started_at": [0.0, 600.0], "finished_at": [900.0, 1800.0]})
    assert metrics.attempts_per_hour(frame)["m"] == pytest.approx(4.0)
    instant = pd.DataFrame({"model": ["m"], "started_at": [0.0], "finished_at": [0.5]})
    assert math.isnan(metrics.attempts_per_hour(instant)["m"])


def test_pareto_front() -> None:
    frame = pd.DataFrame({"model": list("abcd"), "cost_usd": [1.0, 2.0, 3.0, 0.5],
                          "pass@1": [0.2, 0.5, 0.4, 0.1]})
    assert metrics.pareto_front(frame)["model"].tolist() == ["d", "a", "b"]


def test_leaderboard_v3_without_calls_or_prices() -> None:
    board = metrics.leaderboard_v3(GRID).set_index("model")
    assert board["cost_source"].eq("unknown").all()
    assert board["call_s_p50"].isna().all() and board["call_s_p50"].dtype == "float64"
    assert board.loc["X", "attempt_s_p50"] == 15.0


def test_a_model_whose_every_attempt_failed_to_run_says_which_failures() -> None:
    grid = _attempts([("M", "a-1", 1, "malformed", False, False), ("M", "a-1", 2, "timeout", False, False)])
    note = metrics.leaderboard_v0(grid).set_index("model").loc["M", "note"]
    assert note == "nothing resolved: every attempt was a run failure (malformed, timeout)"


# ---------------------------------------------------------------- analysis v2: reliability, uncertainty, trust


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (2, 1, 2, 0.0), (3, 2, 2, 1 / 3), (5, 3, 2, 3 / 10), (4, 4, 3, 1.0), (5, 2, 1, 0.4), (6, 0, 1, 0.0),
])
def test_pass_hat_k_hand_cases(n: int, c: int, k: int, expected: float) -> None:
    assert metrics.pass_hat_k(n, c, k) == pytest.approx(expected)          # C(c, k) / C(n, k)


def test_pass_hat_k_rejects_impossible_input() -> None:
    with pytest.raises(ValueError, match="pass_hat_k"):
        metrics.pass_hat_k(2, 1, 3)


K3 = _attempts([  # R: a-1 resolved 2 of 3, b-2 resolved 3 of 3
    ("R", "a-1", 1, "ok", True, False), ("R", "a-1", 2, "ok", False, False), ("R", "a-1", 3, "ok", True, False),
    ("R", "b-2", 1, "ok", True, False), ("R", "b-2", 2, "ok", True, False), ("R", "b-2", 3, "ok", True, False),
])


def test_leaderboard_v0_has_pass_at_k_and_pass_hat_k_for_every_k() -> None:
    row = metrics.leaderboard_v0(K3).set_index("model").loc["R"]
    assert row["pass@1"] == pytest.approx((2 / 3 + 1) / 2)
    assert row["pass@2"] == pytest.approx(1.0) and row["pass@3"] == pytest.approx(1.0)
    assert row["pass^2"] == pytest.approx((1 / 3 + 1) / 2)                  # C(2,2)/C(3,2) = 1/3
    assert row["pass^3"] == pytest.approx((0 + 1) / 2)
    board = metrics.leaderboard_v0(GRID).set_index("model")
    assert board.loc["X", "pass^2"] == 0.0 and math.isnan(board.loc["O", "pass^2"])


def test_clustered_se_hand_values() -> None:
    # mean 0.75, residuals by cluster: a -0.5, b +0.5 -> 2/1 * 0.5 / 16 = 0.0625
    assert metrics.clustered_se([1, 0, 1, 1], ["a", "a", "b", "b"]) == pytest.approx(0.25)
    # mean 0.5, cluster sums 0.5, -1, 0.5 -> 3/2 * 1.5 / 36 = 0.0625
    assert metrics.clustered_se([1, 0, 0, 1, 1, 0], list("abbccc")) == pytest.approx(0.25)
    assert math.isnan(metrics.clustered_se([1, 0], ["a", "a"]))          # one repository: no estimate
    with pytest.raises(ValueError, match="one cluster per value"):
        metrics.clustered_se([1, 0], ["a"])


def test_leaderboard_v1_has_naive_and_repo_clustered_standard_errors() -> None:
    grid = _attempts([("M", f"{repo}-{i}", 1, "ok", ok, False)
                      for repo, i, ok in (("a", 1, True), ("a", 2, False), ("b", 3, True), ("b", 4, True))])
    row = metrics.leaderboard_v1(grid).set_index("model").loc["M"]
    assert row["pass@1_se_repo"] == pytest.approx(0.25) and row["n_repos"] == 2
    assert row["pass@1_se"] == pytest.approx(0.5 / 2)                     # sd(1,0,1,1) = 0.5, sqrt(4) = 2


def test_minimum_detectable_difference_hand_values() -> None:
    z = 1.959964 + 0.841621                                                # z_0.975 + z_0.80
    assert metrics.minimum_detectable_difference(18, 2) == pytest.approx(z * math.sqrt(0.25 / 18), rel=1e-5)
    assert metrics.minimum_detectable_difference(18, 2) == pytest.approx(0.3302, abs=1e-4)
    assert metrics.minimum_detectable_difference(100, 1) == pytest.approx(z * math.sqrt(0.5 / 100), rel=1e-5)
    assert metrics.minimum_detectable_difference(100, 1, omega2=0.1) > metrics.minimum_detectable_difference(100, 1)
    assert math.isnan(metrics.minimum_detectable_difference(0, 2))
    assert metrics.observed_mdd([1, 0, 1, 0]) == pytest.approx(z * math.sqrt(1 / 3) / 2, rel=1e-5)


def test_paired_difference_and_pairwise_columns() -> None:
    # X per instance: a-1 1/2, b-2 0/2; Y: 0, 0 -> differences 0.5, 0
    result = metrics.paired_difference(GRID, "X", "Y")
    assert result["diff"] == pytest.approx(0.25)
    assert result["diff_ci_low"] <= 0.25 <= result["diff_ci_high"]
    assert result["mdd_80"] == pytest.approx((1.959964 + 0.841621) * 0.25, rel=1e-5)   # sd 0.3536 / sqrt(2)
    pairs = metrics.pairwise_comparisons(GRID, metrics.leaderboard_v0(GRID)).set_index(["model A", "model B"])
    assert {"diff", "diff_ci_low", "diff_ci_high", "mdd_80", "p_value"} <= set(pairs.columns)
    xy = pairs.loc[("X", "Y")] if ("X", "Y") in pairs.index else pairs.loc[("Y", "X")]
    assert abs(xy["diff"]) == pytest.approx(0.25)


def _discrimination(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_instance_flags_and_trusted_scores() -> None:
    disc = _discrimination([
        {"instance_id": "a-1", "non_discriminating": True, "flaky": False, "repeats": 1},
        {"instance_id": "a-2", "non_discriminating": False, "flaky": True, "repeats": 3,
         "gold_resolved": [True, False, True], "no_patch_resolved": [False, False, False]},
        {"instance_id": "b-3", "non_discriminating": False, "flaky": False, "repeats": 3,
         "gold_resolved": [False, False, False], "no_patch_resolved": [False] * 3},
        {"instance_id": "b-4", "non_discriminating": False, "flaky": False, "repeats": 3,
         "gold_resolved": [True] * 3, "no_patch_resolved": [False] * 3},
    ])
    grid = _attempts([("M", iid, 1, "ok", ok, False) for iid, ok in
                      (("a-1", True), ("a-2", True), ("b-3", False), ("b-4", True), ("b-5", False))]
                     + [("gold", "b-5", 1, "ok", False, True)])
    grid["mode"] = ["patch"] * 5 + ["builtin"]
    flags = metrics.instance_flags(disc, grid).set_index("instance_id")
    assert list(flags.index) == ["a-1", "a-2", "b-3", "b-4", "b-5"]
    assert flags["trusted"].to_dict() == {"a-1": False, "a-2": False, "b-3": False, "b-4": True, "b-5": False}
    assert flags.loc["b-3", "gold_fails"] and flags.loc["b-5", "gold_fails"]     # repeats, and the gold model
    assert metrics.untrusted_ids(flags.reset_index()) == ["a-1", "a-2", "b-3", "b-5"]
    trusted = metrics.trusted_scores(grid, flags.reset_index())
    assert trusted.loc["M", "pass@1_trusted"] == 1.0 and trusted.loc["M", "n_trusted"] == 1     # b-4 only
    board = metrics.leaderboard_v4(grid, flags=flags.reset_index()).set_index("model")
    assert board.loc["M", "pass@1"] == pytest.approx(0.6) and board.loc["M", "pass@1_trusted"] == 1.0
    assert metrics.instance_flags(pd.DataFrame()).empty


def test_failure_classes_difficulty_and_unsolved() -> None:
    grid = _attempts([
        ("A", "a-1", 1, "ok", True, False), ("A", "a-1", 2, "ok", False, False),
        ("B", "a-1", 1, "ok", False, False), ("B", "a-1", 2, "timeout", False, False),
        ("A", "b-2", 1, "ok", False, False), ("A", "b-2", 2, "error", False, False),
        ("B", "b-2", 1, "ok", False, False), ("B", "b-2", 2, "malformed", False, False),
        ("empty", "a-1", 1, "ok", True, False), ("G", "b-2", 1, "ok", True, True),
    ])
    grid["patch_applied"] = pd.array([True, True, True, pd.NA, False, pd.NA, True, pd.NA, True, True],
                                     dtype="boolean")
    grid["has_patch"] = True
    kinds = metrics.failure_class(grid).tolist()
    assert kinds == ["resolved", "wrong patch", "wrong patch", "run failure", "apply error", "infra error",
                     "wrong patch", "run failure", "resolved", "resolved"]
    difficulty = metrics.instance_difficulty(grid, exclude=["empty"]).set_index("instance_id")
    assert difficulty.loc["a-1", "share_resolved"] == 0.25 and difficulty.loc["a-1", "models_resolving"] == 1
    assert difficulty.loc["b-2", "share_resolved"] == 0.0 and difficulty.loc["b-2", "graded"] == 4  # oracle out
    assert list(difficulty.index) == ["b-2", "a-1"]                                              # hardest first
    unsolved = metrics.unsolved_by_all(difficulty.reset_index())
    assert unsolved["instance_id"].tolist() == ["b-2"]
    assert unsolved.loc[0, "failures"] == "run failure x1, infra error x1, apply error x1, wrong patch x1"


def test_probe_hits_and_scores() -> None:
    assert metrics.probe_hits(["a.py"], ["a.py"]) == (True, True)
    assert metrics.probe_hits(["a.py", "b.py"], ["a.py"]) == (False, True)
    assert metrics.probe_hits(["c.py"], ["a.py"]) == (False, False)
    assert metrics.probe_hits(None, ["a.py"]) == (False, False)
    probe = pd.DataFrame([
        # SWE-bench: 2 of 3 answered attempts exact, 3 of 3 hit; the timeout is not an answer
        ("p", "SWE-bench", "ok", ["x/a.py"], ["x/a.py"], 0.01),
        ("p", "SWE-bench", "ok", ["x/a.py", "y.py"], ["x/a.py"], 0.01),
        ("p", "SWE-bench", "ok", ["x/b.py", "x/c.py"], ["x/c.py", "x/b.py"], 0.01),
        ("p", "SWE-bench", "timeout", None, ["x/a.py"], 0.01),
        # minibench: one miss, one reply with no file at all (malformed: a miss)
        ("p", "minibench", "ok", ["m/z.py"], ["m/a.py"], 0.02),
        ("p", "minibench", "malformed", [], ["m/a.py"], 0.02),
    ], columns=["model", "family", "status", "probe_files", "gold_files", "cost_usd"])
    scores = metrics.probe_scores(probe).set_index(["model", "family"])
    assert scores.loc[("p", "SWE-bench"), "probe_exact"] == pytest.approx(2 / 3)
    assert scores.loc[("p", "SWE-bench"), "probe_any_hit"] == 1.0 and scores.loc[("p", "SWE-bench"), "n"] == 3
    assert scores.loc[("p", "SWE-bench"), "cost_usd"] == pytest.approx(0.04)               # the timeout cost too
    assert scores.loc[("p", "minibench"), "probe_any_hit"] == 0.0 and scores.loc[("p", "minibench"), "n"] == 2
    assert metrics.probe_scores(probe.iloc[:0]).empty


def test_leaderboard_v4_cost_per_resolved_and_probe_columns() -> None:
    grid = GRID.assign(cost_usd=0.5)                      # X: 4 attempts -> $2.00, one instance resolved
    probe = pd.DataFrame([{"model": "X", "family": "SWE-bench", "n": 4, "probe_exact": 0.25, "probe_any_hit": 0.75,
                           "cost_usd": 0.1}])
    board = metrics.leaderboard_v4(grid, probe=probe).set_index("model")
    assert board.loc["X", "cost_per_resolved"] == pytest.approx(2.0)
    assert math.isnan(board.loc["Y", "cost_per_resolved"])                    # nothing resolved: no price
    assert board.loc["X", "probe_any_hit"] == 0.75 and board.loc["X", "probe_cost_usd"] == pytest.approx(0.1)
    assert math.isnan(board.loc["Y", "probe_exact"])
    assert board.loc["X", "pass@1_trusted"] == board.loc["X", "pass@1"]       # no flags: every instance counts


def test_instance_flags_read_the_older_discrimination_shape_too() -> None:
    # the official harness backend writes no repeats: its rows lack flaky / repeats / verdict lists (NaN here)
    disc = pd.DataFrame([{"instance_id": "a-1", "non_discriminating": False, "fail_to_pass_passing_unpatched": []},
                         {"instance_id": "a-2", "non_discriminating": True, "flaky": False, "repeats": 2,
                          "gold_resolved": [True, True], "no_patch_resolved": [True, True]}])
    flags = metrics.instance_flags(disc).set_index("instance_id")
    assert flags.loc["a-1", "trusted"] and not flags.loc["a-1", "flaky"] and flags.loc["a-1", "repeats"] == 1
    assert not flags.loc["a-2", "trusted"] and flags.loc["a-2", "repeats"] == 2
