"""swelab.rundir: the run folder's one owner of paths and records."""

from __future__ import annotations

from pathlib import Path

import pytest

from swelab.io import read_json
from swelab.rundir import CallRecord, CellRecord, RunFolderError, RunLayout, Usage, model_dirname


def test_model_names_map_to_safe_folders() -> None:
    assert model_dirname("org/sub/model") == "org__sub__model"
    assert model_dirname("Qwen3-8B.q4+x@1") == "Qwen3-8B.q4+x@1"
    for unsafe in ("", "..", ".", "a/../b", "/abs", "a\\b", "a b", "x/", "../cells"):
        with pytest.raises(RunFolderError):
            model_dirname(unsafe)


def test_a_cell_round_trips_with_typed_usage(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    record = CellRecord(model="org/m", instance_id="a__b-1", repo="a/b", attempt=2, mode="patch", status="ok",
                        model_patch="diff", usage=Usage(prompt_tokens=3, cost_usd=0.5))
    path = layout.write_cell(record)
    assert path == tmp_path / "cells" / "org__m" / "a__b-1" / "2.json"
    assert read_json(path)["usage"] == {"prompt_tokens": 3, "completion_tokens": None, "cached_tokens": None,
                                        "reasoning_tokens": None, "cost_usd": 0.5}
    assert layout.read_cell("org/m", "a__b-1", 2) == record
    assert layout.cells() == [record]
    with pytest.raises(RunFolderError, match="instance id"):
        layout.cell_path("m", "../x", 1)


def test_usage_adds_fieldwise_keeping_unknowns_unknown() -> None:
    total = Usage(prompt_tokens=1, cost_usd=None).add(Usage(prompt_tokens=2, completion_tokens=5))
    assert (total.prompt_tokens, total.completion_tokens, total.cost_usd) == (3, 5, None)


def test_predictions_are_indexed_with_model_and_attempt_as_data(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    layout.write_predictions("org/m", 2, [{"instance_id": "i", "model_name_or_path": "org/m", "model_patch": ""}])
    layout.write_predictions("gold", 1, [{"instance_id": "i", "model_name_or_path": "gold", "model_patch": "x"}])
    layout.write_predictions("org/m", 2, [{"instance_id": "j", "model_name_or_path": "org/m", "model_patch": ""}])
    sets = layout.prediction_sets()
    assert [(s.model, s.attempt, s.path.name) for s in sets] == [("gold", 1, "gold__a1.jsonl"),
                                                                 ("org/m", 2, "org__m__a2.jsonl")]


def test_a_redone_attempt_keeps_the_calls_it_replaces(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    path = layout.calls_path("m", "i", 1)
    for n in (1, 2):
        RunLayout.append_call(path, CallRecord(model="m", instance_id="i", attempt=1, program_id=f"p{n}",
                                               call_index=1, started_at=0.0, ended_at=1.0))
        assert layout.keep_previous_calls("m", "i", 1) == path.with_name(f"calls.prev-{n}.jsonl")
    assert not path.exists() and layout.keep_previous_calls("m", "i", 1) is None
    assert read_json(path.with_name("calls.prev-2.jsonl"))["program_id"] == "p2"
