"""A deliberately flaky minibench evaluation: with eval_repeats R > 1 the gold patch and no patch are graded R times
past the verdict cache, the instance whose verdicts alternate is flagged flaky, and the trusted score leaves it out.

The grader is replaced by one that alternates for one instance (a real flaky test would need state outside the
sandboxed worktree, which the sandbox forbids); everything else is the real evaluate stage and analysis."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from scaffold import write_params

from swelab.analyze import artifacts
from swelab.evaluate import backends
from swelab.evaluate.local import Graded
from swelab.io import write_jsonl
from swelab.params import load_params
from swelab.rundir import CellRecord, RunLayout
from swelab.select.dataset import load_instances
from swelab.workspace.repos import Workspace

FLAKY, STEADY = "minibench__textkit-1", "minibench__ledger-1"
MODEL_PATCH = "model's patch"


class AlternatingGrader:
    """Stands in for evaluate_local: FLAKY resolves on the 1st, 3rd, ... grading of any patch (its test flips),
    STEADY resolves with the gold patch only; no patch never resolves. Counts every grading."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()

    def __call__(self, instance: dict, patch: str, *args: object, **kwargs: object) -> Graded:
        iid = instance["instance_id"]
        kind = "gold" if patch == instance["patch"] else "none" if not patch else "model"
        self.calls[(iid, kind)] += 1
        if iid == FLAKY:
            resolved = kind != "none" and self.calls[(iid, kind)] % 2 == 1
        else:
            resolved = kind == "gold"
        tests = json.loads(instance["FAIL_TO_PASS"]) if isinstance(instance["FAIL_TO_PASS"], str) \
            else instance["FAIL_TO_PASS"]
        report = {"resolved": resolved, "patch_successfully_applied": True, "patch_exists": bool(patch),
                  "tests_status": {"FAIL_TO_PASS": {"success": tests if resolved else [], "failure": []}}}
        return Graded(iid, report, f"graded {kind}\n")


def _workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A real workspace whose environments are never built (the stand-in grader needs none)."""
    workspace = Workspace(tmp_path / "cache")
    monkeypatch.setattr(workspace, "environment", lambda row: None)
    return workspace


@pytest.fixture
def flaky_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, AlternatingGrader]:
    rows = [row for row in load_instances("minibench") if row["instance_id"] in (FLAKY, STEADY)]
    params = load_params(write_params(tmp_path, (
        "name: flaky\ndataset: minibench\n"
        f"instances: [{FLAKY}, {STEADY}]\nattempts: 1\neval_repeats: 3\neval_backend: local\n"
        f"outputs_dir: {tmp_path / 'outputs'}\nmodels:\n  - {{name: m, kind: gold}}\n")), environ={})
    layout = RunLayout(params.run_dir)
    write_jsonl(layout.instances, rows)
    for row in rows:
        layout.write_cell(CellRecord(model="m", instance_id=row["instance_id"], repo=row["repo"], attempt=1,
                                     mode="patch", status="ok", model_patch=MODEL_PATCH))
    layout.write_predictions("m", 1, [{"instance_id": row["instance_id"], "model_name_or_path": "m",
                                       "model_patch": MODEL_PATCH} for row in rows])
    grader = AlternatingGrader()
    monkeypatch.setattr(backends, "evaluate_local", grader)
    backends.evaluate_run(params, workspace=_workspace(tmp_path, monkeypatch), progress=False)
    return params.run_dir, grader


def test_repeats_are_graded_past_the_cache_and_recorded(flaky_run: tuple[Path, AlternatingGrader]) -> None:
    run, grader = flaky_run
    for iid in (FLAKY, STEADY):
        assert grader.calls[(iid, "gold")] == 3 and grader.calls[(iid, "none")] == 3   # never from the cache
    flags = json.loads(RunLayout(run).discrimination.read_text())
    assert flags[FLAKY]["gold_resolved"] == [True, False, True] and flags[FLAKY]["flaky"] is True
    assert flags[STEADY]["gold_resolved"] == [True, True, True] and flags[STEADY]["flaky"] is False
    assert flags[STEADY]["no_patch_resolved"] == [False, False, False] and flags[STEADY]["repeats"] == 3


def test_the_flaky_instance_is_flagged_and_left_out_of_the_trusted_score(flaky_run) -> None:
    run, _ = flaky_run
    analysis = artifacts.write_analysis(run)
    board = analysis.boards["v4"].set_index("model")
    assert board.loc["m", "pass@1"] == 0.5                    # FLAKY resolved on its first grading, STEADY not
    assert board.loc["m", "pass@1_trusted"] == 0.0 and board.loc["m", "n_trusted"] == 1
    assert [trace.name for trace in analysis.figures["leaderboard"].data] == ["all instances",
                                                                              "trusted instances only"]
    flags = analysis.flags.set_index("instance_id")
    assert not flags.loc[FLAKY, "trusted"] and flags.loc[STEADY, "trusted"]
    assert f"Flaky instances (repeated gold / no-patch verdicts disagree): {FLAKY}" in analysis.report_path.read_text()
    memo = analysis.memo.set_index("criterion")
    assert memo.loc["runs are reproducible", "status"] == "not met"
    assert FLAKY in memo.loc["runs are reproducible", "why"]


def test_one_repeat_keeps_the_cached_no_patch_run_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row = next(r for r in load_instances("minibench") if r["instance_id"] == STEADY)
    grader = AlternatingGrader()
    monkeypatch.setattr(backends, "evaluate_local", grader)
    backend = backends.LocalBackend(load_params(write_params(tmp_path, (
        f"name: one\ndataset: minibench\ninstances: [{STEADY}]\neval_backend: local\n"
        "models:\n  - {name: m, kind: gold}\n")), environ={}), _workspace(tmp_path, monkeypatch))
    first = backend.discrimination(RunLayout(tmp_path), {STEADY: row})
    backend.discrimination(RunLayout(tmp_path), {STEADY: row})
    assert grader.calls == Counter({(STEADY, "none"): 1})                  # cached the second time, no gold run
    assert first[STEADY]["no_patch_resolved"] == [False] and first[STEADY]["flaky"] is False
