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
