"""swelab.analyze.memo: the plan's exit criteria judged from the data, on hand-built frames and run folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from bs4 import BeautifulSoup
from test_results import write_synthetic_run

from swelab.analyze import artifacts, memo, metrics
from swelab.io import write_json, write_jsonl
from swelab.rundir import RunLayout


def _grid(best: list[bool], base: list[bool]) -> pd.DataFrame:
    """One attempt per instance for `best` and the `empty` baseline, instance i resolved as listed."""
    rows = [(model, f"r{i % 2}-{i}", 1, "ok", ok) for model, verdicts in (("best", best), ("empty", base))
            for i, ok in enumerate(verdicts)]
    frame = pd.DataFrame(rows, columns=["model", "instance_id", "attempt", "status", "resolved"])
    frame["resolved"] = frame["resolved"].astype("boolean")
    frame["oracle"] = False
    frame["repo"] = frame["instance_id"].str[:2]
    return frame


def _judge(best: list[bool], base: list[bool]) -> memo.Criterion:
    grid = _grid(best, base)
    return memo.best_vs_baseline(grid, metrics.leaderboard_v0(grid), ["empty"])


def test_best_vs_baseline_needs_a_higher_rate_and_the_paired_test() -> None:
    met = _judge([True] * 6, [False] * 6)                        # discordant 6 vs 0: p = 2/64
    assert met.status == "met" and "p = 0.0312" in met.why and "best 100.0% vs empty 0.0%" in met.why
    weak = _judge([True, True, False, False], [False] * 4)       # 2 vs 0: p = 0.5
    assert weak.status == "not met" and "cannot tell it from chance" in weak.why
    worse = _judge([False] * 3, [True, False, False])
    assert worse.status == "not met" and "not above the baseline" in worse.why


def test_best_vs_baseline_is_not_measurable_without_a_baseline_or_a_contender() -> None:
    grid = _grid([True], [False])
    board = metrics.leaderboard_v0(grid)
    assert memo.best_vs_baseline(grid, board, []).status == "not measurable"
    only_base = grid[grid["model"] == "empty"]
    assert memo.best_vs_baseline(only_base, metrics.leaderboard_v0(only_base), ["empty"]).status == "not measurable"
    assert memo.best_vs_baseline(grid, pd.DataFrame(), ["empty"]).status == "not measurable"


FLAGS_COLUMNS = ["instance_id", "non_discriminating", "flaky", "gold_fails", "trusted", "repeats"]


def _flags(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=FLAGS_COLUMNS)


def test_reproducibility_combines_selection_and_repeated_verdicts() -> None:
    same = memo.SelectionEvidence("identical", "the redraw is byte-identical to i1.jsonl")
    absent = memo.SelectionEvidence("absent", "no selection block")
    steady = _flags([("a", False, False, False, True, 3), ("b", False, False, False, True, 3)])
    flaky = _flags([("a", False, True, False, False, 3), ("b", False, False, False, True, 3)])
    single = _flags([("a", False, False, False, True, 1)])
    assert memo.reproducibility(same, steady).status == "met"
    verdict = memo.reproducibility(same, flaky)
    assert verdict.status == "not met" and "1 of 2 instances" in verdict.why and "(a)" in verdict.why
    assert memo.reproducibility(absent, single).status == "not measurable"
    assert memo.reproducibility(absent, steady).status == "met"            # what was measurable holds
    differs = memo.SelectionEvidence("differs", "not byte-identical")
    assert memo.reproducibility(differs, steady).status == "not met"


def test_completeness_counts_what_is_missing() -> None:
    rows = [("m", "i1", 1, "prediction", True, True), ("m", "i1", 1, "trajectory", True, False),
            ("m", "i2", 1, "trajectory", True, False), ("m", "i2", 1, "calls", False, False)]
    inventory = pd.DataFrame(rows, columns=memo.INVENTORY_COLUMNS)
    verdict = memo.completeness(inventory)
    assert verdict.status == "not met"
    assert verdict.why == "2 of 2 trajectories missing (first: m / i1 / attempt 1)"
    full = inventory.assign(present=inventory["expected"])
    assert memo.completeness(full).status == "met" and "1 prediction" in memo.completeness(full).why
    assert memo.completeness(inventory.iloc[:0]).status == "not measurable"


# ---------------------------------------------------------------- evidence from run folders


def test_selection_evidence_compares_bytes_with_the_pinned_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "params").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    pinned = project / "params" / "i1.jsonl"
    write_jsonl(pinned, [{"instance_id": "a"}, {"instance_id": "b"}])
    run = tmp_path / "run"
    manifest = {"params_file": str(project / "params" / "p.yaml"), "params": {"instances": "params/i1.jsonl"}}
    assert memo.selection_evidence(run, manifest).state == "absent"
    write_jsonl(run / "selection" / "instances.jsonl", [{"instance_id": "a"}, {"instance_id": "b"}])
    assert memo.selection_evidence(run, manifest).state == "identical"
    write_jsonl(run / "selection" / "instances.jsonl", [{"instance_id": "a"}, {"instance_id": "c"}])
    assert memo.selection_evidence(run, manifest).state == "differs"
    listed = {"params": {"instances": ["c", "a"]}}
    assert memo.selection_evidence(run, listed).state == "identical"
    assert memo.selection_evidence(run, {"params": {"instances": "all"}}).state == "absent"


def test_artifact_inventory_finds_missing_trajectories_and_reports(tmp_path: Path) -> None:
    run = write_synthetic_run(tmp_path / "run")
    table = artifacts.load_run(run).attempts
    inventory = memo.artifact_inventory(run, table)
    expected = inventory[inventory["expected"]]
    # the synthetic run writes calls but no trajectories, no predictions files and no test logs
    assert set(expected["artifact"]) == {"prediction", "trajectory", "calls"}
    assert expected[expected["artifact"] == "calls"]["present"].all()
    assert not expected[expected["artifact"] == "trajectory"]["present"].any()
    layout = RunLayout(run)
    layout.write_predictions("gold", 1, [{"instance_id": "astropy__astropy-1", "model_name_or_path": "gold",
                                          "model_patch": "x"}])
    inventory = memo.artifact_inventory(run, table)
    row = inventory[(inventory["model"] == "gold") & (inventory["instance_id"] == "astropy__astropy-1")
                    & (inventory["attempt"] == 1)].set_index("artifact")
    assert row.loc["prediction", "present"] and row.loc["evaluator report", "expected"]
    assert row.loc["evaluator report", "present"] and not row.loc["test log", "present"]
    probe_free = memo.artifact_inventory(run, table, no_patch_models=["gold"])
    assert not probe_free[(probe_free["model"] == "gold") & (probe_free["artifact"] == "prediction")]["expected"].any()
    servers = memo.artifact_inventory(run, table, local_servers=[["model-b", "org/model-a"]])
    assert servers[servers["artifact"] == "server log"][["expected", "present"]].values.tolist() == [[True, False]]
    layout.server_log("org/model-a").parent.mkdir(parents=True, exist_ok=True)
    layout.server_log("org/model-a").write_text("started\n")         # the entry that started the shared server
    servers = memo.artifact_inventory(run, table, local_servers=[["model-b", "org/model-a"]])
    assert servers[servers["artifact"] == "server log"][["expected", "present"]].values.tolist() == [[True, True]]
    assert memo.local_server_models({"models": [
        {"name": "a", "provider": "local", "model_id": "m"}, {"name": "b", "provider": "local", "model_id": "m"},
        {"name": "c", "provider": "local", "model_id": "n", "base_url": "http://h/v1"}]}) == [["a", "b"]]


def test_the_report_opens_with_the_memo(tmp_path: Path) -> None:
    run = write_synthetic_run(tmp_path / "run")
    write_json(RunLayout(run).discrimination, {
        "astropy__astropy-1": {"non_discriminating": False, "repeats": 2, "flaky": False,
                               "gold_resolved": [True, True], "no_patch_resolved": [False, False]},
        "django__django-2": {"non_discriminating": False, "repeats": 2, "flaky": False,
                             "gold_resolved": [True, True], "no_patch_resolved": [False, False]}})
    analysis = artifacts.write_analysis(run)
    soup = BeautifulSoup(analysis.report_path.read_text(encoding="utf-8"), "html.parser")
    first = soup.body.find(["section", "table", "h2"])
    assert first.get("id") == "memo"
    rows = {tr.th.get_text(): tr.find("td", class_="status").get_text() for tr in first.find_all("tr")}
    assert rows == {"best model beats the no-patch baseline": "not measurable",   # no `empty` model here
                    "runs are reproducible": "met",                              # 2 repeats agree
                    "artifacts are complete": "not met"}                         # no trajectories written
    assert analysis.memo["status"].tolist() == list(rows.values())


@pytest.mark.parametrize("name", ["best model beats the no-patch baseline", "runs are reproducible",
                                  "artifacts are complete"])
def test_every_criterion_has_a_status_and_a_reason_on_an_empty_run(tmp_path: Path, name: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    frame = artifacts.write_analysis(empty).memo.set_index("criterion")
    assert frame.loc[name, "status"] == "not measurable" and frame.loc[name, "why"]
