"""swelab.generate.imports: SWE-bench predictions, mini-swe-agent preds.json + trajectories, OpenHands output.jsonl
become cells (mode "import") and official predictions files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from swelab import io
from swelab.analyze import results
from swelab.generate import imports
from swelab.generate.imports import ImportFormatError
from swelab.params import ModelConfig
from swelab.rundir import USAGE_FIELDS

FIXTURES = Path(__file__).parent / "fixtures"
INSTANCES = [
    {"instance_id": "psf__requests-2317", "repo": "psf/requests"},
    {"instance_id": "pallets__flask-4992", "repo": "pallets/flask"},
    {"instance_id": "pytest-dev__pytest-6116", "repo": "pytest-dev/pytest"},
]


def test_formats_are_detected():
    assert imports.detect_format(FIXTURES / "predictions.jsonl") == "swebench"
    assert imports.detect_format(FIXTURES / "mini_preds.json") == "mini-swe-agent"
    assert imports.detect_format(FIXTURES / "openhands_output.jsonl") == "openhands"


def test_swebench_predictions_import(tmp_path):
    summary = imports.import_predictions(tmp_path, "agentless", FIXTURES / "predictions.jsonl", INSTANCES, attempt=2)
    assert summary.written == ["pallets__flask-4992", "psf__requests-2317"]
    assert summary.missing == ["pytest-dev__pytest-6116"] and summary.not_in_run == []
    cell = io.read_json(tmp_path / "cells" / "agentless" / "psf__requests-2317" / "2.json")
    assert cell["mode"] == "import" and cell["status"] == "ok" and cell["attempt"] == 2
    assert cell["repo"] == "psf/requests" and cell["model_patch"].startswith("diff --git")
    assert cell["usage"] == dict.fromkeys(USAGE_FIELDS) and cell["steps"] is None  # unknown stays null
    flask = io.read_json(tmp_path / "cells" / "agentless" / "pallets__flask-4992" / "2.json")
    assert flask["model_patch"] == ""  # a null patch becomes the empty patch
    preds = io.read_jsonl(summary.predictions_path)
    assert summary.predictions_path.name == "agentless__a2.jsonl"
    assert {p["instance_id"]: p["model_patch"] for p in preds}["psf__requests-2317"] == cell["model_patch"]
    assert all(set(p) == {"instance_id", "model_name_or_path", "model_patch"} for p in preds)


def test_mini_swe_agent_import_reads_trajectories(tmp_path):
    summary = imports.import_predictions(
        tmp_path,
        "openai/gpt-4o-mini",
        FIXTURES / "mini_preds.json",
        INSTANCES,
        trajectories=FIXTURES / "mini_traj",
    )
    assert summary.format == "mini-swe-agent" and summary.not_in_run == ["django__django-99999"]
    cell = io.read_json(tmp_path / "cells" / "openai__gpt-4o-mini" / "psf__requests-2317" / "1.json")
    traj = json.loads((FIXTURES / "mini_traj" / "psf__requests-2317" / "psf__requests-2317.traj.json").read_text())
    assistant = [m for m in traj["messages"] if m["role"] == "assistant"]
    assert cell["steps"] == len(assistant) == 3 and cell["tool_calls"] == 3 and cell["n_calls"] == 3
    assert cell["usage"]["prompt_tokens"] == sum(m["extra"]["response"]["usage"]["prompt_tokens"] for m in assistant)
    assert cell["usage"]["completion_tokens"] == 180 and cell["usage"]["cached_tokens"] == 2048
    assert cell["usage"]["cost_usd"] == pytest.approx(0.0042)
    assert cell["duration_s"] == pytest.approx(10.25) and cell["started_at"].startswith("2025-11-25T10:00:00")
    limited = io.read_json(tmp_path / "cells" / "openai__gpt-4o-mini" / "pallets__flask-4992" / "1.json")
    assert limited["status"] == "error" and limited["error_kind"] == "LimitsExceeded"
    assert limited["n_calls"] == 30 and limited["usage"]["prompt_tokens"] is None


def test_openhands_import(tmp_path):
    summary = imports.import_predictions(tmp_path, "openhands", FIXTURES / "openhands_output.jsonl", INSTANCES)
    assert summary.format == "openhands" and len(summary.written) == 2
    cell = io.read_json(tmp_path / "cells" / "openhands" / "psf__requests-2317" / "1.json")
    assert cell["steps"] == 3 and cell["tool_calls"] == 2 and cell["n_calls"] == 3
    assert cell["usage"]["prompt_tokens"] == 5400 and cell["usage"]["cached_tokens"] == 2048
    assert cell["usage"]["cost_usd"] == pytest.approx(0.0123) and cell["status"] == "ok"
    failed = io.read_json(tmp_path / "cells" / "openhands" / "pallets__flask-4992" / "1.json")
    assert failed["status"] == "error" and failed["error"] == "RuntimeError: Agent reached maximum iteration"
    assert "\n" not in failed["error"]


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instance_id": "a__b-1", "model_patch": ""}\n{"model_patch": "x"}\n')
    with pytest.raises(ImportFormatError, match="bad.jsonl:2: entry has no instance_id"):
        imports.read_predictions(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"instance_id": "a__b-1", "model_patch": ""}\n' * 2)
    with pytest.raises(ImportFormatError, match="dup.jsonl: instance a__b-1 appears twice"):
        imports.read_predictions(dup)
    with pytest.raises(ImportFormatError, match="unknown format"):
        imports.read_predictions(dup, fmt="swe-agent")
    with pytest.raises(ImportFormatError, match="not found"):
        imports.detect_format(tmp_path / "nowhere.jsonl")


def test_import_for_params_uses_one_file_per_attempt(tmp_path):
    model = ModelConfig(
        name="agentless", kind="import", options={"paths": ["predictions.jsonl", "openhands_output.jsonl"]}
    )
    params = SimpleNamespace(
        models=[model, ModelConfig(name="gold", kind="gold")],
        source_file="p.yaml",
        resolve_path=lambda value: FIXTURES / value,
        run_dir=tmp_path,
    )
    summaries = imports.import_for_params(params, INSTANCES)
    assert [(s.attempt, s.format) for s in summaries] == [(1, "swebench"), (2, "openhands")]
    assert sorted(p.name for p in (tmp_path / "predictions").glob("*.jsonl")) == [
        "agentless__a1.jsonl",
        "agentless__a2.jsonl",
    ]
    params.models = [ModelConfig(name="x", kind="import")]
    with pytest.raises(ImportFormatError, match="p.yaml: model x: options.path"):
        imports.import_for_params(params, INSTANCES)


def test_imported_cells_load_with_the_results_module(tmp_path):
    # a plain import: a regression in swelab.analyze.results must fail here, not skip
    imports.import_predictions(tmp_path, "openhands", FIXTURES / "openhands_output.jsonl", INSTANCES)
    cells = results.load_cells(tmp_path)
    assert len(cells) == 2 and set(cells["mode"]) == {"import"}


def test_an_imported_patch_over_the_cap_is_refused_and_stored_nowhere_else(tmp_path):
    from swelab.workspace.patches import DEFAULT_MAX_PATCH_BYTES

    huge = "diff --git a/x b/x\n+" + "y" * (DEFAULT_MAX_PATCH_BYTES + 10) + "\n"
    source = tmp_path / "preds.jsonl"
    io.write_jsonl(source, [{"instance_id": "psf__requests-2317", "model_name_or_path": "big", "model_patch": huge}])
    run = tmp_path / "run"
    imports.import_predictions(run, "big", source, [{"instance_id": "psf__requests-2317", "repo": "psf/requests"}])
    cell = io.read_json(run / "cells" / "big" / "psf__requests-2317" / "1.json")
    assert cell["status"] == "malformed" and "exceeds the cap" in cell["error"] and cell["model_patch"] == ""
    assert max(p.stat().st_size for p in run.rglob("*") if p.is_file()) < 10_000
