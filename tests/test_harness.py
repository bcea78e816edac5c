"""swelab.evaluate.harness: the official harness's command lines (checked against its own argparse), its traps,
Docker/Modal detection, and report parsing on reports written by swebench's own make_run_report."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser
from pathlib import Path

import pytest
from swebench.harness.grading import get_eval_report
from swebench.harness.reporting import make_run_report
from swebench.harness.utils import make_test_spec, str2bool

from swelab import io
from swelab.evaluate import harness
from swelab.evaluate.harness import HarnessError
from swelab.workspace import recipes

FIXTURES = Path(__file__).parent / "fixtures"


def harness_parse(argv: list[str], monkeypatch) -> dict:
    """Parse argv with the installed run_evaluation's own __main__ parser (its main() replaced)."""
    source = Path(importlib.util.find_spec(harness.EVAL_MODULE).origin).read_text()
    block = textwrap.dedent(source[source.index('if __name__ == "__main__":') :].split("\n", 1)[1])
    captured: dict = {}
    namespace = {
        "ArgumentParser": ArgumentParser,
        "ArgumentDefaultsHelpFormatter": ArgumentDefaultsHelpFormatter,
        "str2bool": str2bool,
        "main": lambda **kwargs: captured.update(kwargs),
    }
    monkeypatch.setattr(sys, "argv", ["run_evaluation", *argv])
    exec(compile(block, "run_evaluation.__main__", "exec"), namespace)
    return captured


def write_predictions(path: Path, patches: dict[str, str], model: str = "org/model") -> Path:
    rows = [{"instance_id": iid, "model_name_or_path": model, "model_patch": p} for iid, p in patches.items()]
    return io.write_jsonl(path, rows)


def test_docker_command_line_is_what_the_harness_parses(tmp_path, monkeypatch):
    preds = write_predictions(tmp_path / "m__a1.jsonl", {"psf__requests-2317": "diff --git a/x b/x\n"})
    monkeypatch.setenv("EVAL_WORKERS", "3")
    argv = harness.harness_command(
        "SWE-bench/SWE-bench_Lite",
        preds,
        "run-1.m__a1",
        instance_ids=["psf__requests-2317"],
        timeout_s=900,
        report_dir=tmp_path / "reports",
        cache_level="env",
    )
    assert argv[:3] == [sys.executable, "-m", "swebench.harness.run_evaluation"]
    parsed = harness_parse(argv[3:], monkeypatch)
    assert parsed["dataset_name"] == "SWE-bench/SWE-bench_Lite" and parsed["split"] == "test"
    assert parsed["predictions_path"] == str(preds) and parsed["run_id"] == "run-1.m__a1"
    assert parsed["instance_ids"] == ["psf__requests-2317"]
    assert parsed["max_workers"] == 3 and parsed["timeout"] == 900 and parsed["modal"] is False
    assert parsed["report_dir"] == str(tmp_path / "reports")
    # 5.0.2 has no --cache_level: it is dropped, not passed to a parser that would reject it
    assert "cache_level" not in harness.harness_flags() and "--cache_level" not in argv


def test_eval_workers_default_and_override(monkeypatch):
    monkeypatch.delenv("EVAL_WORKERS", raising=False)
    assert harness.eval_workers() == 4
    assert harness.eval_workers(environ={"EVAL_WORKERS": "7"}) == 7
    assert harness.eval_workers(params=type("P", (), {"eval_workers": 2})()) == 2
    with pytest.raises(HarnessError, match="EVAL_WORKERS"):
        harness.eval_workers(environ={"EVAL_WORKERS": "many"})


def test_modal_is_refused_up_front_on_5x_test_specs(tmp_path):
    ok, reason = harness.modal_supported()
    assert not ok and "setup_env_script" in reason and "5.x" in reason
    preds = write_predictions(tmp_path / "m__a1.jsonl", {"psf__requests-2317": "diff"})
    with pytest.raises(HarnessError, match="setup_env_script"):
        harness.harness_command("SWE-bench/SWE-bench_Lite", preds, "r", modal=True)
    with pytest.raises(HarnessError, match="setup_env_script"):
        harness.check_backend("modal")


def test_modal_command_line_when_modal_would_work(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "modal_supported", lambda: (True, "modal ready"))
    preds = write_predictions(tmp_path / "m__a1.jsonl", {"psf__requests-2317": "diff"})
    argv = harness.harness_command("SWE-bench/SWE-bench_Lite", preds, "r", max_workers=2, modal=True)
    parsed = harness_parse(argv[3:], monkeypatch)
    assert parsed["modal"] is True and parsed["max_workers"] == 2


def test_zero_line_and_empty_patch_traps(tmp_path):
    empty = tmp_path / "empty__a1.jsonl"
    empty.write_text("")
    with pytest.raises(HarnessError, match="0 predictions"):
        harness.harness_command("lite", empty, "r")
    none = write_predictions(tmp_path / "none__a1.jsonl", {"a__b-1": "", "a__b-2": "  \n"})
    with pytest.raises(HarnessError, match="every model_patch is empty.*local backend"):
        harness.harness_command("lite", none, "r")
    mixed = write_predictions(tmp_path / "mixed__a1.jsonl", {"a__b-1": "", "a__b-2": "diff --git a/x b/x\n"})
    patched, empty_ids = harness.split_predictions(mixed, tmp_path / "harness")
    assert empty_ids == ["a__b-1"]
    assert [row["instance_id"] for row in io.read_jsonl(patched)] == ["a__b-2"]
    assert harness.split_predictions(none, tmp_path / "harness2") == (None, ["a__b-1", "a__b-2"])
    dup = tmp_path / "dup__a1.jsonl"
    dup.write_text(mixed.read_text().splitlines()[0] + "\n" + mixed.read_text().splitlines()[0] + "\n")
    with pytest.raises(HarnessError, match="dup__a1.jsonl:2: instance a__b-1 predicted twice"):
        harness.check_predictions(dup)


def test_docker_absent_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    ok, reason = harness.docker_available(timeout_s=1)
    assert not ok and "\n" not in reason and reason.startswith("no Docker engine")
    monkeypatch.delenv("DOCKER_HOST")
    if not Path("/var/run/docker.sock").exists():
        assert harness.docker_available() == (
            False,
            "no Docker engine (no /var/run/docker.sock and DOCKER_HOST is unset)",
        )


def test_harness_run_ids_are_per_predictions_file_and_container_safe():
    assert harness.harness_run_id("i1-abc", "org__m:7b__a1") == "i1-abc.org__m_7b__a1"
    assert harness.harness_run_id("i1-abc", "m__a1") != harness.harness_run_id("i1-abc", "m__a2")
    assert harness.report_file_name("org/model", "i1.m__a1") == "org__model.i1.m__a1.json"


def _real_harness_run(tmp_path: Path, monkeypatch) -> tuple[Path, str, list[dict]]:
    """Logs and a run report written by swebench's own code (get_eval_report, make_run_report)."""
    rows = [json.loads(line) for line in (FIXTURES / "swebench_lite_sample.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["repo"] in ("psf/requests", "pallets/flask")]
    harness_id = "i1-0000.org__model__a1"
    workdir = tmp_path / "work"
    monkeypatch.chdir(workdir) if workdir.exists() else (workdir.mkdir(), monkeypatch.chdir(workdir))
    predictions = {}
    for number, row in enumerate(rows):
        iid = row["instance_id"]
        patch = "" if number == 0 else row["patch"]
        predictions[iid] = {"instance_id": iid, "model_name_or_path": "org/model", "model_patch": patch}
        if not patch:
            continue
        f2p, p2p = json.loads(row["FAIL_TO_PASS"]), json.loads(row["PASS_TO_PASS"])
        passing = f2p + p2p if number == 1 else p2p  # the first patched instance resolves, the rest do not
        failing = [] if number == 1 else f2p
        log_dir = harness.instance_log_dir(workdir, harness_id, "org/model", iid)
        log_dir.mkdir(parents=True)
        log = "\n".join(
            [
                ">>>>> Start Test Output",
                *[f"PASSED {t}" for t in passing],
                *[f"FAILED {t}" for t in failing],
                ">>>>> End Test Output",
            ]
        )
        (log_dir / "test_output.txt").write_text(log)
        (log_dir / "run_instance.log").write_text("Container started\n")
        spec = make_test_spec(recipes.with_grading_fields(row, target="docker"))
        report = get_eval_report(spec, predictions[iid], str(log_dir / "test_output.txt"), include_tests_status=True)
        (log_dir / "report.json").write_text(json.dumps(report, indent=4))
    make_run_report(predictions, rows, harness_id, client=None, report_dir=str(workdir))
    return workdir, harness_id, rows


def test_reports_in_the_harness_format_are_parsed_and_collected(tmp_path, monkeypatch):
    workdir, harness_id, rows = _real_harness_run(tmp_path, monkeypatch)
    eval_dir = tmp_path / "outputs" / "i1-0000" / "eval" / "org__model__a1"
    collected = harness.collect_outputs(workdir, harness_id, "org/model", eval_dir)
    ids = [row["instance_id"] for row in rows]
    assert collected.report["resolved_ids"] == [ids[1]]
    assert collected.report["empty_patch_ids"] == [ids[0]]
    assert sorted(collected.report["unresolved_ids"]) == sorted(ids[2:])
    assert set(collected.instances) == set(ids[1:])
    assert collected.instances[ids[1]]["resolved"] and not collected.instances[ids[2]]["resolved"]
    assert io.read_json(eval_dir / "report.json") == collected.report
    assert (eval_dir / ids[1] / "test_output.txt").read_text().startswith(">>>>> Start Test Output")
    assert not (eval_dir / ids[0]).exists()  # the empty patch was never tested by the harness


def test_committed_report_fixture_parses_and_broken_reports_are_named(tmp_path):
    report = harness.parse_run_report(FIXTURES / "harness_report.json")
    assert report["schema_version"] == 2 and report["resolved_instances"] == len(report["resolved_ids"])
    broken = dict(report)
    del broken["resolved_ids"]
    (tmp_path / "r.json").write_text(json.dumps(broken))
    with pytest.raises(HarnessError, match=r"r.json: not a swebench run report \(lacks resolved_ids\)"):
        harness.parse_run_report(tmp_path / "r.json")
    (tmp_path / "r.json").write_text(json.dumps(dict(report, resolved_instances=99)))
    with pytest.raises(HarnessError, match="resolved_instances disagrees"):
        harness.parse_run_report(tmp_path / "r.json")


def test_official_backends_refuse_without_an_engine(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "docker_available", lambda: (False, "no Docker engine (test)"))
    with pytest.raises(HarnessError, match=r"^no Docker engine \(test\)$"):
        harness.check_backend("docker")
    with pytest.raises(HarnessError, match="docker or modal"):
        harness.check_backend("local")


def test_old_schema_rows_become_a_harness_dataset(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "swebench_lite_sample.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["repo"] == "psf/requests"]
    path = harness.harness_dataset(tmp_path, rows)
    written = io.read_jsonl(path)
    assert [r["instance_id"] for r in written] == [r["instance_id"] for r in rows]
    assert all("cd /testbed" in r["eval_script"] and r["image"].startswith("swebench/") for r in written)
    assert os.path.basename(path) == "dataset.jsonl"
