"""`swelab reconcile`: a run's recorded tokens and cost against a provider's usage export, on the calls both
know about (matched by model, time window and token counts)."""

from __future__ import annotations

import datetime as dt

import pytest

from swelab import cli
from swelab.analyze.reconcile import ExportError, reconcile
from swelab.io import write_json
from swelab.rundir import CallRecord, CellRecord, RunLayout

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp()


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(T0 + seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def make_run(root):
    layout = RunLayout(root)
    write_json(layout.manifest, {"params": {"models": [{"name": "qwen", "model_id": "qwen/qwen3-coder"},
                                                       {"name": "other", "model_id": "meta/llama-3"}]}})
    layout.write_cell(CellRecord(model="qwen", instance_id="a__b-1", repo="a/b", attempt=1, mode="shell",
                                 status="ok"))
    path = layout.calls_path("qwen", "a__b-1", 1)
    # two calls a second apart: only their token counts tell their export rows apart
    rows = [(1, 0.0, 2.0, 1000, 50, 0.0020, "provider"), (2, 1.0, 3.0, 1400, 80, 0.0030, "provider"),
            (3, 10.0, 12.0, 2000, 100, None, "approx"), (4, 20.0, 21.0, None, None, None, None)]
    for index, start, end, prompt, completion, cost, source in rows:
        layout.append_call(path, CallRecord(
            model="qwen", instance_id="a__b-1", attempt=1, program_id="p", call_index=index,
            started_at=T0 + start, ended_at=T0 + end, prompt_tokens=prompt, completion_tokens=completion,
            cost_usd=cost, token_source=source, error_kind="timeout" if prompt is None else None))
    return layout


def write_export(path, rows):
    header = "generation_id,created_at,model,tokens_prompt,tokens_completion,cost\n"
    path.write_text(header + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def test_reconcile_pairs_calls_with_export_rows_and_reports_the_differences(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    export = write_export(tmp_path / "activity.csv", [
        ("gen-2", iso(1.5), "qwen/qwen3-coder", 1400, 80, 0.0030),   # the second call (listed first)
        ("gen-1", iso(1.2), "qwen/qwen3-coder", 1000, 50, 0.0020),   # the first call: same window, other counts
        ("gen-3", iso(11.0), "qwen/qwen3-coder", 2300, 90, 0.0041),  # the approximated call
        ("gen-x", iso(11.0), "meta/llama-3", 2000, 100, 0.0001),     # another model at the same moment
        ("gen-old", iso(-86400), "qwen/qwen3-coder", 10, 1, 0.0),    # yesterday: another run
    ])
    result = reconcile(run.root, export, window_s=5)
    pairs = dict(zip(result.pairs["call_index"], result.pairs["generation_id"], strict=True))
    assert pairs == {1: "gen-1", 2: "gen-2", 3: "gen-3"}
    assert (result.unmatched_calls, result.unmatched_export_rows, result.export_rows_outside) == (0, 1, 1)
    row = result.per_model.loc["qwen"]
    assert row["calls"] == 3 and row["prompt_diff"] == -300 and row["completion_diff"] == 10
    assert row["run_cost"] == pytest.approx(0.005) and row["export_cost"] == pytest.approx(0.0091)

    assert cli.main(["reconcile", str(run.root), "--usage-export", str(export), "--window-s", "5",
                     "--pairs", str(tmp_path / "pairs.csv")]) == 0
    out = capsys.readouterr().out
    assert "matched 3 call(s)" in out and "1 matched call(s) have counted" in out
    assert (tmp_path / "pairs.csv").read_text().count("gen-") == 3


def test_an_export_without_a_needed_column_is_named(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    bad = tmp_path / "bad.csv"
    bad.write_text("created_at,model,tokens_prompt\n2025-03-01 12:00:01,qwen,5\n")
    with pytest.raises(ExportError, match="no completion column"):
        reconcile(run.root, bad)
    assert cli.main(["reconcile", str(run.root), "--usage-export", str(bad)]) == 2
    assert "bad.csv: no completion column" in capsys.readouterr().err
