"""The grid runner: one atomic file per cell, resume, force, failures recorded, manifest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from scaffold import write_params

from swelab.evaluate.backends import evaluate_run
from swelab.generate import runner
from swelab.generate.agents.base import AttemptOutcome
from swelab.generate.agents.builtin import GoldAgent
from swelab.io import read_json, read_jsonl, write_jsonl
from swelab.params import load_params
from swelab.workspace.repos import Workspace


def make_params(tmp_path, toy_repo, extra: str = "", models: str | None = None):
    repo, instance = toy_repo
    rows = []
    for i in range(3):  # three instances over the same repo: different ids, same bug
        rows.append(dict(instance, instance_id=f"toy__toy-{i + 1}"))
    write_jsonl(tmp_path / "toy.jsonl", rows)
    models = models or "  - {name: gold, kind: gold}\n  - {name: empty, kind: empty}\n"
    path = write_params(
        tmp_path,
        f"name: toy\ndataset: {tmp_path / 'toy.jsonl'}\nattempts: 2\nworkers: 4\neval_workers: 2\n"
        f"repo_sources: {{toy/toy: {repo}}}\nmodels:\n{models}{extra}",
        "toy.yaml",
    )
    return load_params(path, environ={}), rows


def test_generate_writes_cells_predictions_and_a_rerun_reuses_them(tmp_path, toy_repo, cache_dir):
    params, rows = make_params(tmp_path, toy_repo)
    first = runner.generate(params, rows, progress=False)
    assert first == {"planned": 12, "reused": 0, "ran": 12, "by_status": {"ok": 12}, "skipped_models": {}}
    cell = read_json(params.run_dir / "cells" / "gold" / "toy__toy-2" / "1.json")
    assert cell["model_patch"] == rows[0]["patch"] and cell["status"] == "ok" and cell["attempt"] == 1
    preds = read_jsonl(params.run_dir / "predictions" / "empty__a2.jsonl")
    assert [p["model_patch"] for p in preds] == ["", "", ""]
    assert set(preds[0]) == {"instance_id", "model_name_or_path", "model_patch"}
    second = runner.generate(params, rows, progress=False)
    assert second["reused"] == 12 and second["ran"] == 0
    forced = runner.generate(load_params(params.source_file, overrides={"force": True}, environ={}), rows,
                             progress=False)
    assert forced["ran"] == 12


def test_gold_resolves_everything_and_empty_nothing(tmp_path, toy_repo, cache_dir):
    params, rows = make_params(tmp_path, toy_repo)
    runner.generate(params, rows, progress=False)
    from swelab.select.instances import write_run_instances

    write_run_instances(params.run_dir, rows)
    workspace = Workspace(cache_dir, params.repo_sources)
    summaries = {f"{s['model']}__a{s['attempt']}": s for s in evaluate_run(params, workspace=workspace, progress=False)}
    assert summaries["gold__a1"]["resolved"] == 3 and summaries["gold__a2"]["resolved"] == 3
    assert summaries["empty__a1"]["resolved"] == 0 and summaries["empty__a1"]["completed"] == 3
    # The same (instance, patch) pairs are graded once: three ids share one bug, but ids differ, so 2 patches x 3
    verdicts = list((cache_dir / "verdicts").rglob("*.json"))
    assert len(verdicts) == 6
    again = evaluate_run(params, workspace=workspace, progress=False)
    assert {f"{s['model']}__a{s['attempt']}": s["resolved"] for s in again} == {
        k: v["resolved"] for k, v in summaries.items()
    }


class Boom:
    mode = "patch"

    def run(self, instance, ctx):
        if instance["instance_id"].endswith("2"):
            raise RuntimeError("agent bug\nsecond line")
        return AttemptOutcome(status="ok", model_patch="")


class Gone:
    mode = "patch"
    calls = 0

    def run(self, instance, ctx):
        Gone.calls += 1
        return AttemptOutcome(status="skipped", error_kind="model_not_found", error="no such model: x")


def test_an_agent_crash_costs_one_cell_and_is_recorded(tmp_path, toy_repo, cache_dir, monkeypatch):
    params, rows = make_params(tmp_path, toy_repo, models="  - {name: boom, kind: gold}\n")
    monkeypatch.setattr(runner, "build_agent", lambda model: Boom())
    summary = runner.generate(params, rows, progress=False)
    assert summary["by_status"] == {"error": 2, "ok": 4}
    cell = read_json(params.run_dir / "cells" / "boom" / "toy__toy-2" / "1.json")
    assert cell["error"].startswith("RuntimeError: agent bug") and "\n" not in cell["error"]


def test_a_model_that_is_gone_is_skipped_with_its_reason(tmp_path, toy_repo, cache_dir, monkeypatch):
    params, rows = make_params(tmp_path, toy_repo, extra="workers: 1\n",
                               models="  - {name: gone, kind: gold}\n")
    params = load_params(params.source_file, overrides={"workers": 1}, environ={})
    monkeypatch.setattr(runner, "build_agent", lambda model: Gone())
    summary = runner.generate(params, rows, progress=False)
    assert Gone.calls == runner.GONE_CONFIRMATIONS  # confirmed by a second attempt, then the rest skipped unasked
    assert summary["by_status"] == {"skipped": 6}
    assert "no such model" in summary["skipped_models"]["gone"]
    # skipped cells are retried on the next run: the model may be back
    assert runner.generate(params, rows, progress=False)["ran"] == 6


class OnceGone:
    """A model whose endpoint answers 404 once (a transient routing error), then works: in every mode."""

    def __init__(self, mode: str, status: str):
        self.mode, self.status, self.calls = mode, status, 0

    def run(self, instance, ctx):
        self.calls += 1
        if self.calls == 1:
            return AttemptOutcome(status=self.status, error_kind="model_not_found", error="404 (transient)")
        return GoldAgent().run(instance, ctx)


@pytest.mark.parametrize("mode,status", [("patch", "skipped"), ("shell", "provider_error"),
                                         ("mini-swe-agent", "provider_error")])
def test_one_transient_404_costs_one_cell_in_every_mode_and_is_retried(tmp_path, toy_repo, cache_dir,
                                                                       monkeypatch, mode, status):
    params, rows = make_params(tmp_path, toy_repo, models="  - {name: once, kind: gold}\n")
    params = load_params(params.source_file, overrides={"workers": 1}, environ={})
    agent = OnceGone(mode, status)
    monkeypatch.setattr(runner, "build_agent", lambda model: agent)
    summary = runner.generate(params, rows, progress=False)
    assert summary["by_status"] == {"ok": 5, "skipped": 1} and summary["skipped_models"] == {}
    assert runner.generate(params, rows, progress=False)["ran"] == 1  # the skipped one runs again


BLOCKING_RUN = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from swelab.generate import runner
    from swelab.generate.agents.builtin import GoldAgent
    from swelab.io import read_jsonl
    from swelab.params import load_params

    BLOCK_AT, MARKER = int(sys.argv[2]), Path(sys.argv[4])

    class BlockingGold(GoldAgent):
        # the BLOCK_AT-th attempt says so in MARKER, then waits until the process is killed
        started = 0

        def run(self, instance, ctx):
            BlockingGold.started += 1
            if BlockingGold.started == BLOCK_AT:
                MARKER.write_text("blocked")
                threading.Event().wait()
            return super().run(instance, ctx)

    runner.build_agent = lambda model: BlockingGold()
    params = load_params(sys.argv[1], environ={})
    rows = read_jsonl(sys.argv[3])
    print(runner.generate(params, rows, progress=False))
    """
)


def test_a_killed_run_resumes_without_losing_or_redoing_work(tmp_path, toy_repo, cache_dir):
    params, rows = make_params(tmp_path, toy_repo, models="  - {name: gold, kind: gold}\n")
    params = load_params(params.source_file, overrides={"workers": 1}, environ={})
    script = tmp_path / "blocking.py"
    script.write_text(BLOCKING_RUN)
    (tmp_path / "params" / "toy.yaml").write_text((tmp_path / "params" / "toy.yaml").read_text() + "workers: 1\n")
    args = [sys.executable, str(script), params.source_file]
    marker = tmp_path / "blocked"
    # one worker: cells run one after another, so when the third attempt blocks, exactly two are written
    proc = subprocess.Popen([*args, "3", str(tmp_path / "toy.jsonl"), str(marker)], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a bounded wait for the event, never a measure of speed
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the third attempt never started (exit code {proc.poll()})"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cells_dir = params.run_dir / "cells" / "gold"
    finished_before = {p: p.stat().st_mtime_ns for p in cells_dir.rglob("*.json")}
    assert len(finished_before) == 2
    out = subprocess.run([*args, "0", str(tmp_path / "toy.jsonl"), str(marker)], capture_output=True, text=True,
                         check=True)
    summary = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    assert summary["reused"] == 2 and summary["ran"] == 4
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime  # not redone
    for attempt in (1, 2):
        preds = read_jsonl(params.run_dir / "predictions" / f"gold__a{attempt}.jsonl")
        assert [p["model_patch"] for p in preds] == [r["patch"] for r in rows]


def test_manifest_records_what_was_run(tmp_path, toy_repo, cache_dir):
    params, rows = make_params(tmp_path, toy_repo)
    manifest = runner.write_manifest(params, rows)
    assert manifest["instance_ids"] == ["toy__toy-1", "toy__toy-2", "toy__toy-3"]
    assert len(manifest["dataset"]["fingerprint"]) == 64
    assert manifest["packages"]["swebench"].startswith("5.")
    assert manifest["seeds"]["selection_seed"] == 42
    assert json.loads((params.run_dir / "manifest.json").read_text())["run_id"] == params.run_id
    assert manifest["params"]["attempts"] == 2


@pytest.mark.parametrize("bad", ["nope__x-1"])
def test_unknown_pinned_instance_is_named(tmp_path, toy_repo, bad):
    from swelab.select.dataset import DatasetError
    from swelab.select.instances import resolve_instances

    params, _ = make_params(tmp_path, toy_repo, extra=f"instances: [{bad}]\n")
    with pytest.raises(DatasetError, match=bad):
        resolve_instances(params)


def test_imported_predictions_are_evaluated_beside_generated_ones(tmp_path, toy_repo, cache_dir):
    _, instance = toy_repo
    preds = tmp_path / "theirs.jsonl"
    write_jsonl(preds, [{"instance_id": f"toy__toy-{i}", "model_name_or_path": "theirs",
                         "model_patch": instance["patch"] if i == 1 else ""} for i in (1, 2, 3)])
    params, rows = make_params(
        tmp_path, toy_repo,
        models=f"  - {{name: gold, kind: gold}}\n  - {{name: theirs, kind: import, options: {{path: {preds}}}}}\n",
    )
    runner.generate(params, rows, progress=False)
    from swelab.select.instances import write_run_instances

    write_run_instances(params.run_dir, rows)
    graded = evaluate_run(params, workspace=Workspace(cache_dir, params.repo_sources), progress=False)
    summaries = {f"{s['model']}__a{s['attempt']}": s for s in graded}
    assert summaries["theirs__a1"]["resolved"] == 1
    assert read_json(params.run_dir / "cells" / "theirs" / "toy__toy-1" / "1.json")["mode"] == "import"


def test_old_schema_rows_without_a_recipe_are_refused_with_a_reason(tmp_path, toy_repo, cache_dir):
    params, rows = make_params(tmp_path, toy_repo, models="  - {name: gold, kind: gold}\n")
    old = [{k: v for k, v in row.items() if k not in ("eval_script", "image", "log_parser", "eval_type",
                                                        "env_recipe")} for row in rows]
    runner.generate(params, old, progress=False)
    from swelab.select.instances import write_run_instances

    write_run_instances(params.run_dir, old)
    summary = evaluate_run(params, workspace=Workspace(cache_dir, params.repo_sources), progress=False)[0]
    report = read_json(params.run_dir / "eval" / "gold__a1" / "report.json")
    assert summary["completed"] == 0
    assert "no local recipe for toy/toy" in report["unsupported"]["toy__toy-1"]


class Counting:
    mode = "patch"

    def __init__(self):
        self.active = 0
        self.most = 0
        self.lock = __import__("threading").Lock()

    def run(self, instance, ctx):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return AttemptOutcome(status="ok", model_patch="")


def test_a_model_subset_and_a_shared_concurrency_limit(tmp_path, toy_repo, cache_dir, monkeypatch):
    models = (
        "  - {name: a, kind: patch, provider: local, model_id: m, base_url: 'http://x/v1',"
        " instances: [toy__toy-2], options: {max_concurrency: 1}}\n"
        "  - {name: b, kind: shell, provider: local, model_id: m, base_url: 'http://x/v1',"
        " options: {max_concurrency: 1}}\n"
    )
    params, rows = make_params(tmp_path, toy_repo, models=models)
    agent = Counting()
    monkeypatch.setattr(runner, "build_agent", lambda model: agent)
    summary = runner.generate(params, rows, progress=False)
    assert summary["planned"] == 2 * 1 + 2 * 3  # a: one instance x K=2, b: three x 2
    assert agent.most == 1  # a and b reach one server: never two requests at once
    assert [p["instance_id"] for p in read_jsonl(params.run_dir / "predictions" / "a__a1.jsonl")] == ["toy__toy-2"]


def test_an_instance_that_passes_unpatched_is_flagged_non_discriminating(tmp_path, toy_repo, cache_dir):
    from swelab.analyze.report import render_report
    from swelab.select.instances import write_run_instances

    params, rows = make_params(tmp_path, toy_repo)
    # toy__toy-3 claims test_double as its FAIL_TO_PASS: it already passes at the base commit.
    rows[2] = dict(rows[2], FAIL_TO_PASS=json.dumps(["tests/test_core.py::test_double"]), PASS_TO_PASS="[]")
    write_run_instances(params.run_dir, rows)
    runner.generate(params, rows, progress=False)
    evaluate_run(params, workspace=Workspace(cache_dir, params.repo_sources), progress=False)
    flags = read_json(params.run_dir / "eval" / "discrimination.json")
    assert flags["toy__toy-3"]["non_discriminating"] is True
    assert flags["toy__toy-1"]["non_discriminating"] is False
    assert flags["toy__toy-1"]["fail_to_pass_passing_unpatched"] == []
    html = render_report(params.run_dir).read_text()
    assert "Non-discriminating instances" in html and "toy__toy-3" in html


def test_the_run_instance_set_is_written_once_and_then_read(tmp_path, toy_repo):
    from swelab.select.instances import ensure_run_instances, write_run_instances

    params, rows = make_params(tmp_path, toy_repo)
    assert [r["instance_id"] for r in ensure_run_instances(params)] == ["toy__toy-1", "toy__toy-2", "toy__toy-3"]
    write_run_instances(params.run_dir, rows[:1])  # what 01_select wrote wins over the params' set
    assert [r["instance_id"] for r in ensure_run_instances(params)] == ["toy__toy-1"]


def test_rows_with_grading_fields_but_no_buildable_environment_are_refused_too(tmp_path, toy_repo, cache_dir):
    params, rows = make_params(tmp_path, toy_repo, models="  - {name: gold, kind: gold}\n")
    unbuildable = [{k: v for k, v in row.items() if k != "env_recipe"} for row in rows]  # 5.x fields kept
    runner.generate(params, unbuildable, progress=False)
    from swelab.select.instances import write_run_instances

    write_run_instances(params.run_dir, unbuildable)
    evaluate_run(params, workspace=Workspace(cache_dir, params.repo_sources), progress=False)
    report = read_json(params.run_dir / "eval" / "gold__a1" / "report.json")
    assert set(report["unsupported"]) == {"toy__toy-1", "toy__toy-2", "toy__toy-3"}
