"""Loaders of swelab.analyze.results on a synthetic run directory written here through swelab.rundir."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from swelab.analyze import results
from swelab.io import write_json
from swelab.rundir import CallRecord, CellRecord, RunLayout

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

# (model, instance_id, attempt, status, oracle, resolved-or-None-when-not-graded, duration_s)
CELLS = [
    ("org/model-a", "astropy__astropy-1", 1, "ok", False, True, 30.0),
    ("org/model-a", "astropy__astropy-1", 2, "ok", False, False, 40.0),
    ("org/model-a", "django__django-2", 1, "timeout", False, None, 90.0),
    ("org/model-a", "django__django-2", 2, "ok", False, None, 50.0),   # finished, not graded yet
    ("model-b", "astropy__astropy-1", 1, "ok", False, False, 20.0),
    ("model-b", "astropy__astropy-1", 2, "malformed", False, None, 10.0),
    ("model-b", "django__django-2", 1, "ok", False, False, 25.0),
    ("model-b", "django__django-2", 2, "provider_error", False, None, 5.0),
    ("gold", "astropy__astropy-1", 1, "ok", True, True, 3.0),
    ("gold", "django__django-2", 1, "ok", True, True, 4.0),
]


def _cell(model: str, instance: str, attempt: int, status: str, oracle: bool, start: datetime,
          duration: float) -> dict:
    repo = instance.split("__")[0] + "/" + instance.split("__")[1].rsplit("-", 1)[0]
    reported = 0.001 if model == "org/model-a" else None
    return {
        "model": model, "instance_id": instance, "repo": repo, "attempt": attempt, "mode": "patch",
        "status": status, "error_kind": None if status == "ok" else status, "error": None,
        "model_patch": "diff --git a/x b/x\n" if status == "ok" else "", "oracle": oracle,
        "started_at": start.isoformat(), "finished_at": (start + timedelta(seconds=duration)).isoformat(),
        "duration_s": duration, "steps": 2, "tool_calls": 3 if status == "ok" else 0, "n_calls": 2,
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "cached_tokens": 0,
                  "reasoning_tokens": None, "cost_usd": reported},
    }


def _calls(layout: RunLayout, cell: dict, start: float) -> None:
    path = layout.calls_path(cell["model"], cell["instance_id"], cell["attempt"])
    for index in range(2):
        begin = start + 5.0 * index
        RunLayout.append_call(path, CallRecord(
            model=cell["model"], instance_id=cell["instance_id"], attempt=cell["attempt"],
            program_id=f"{cell['model']}:{cell['instance_id']}:{cell['attempt']}", call_index=index,
            started_at=begin, ended_at=begin + 1.0 + index, latency_s=1.0 + index, prompt_tokens=500,
            completion_tokens=50, cached_tokens=0, finish_reason="stop"))


def _verdict(layout: RunLayout, model: str, attempt: int, instance: str, resolved: bool) -> None:
    # model-a attempt 1 was graded by the local backend; its attempt 2 set carries no label
    label = {("org/model-a", 1): "official grading, local environment", ("org/model-a", 2): None}
    layout.write_eval_meta(model, attempt, label.get((model, attempt), "local"), "local")
    layout.write_verdict(model, attempt, instance, {
        "patch_is_None": False, "patch_exists": True, "patch_successfully_applied": True,
        "resolved": resolved, "tests_status": {}}, None)


def write_synthetic_run(run_dir: Path, workers: int = 4) -> Path:
    """A small but complete run: 3 models (one oracle), 2 repos, K=2, failures, a pending attempt."""
    layout = RunLayout(run_dir)
    for number, (model, instance, attempt, status, oracle, resolved, duration) in enumerate(CELLS):
        start = T0 + timedelta(seconds=60 * number)
        cell = _cell(model, instance, attempt, status, oracle, start, duration)
        _calls(layout, cell, start.timestamp())
        layout.write_cell(CellRecord.from_dict(cell, "synthetic"))
        if resolved is not None:
            _verdict(layout, model, attempt, instance, resolved)
    write_json(layout.manifest, {
        "run_id": run_dir.name, "params": {"name": "synthetic", "workers": workers},
        "instance_ids": ["astropy__astropy-1", "django__django-2"],
        "dataset": {"source": "local", "revision": "abc123"}, "project_commit": "deadbeef",
        "workers": {"auto": True, "start": workers, "timeline": [
            {"at": T0.isoformat(), "cpu_percent": None, "workers": workers, "reason": "start"},
            {"at": (T0 + timedelta(minutes=3)).isoformat(), "cpu_percent": 96.0, "workers": max(1, workers - 1),
             "reason": "cpu above 80 %"}]}})
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_synthetic_run(tmp_path / "synthetic-0123abcd")


def test_load_cells_reads_every_cell_with_true_model_names(run_dir: Path) -> None:
    cells = results.load_cells(run_dir)
    assert len(cells) == len(CELLS)
    assert set(cells["model"]) == {"org/model-a", "model-b", "gold"}
    row = cells[(cells["model"] == "org/model-a") & (cells["attempt"] == 1)
                & (cells["instance_id"] == "astropy__astropy-1")].iloc[0]
    assert row["repo"] == "astropy/astropy"
    assert row["prompt_tokens"] == 1000 and row["cost_usd"] == pytest.approx(0.001)
    assert pd.isna(cells[cells["model"] == "model-b"]["cost_usd"]).all()
    assert cells["oracle"].sum() == 2
    assert str(cells["started_at"].dtype).startswith("datetime64")


def test_load_cells_empty_run_has_columns(tmp_path: Path) -> None:
    cells = results.load_cells(tmp_path)
    assert cells.empty and "status" in cells.columns


def test_bad_cell_names_the_file_and_field(run_dir: Path) -> None:
    bad = run_dir / "cells" / "model-b" / "astropy__astropy-1" / "1.json"
    write_json(bad, {"model": "model-b", "instance_id": "astropy__astropy-1", "attempt": 1})
    with pytest.raises(ValueError, match=r"1\.json.*'status'"):
        results.load_cells(run_dir)
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        results.load_cells(run_dir)


def test_load_calls_tags_each_line(run_dir: Path) -> None:
    calls = results.load_calls(run_dir)
    assert len(calls) == 2 * len(CELLS)
    assert set(calls["model"]) == {"org/model-a", "model-b", "gold"}
    assert sorted(calls["latency_s"].unique()) == [1.0, 2.0]
    assert (calls["ended_at"] > calls["started_at"]).all()


def test_load_verdicts_maps_dirnames_back_to_models(run_dir: Path) -> None:
    verdicts = results.load_verdicts(run_dir)
    graded = [c for c in CELLS if c[5] is not None]
    assert len(verdicts) == len(graded)
    assert "org/model-a" in set(verdicts["model"])
    labels = verdicts.groupby(["model", "attempt"])["eval_label"].first().to_dict()
    assert labels[("org/model-a", 1)] == "official grading, local environment"
    assert pd.isna(labels[("org/model-a", 2)]) and labels[("model-b", 1)] == "local"
    row = verdicts[(verdicts["model"] == "org/model-a") & (verdicts["attempt"] == 2)].iloc[0]
    assert bool(row["resolved"]) is False and bool(row["patch_applied"]) is True


def test_verdict_model_and_attempt_are_data_not_folder_names(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    _verdict(layout, "org/only-evaluated", 3, "astropy__astropy-1", True)
    # a folder whose name says one thing and whose meta says another: the meta (data) wins
    (tmp_path / "eval" / "org__only-evaluated__a3").rename(tmp_path / "eval" / "renamed")
    verdicts = results.load_verdicts(tmp_path)
    assert verdicts[["model", "attempt"]].values.tolist() == [["org/only-evaluated", 3]]


def test_attempt_table_separates_failures_from_pending(run_dir: Path) -> None:
    table = results.attempt_table(run_dir).set_index(["model", "instance_id", "attempt"])
    assert table.loc[("org/model-a", "django__django-2", 1), "resolved"] == False  # noqa: E712
    assert table.loc[("org/model-a", "django__django-2", 1), "outcome"] == "timeout"
    assert pd.isna(table.loc[("org/model-a", "django__django-2", 2), "resolved"])
    assert table.loc[("org/model-a", "django__django-2", 2), "outcome"] == "pending"
    assert table.loc[("org/model-a", "astropy__astropy-1", 1), "outcome"] == "resolved"
    assert table.loc[("model-b", "astropy__astropy-1", 1), "outcome"] == "wrong"


def test_profiles_accept_list_and_mapping(tmp_path: Path) -> None:
    assert results.load_profiles(tmp_path).empty
    write_json(tmp_path / "thunderagent" / "profiles.json",
               {"p1": {"prefill_time": 1.5, "decode": 2, "pause_s": 0.5, "tool_s": 3}})
    profiles = results.load_profiles(tmp_path)
    assert profiles.iloc[0].to_dict() == {"program_id": "p1", "prefill_s": 1.5, "decode_s": 2.0,
                                          "pause_s": 0.5, "tool_s": 3.0}


def test_profiles_in_thunderagents_own_shape_become_per_program_totals(tmp_path: Path) -> None:
    # GET /profiles of ThunderAgent (wiki, API Reference): per-step averages keyed by program id
    write_json(tmp_path / "thunderagent" / "profiles.json", {
        "m:i:1": {"step_count": 4, "avg_prefill_s": 0.25, "avg_decode_s": 2.0, "avg_pause_s": 0.0,
                  "avg_tool_call_s": 1.5, "avg_kv_hit_rate": 0.8}})
    row = results.load_profiles(tmp_path).iloc[0].to_dict()
    assert row == {"program_id": "m:i:1", "prefill_s": 1.0, "decode_s": 8.0, "pause_s": 0.0, "tool_s": 6.0}


def test_pricing_file_loads_and_rejects_bad_rows(tmp_path: Path) -> None:
    shipped = results.default_pricing_path()
    assert shipped is not None and results.load_pricing(shipped)
    bad = tmp_path / "pricing.yaml"
    bad.write_text("models:\n  m: {input: 1}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="models.m"):
        results.load_pricing(bad)


def test_write_leaderboards_round_trips(tmp_path: Path) -> None:
    board = pd.DataFrame({"model": ["a/b", "c"], "pass@1": [0.5, 0.0], "note": ["", "nothing resolved"]})
    csv_path, parquet_path = results.write_leaderboards(tmp_path, board)
    assert pd.read_csv(csv_path, keep_default_na=False)["note"].tolist() == board["note"].tolist()
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_path), board, check_dtype=False)
    assert not list(tmp_path.glob(".*tmp"))


def test_a_model_that_completed_no_call_is_named_with_its_reason(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    write_json(layout.manifest, {"params": {"models": [
        {"name": "gold", "kind": "gold", "provider": None},
        {"name": "crashed", "kind": "patch", "provider": "local"},
        {"name": "answered", "kind": "patch", "provider": "local"}]}})
    for model, kind in (("crashed", "server_crashed"), ("answered", None), ("gold", None)):
        layout.write_cell(CellRecord(model=model, instance_id="i", repo="r", attempt=1, mode="patch",
                                     status="error" if kind else "ok", error_kind=kind,
                                     error="local model exited with signal 11 (SIGSEGV)" if kind else None))
    RunLayout.append_call(layout.calls_path("answered", "i", 1), CallRecord(
        model="answered", instance_id="i", attempt=1, program_id="p", call_index=1, started_at=0.0, ended_at=1.0))
    RunLayout.append_call(layout.calls_path("crashed", "i", 1), CallRecord(
        model="crashed", instance_id="i", attempt=1, program_id="q", call_index=1, started_at=0.0, ended_at=1.0,
        error_kind="unavailable"))
    assert results.silent_models(tmp_path) == {
        "crashed": "server_crashed: local model exited with signal 11 (SIGSEGV)"}
