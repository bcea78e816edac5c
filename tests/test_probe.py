"""The contamination probe: the agent (issue text in, file names out, against the fake OpenAI server), its place in
the grid (no predictions, so never graded) and its scores in the analysis (leaderboard columns and report)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer, error, ok
from scaffold import write_params
from test_results import write_synthetic_run

from swelab.analyze import artifacts
from swelab.generate.agents import build_agent
from swelab.generate.agents.base import AttemptContext
from swelab.generate.agents.probe import ProbeAgent, parse_files
from swelab.generate.runner import write_predictions
from swelab.io import read_jsonl, write_json, write_jsonl
from swelab.params import ModelConfig, load_params
from swelab.registry import AGENTS
from swelab.rundir import CellRecord, RunLayout

INSTANCE = {"instance_id": "calc__calc-1", "repo": "calc/calc", "base_commit": "0" * 40,
            "problem_statement": "add(a, b) subtracts instead of adding",
            "patch": "--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1 +1 @@\n-x\n+y\n"}


@pytest.mark.parametrize(("reply", "files"), [
    ("```text\ncalc/ops.py\n```", ["calc/ops.py"]),
    ("```\n- `calc/ops.py`\n2. ./calc/util.py\ncalc/ops.py\n```", ["calc/ops.py", "calc/util.py"]),
    ("I would change calc/ops.py and maybe setup.cfg.", ["calc/ops.py", "setup.cfg"]),
    ("```text\na/calc/ops.py\n../../etc/passwd\n/abs/x.py\n```", ["calc/ops.py"]),   # nothing leaves the repo
    ("I cannot tell without the code.", []),
])
def test_parse_files(reply: str, files: list[str]) -> None:
    assert parse_files(reply) == files


def _run(server: FakeOpenAIServer, tmp_path: Path):
    model = ModelConfig(name="fake/probe", kind="probe", provider="vllm", model_id="coder",
                        base_url=server.base_url, options={"max_retries": 0})
    cell = tmp_path / "cell"
    # no workspace: the probe never looks at the repository
    ctx = AttemptContext(cell_dir=cell, attempt=1, deadline=time.monotonic() + 60, params=None, workspace=None)
    agent = build_agent(model)
    assert isinstance(agent, ProbeAgent)
    return agent.run(INSTANCE, ctx), cell


def test_the_probe_sees_only_the_issue_and_records_the_files_it_names(tmp_path: Path) -> None:
    with FakeOpenAIServer([ok("```text\ncalc/ops.py\n```")]) as server:
        outcome, cell = _run(server, tmp_path)
        sent = server.chat_requests()[0]["body"]["messages"]
    assert outcome.status == "ok" and outcome.model_patch == ""
    assert outcome.n_calls == 1 and outcome.usage["prompt_tokens"] > 0      # tokens recorded as for any call
    prompt = "\n".join(m["content"] for m in sent)
    assert "subtracts instead of adding" in prompt and "calc/calc" in prompt
    assert "-x" not in prompt and "+y" not in prompt                          # never the gold patch
    rows = read_jsonl(cell / "trajectory.jsonl")
    assert rows[-1] == {"step": 1, "role": "probe", "probe_files": ["calc/ops.py"]}
    calls = read_jsonl(cell / "calls.jsonl")
    assert len(calls) == 1 and calls[0]["prompt_tokens"] > 0


def test_a_reply_naming_no_file_is_malformed_and_a_provider_failure_is_recorded(tmp_path: Path) -> None:
    with FakeOpenAIServer([ok("It depends.")]) as server:
        outcome, cell = _run(server, tmp_path)
    assert outcome.status == "malformed" and "names no file" in outcome.error
    assert read_jsonl(cell / "trajectory.jsonl")[-1]["probe_files"] == []
    with FakeOpenAIServer(default=error(500, "down")) as server:
        outcome, _ = _run(server, tmp_path / "again")
    assert outcome.status == "provider_error" and outcome.n_calls == 1


def test_probe_cells_get_no_predictions_file_so_evaluation_never_grades_them(tmp_path: Path) -> None:
    assert AGENTS["probe"].produces_patch is False and AGENTS["patch"].produces_patch is True
    path = write_params(tmp_path, "name: p\nattempts: 1\nmodels:\n  - {name: gold, kind: gold}\n"
                                  "  - {name: probe, kind: probe, provider: vllm, model_id: m,"
                                  " base_url: 'http://127.0.0.1:9/v1'}\n")
    params = load_params(path, environ={})
    layout = RunLayout(tmp_path / "run")
    for model in ("gold", "probe"):
        layout.write_cell(CellRecord(model=model, instance_id="calc__calc-1", repo="calc/calc", attempt=1,
                                     mode="probe" if model == "probe" else "builtin", status="ok",
                                     model_patch="x" if model == "gold" else ""))
    write_predictions(params, [INSTANCE], layout.root)
    assert [(s.model, s.attempt) for s in layout.prediction_sets()] == [("gold", 1)]


# ---------------------------------------------------------------- scored in the analysis

GOLD = {"astropy__astropy-1": "--- a/astropy/io.py\n+++ b/astropy/io.py\n@@ -1 +1 @@\n-a\n+b\n",
        "django__django-2": "--- a/django/db.py\n+++ b/django/db.py\n@@ -1 +1 @@\n-a\n+b\n"}


def _with_probe(run: Path, named: dict[str, list[str]], model_id: str = "a") -> Path:
    """Give a synthetic run its instances, a probe of org/model-a's model, and the probe's cells."""
    layout = RunLayout(run)
    write_jsonl(layout.instances, [{"instance_id": iid, "repo": "x/y", "patch": patch}
                                   for iid, patch in GOLD.items() if iid in named] +
                [{"instance_id": iid, "repo": "mini/kit", "patch": f"--- a/kit/{iid}.py\n+++ b/kit/{iid}.py\n"}
                 for iid in named if iid.startswith("minibench__")])
    manifest = json.loads(layout.manifest.read_text())
    manifest["params"]["models"] = [
        {"name": "org/model-a", "kind": "patch", "provider": "vllm", "model_id": model_id},
        {"name": "probe-a", "kind": "probe", "provider": "vllm", "model_id": model_id}]
    write_json(layout.manifest, manifest)
    for iid, files in named.items():
        layout.write_cell(CellRecord(model="probe-a", instance_id=iid, repo="x/y", attempt=1, mode="probe",
                                     status="ok", n_calls=1, probe_files=files,
                                     usage=CellRecord.from_dict({"model": "m", "instance_id": "i", "attempt": 1,
                                                                 "status": "ok",
                                                                 "usage": {"cost_usd": 0.002}}, "t").usage))
    return run


def test_probe_scores_reach_the_leaderboard_and_the_report(tmp_path: Path) -> None:
    run = _with_probe(write_synthetic_run(tmp_path / "run"),
                      {"astropy__astropy-1": ["astropy/io.py"], "django__django-2": ["django/db.py", "x.py"]})
    other = _with_probe(write_synthetic_run(tmp_path / "mini"),
                        {"minibench__kit-1": ["kit/other.py"]})
    analysis = artifacts.write_analysis(run, run_dirs=[other])
    board = analysis.boards["v4"].set_index("model")
    assert "probe-a" not in board.index                                   # a probe is not a graded contender
    assert board.loc["org/model-a", "probe_exact"] == 0.5                 # astropy exact; django one extra file
    assert board.loc["org/model-a", "probe_any_hit"] == 1.0
    assert board.loc["org/model-a", "probe_cost_usd"] == pytest.approx(0.004)
    assert pd.isna(board.loc["model-b", "probe_exact"])
    probe = analysis.probe.set_index(["run_id", "family"])
    assert probe.loc[("run", "SWE-bench"), "probe_any_hit"] == 1.0
    assert probe.loc[("mini", "minibench"), "probe_any_hit"] == 0.0      # the gap is the signal
    text = analysis.report_path.read_text(encoding="utf-8")
    assert "probe_any_hit" in text and "minibench" in text
    assert not any(p.model == "probe-a" for p in RunLayout(run).prediction_sets())


def test_the_probe_answer_is_read_from_the_trajectory_when_the_cell_has_none(tmp_path: Path) -> None:
    run = _with_probe(write_synthetic_run(tmp_path / "run"), {"astropy__astropy-1": None})
    layout = RunLayout(run)
    write_jsonl(layout.attempt_dir("probe-a", "astropy__astropy-1", 1) / "trajectory.jsonl",
                [{"step": 1, "role": "probe", "probe_files": ["astropy/io.py"]}])
    board = artifacts.write_analysis(run).boards["v4"].set_index("model")
    assert board.loc["org/model-a", "probe_exact"] == 1.0
