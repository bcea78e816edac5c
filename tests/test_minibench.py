"""The bundled minibench: stable SHAs, sound rows, and every task graded by swebench's own functions."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from swebench.harness.grading import get_eval_report
from swebench.harness.utils import make_test_spec
from unidiff import PatchSet

from swelab import minibench
from swelab.minibench.generate import base_row, load_sources, make_eval_script, run_eval_script

TASKS = minibench.load_tasks()
SCHEMA_FIELDS = (
    "instance_id", "repo", "base_commit", "patch", "test_patch", "problem_statement", "hints_text",
    "created_at", "version", "environment_setup_commit", "FAIL_TO_PASS", "PASS_TO_PASS",
    "image", "log_parser", "eval_type", "eval_script",
)  # fmt: skip


def _head(path: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
    ).stdout.strip()


def _shape(patch: str) -> tuple[int, int]:
    """(files, hunks) of a unified diff."""
    patched = PatchSet(patch)
    return len(patched), sum(len(f) for f in patched)


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, Path]:
    """Each bundled repo built once for the whole module, through the public cache entry point."""
    cache = tmp_path_factory.mktemp("cache")
    return {name: minibench.repo_source(f"minibench/{name}", cache) for name in minibench.repo_names()}


def test_at_least_eight_tasks_over_every_repo():
    assert len(TASKS) >= 8
    assert {row["repo"] for row in TASKS} == {f"minibench/{name}" for name in minibench.repo_names()}
    assert len({row["instance_id"] for row in TASKS}) == len(TASKS)


def test_difficulty_mix():
    shapes = {row["instance_id"]: _shape(row["patch"]) for row in TASKS}
    single = [iid for iid, (files, hunks) in shapes.items() if files == 1 and hunks == 1]
    multi = [iid for iid, (files, hunks) in shapes.items() if files > 1 or hunks > 1]
    assert len(single) >= 4, shapes
    assert len(multi) >= 2, shapes
    assert any(files > 1 for files, _ in shapes.values()), shapes
    # Cross-module: the fix needs at least two source modules read, all of which exist in the repo.
    by_id = {source.instance_id: source for source in load_sources()}
    cross = [iid for iid, source in by_id.items() if len(source.meta.get("read", [])) >= 2]
    assert cross, "no task needs reading two modules"
    for iid in cross:
        root = minibench.REPOS_DIR / by_id[iid].repo_name
        assert all((root / path).is_file() for path in by_id[iid].meta["read"]), iid


@pytest.mark.parametrize("row", TASKS, ids=[row["instance_id"] for row in TASKS])
def test_row_schema(row):
    assert set(SCHEMA_FIELDS) <= set(row)
    assert row["environment_setup_commit"] == row["base_commit"]
    assert row["base_commit"] == minibench.expected_commit(row["repo"].split("/", 1)[1])
    assert row["hints_text"] == ""
    assert row["log_parser"] == "parse_log_pytest" and row["eval_type"] == "pass_and_fail"
    f2p, p2p = json.loads(row["FAIL_TO_PASS"]), json.loads(row["PASS_TO_PASS"])
    assert f2p and not set(f2p) & set(p2p)
    touched = {f.path for f in PatchSet(row["test_patch"])}
    for test in f2p + p2p:
        assert test.split("::")[0] in touched, test
    assert all(not f.path.startswith("tests/") for f in PatchSet(row["patch"]))
    spec = make_test_spec(row)
    assert spec.FAIL_TO_PASS == f2p and spec.PASS_TO_PASS == p2p
    assert ">>>>> Test Exit Code" in spec.eval_script  # the 5.x exit-code marker went in


@pytest.mark.parametrize("row", TASKS, ids=[row["instance_id"] for row in TASKS])
def test_eval_script_shape(row):
    lines = row["eval_script"].splitlines()
    existing = [f.path for f in PatchSet(row["test_patch"]) if not f.is_added_file]
    reset = f"git checkout {row['base_commit']} {' '.join(existing)}"
    assert lines[:4] == ["#!/bin/bash", "set -uxo pipefail", reset, "git apply -v - <<'EOF_114329324912'"]
    assert lines[-4:-1] == [
        ": '>>>>> Start Test Output'",
        "python -m pytest -rA -p no:cacheprovider " + " ".join(f.path for f in PatchSet(row["test_patch"])),
        ": '>>>>> End Test Output'",
    ]
    assert lines[-1] == reset
    assert row["eval_script"] == make_eval_script(row["base_commit"], row["test_patch"])


def test_rows_match_the_readable_sources():
    """tasks.json is generated from tasks/<id>/: a stale file is caught without running anything."""
    sources = {source.instance_id: source for source in load_sources()}
    assert sorted(sources) == sorted(row["instance_id"] for row in TASKS)
    for row in TASKS:
        expected = base_row(sources[row["instance_id"]], row["base_commit"])
        for field in SCHEMA_FIELDS:
            if field not in ("FAIL_TO_PASS", "PASS_TO_PASS"):
                assert row[field] == expected[field], (row["instance_id"], field)


@pytest.mark.parametrize("row", TASKS, ids=[row["instance_id"] for row in TASKS])
def test_problem_statement_does_not_leak_the_fix(row):
    statement = row["problem_statement"]
    assert "diff --git" not in statement and "@@ " not in statement
    added = [
        line.value.strip()
        for patched in PatchSet(row["patch"])
        for hunk in patched
        for line in hunk
        if line.is_added and len(line.value.strip()) >= 12
    ]
    assert not [line for line in added if line in statement]
    assert len(statement.splitlines()) >= 5  # symptom, reproducer, expected vs actual


def test_build_is_deterministic_and_idempotent(tmp_path, repos):
    commits = {row["repo"].split("/", 1)[1]: row["base_commit"] for row in TASKS}
    for name in minibench.repo_names():
        first = minibench.build_repo(name, tmp_path / "one" / name)
        second = minibench.build_repo(name, tmp_path / "two" / name)
        assert _head(first) == _head(second) == _head(repos[name]) == commits[name]
        marker = first / ".git" / "index"
        before = marker.stat().st_mtime_ns
        assert minibench.build_repo(name, first) == first  # already built: returned untouched
        assert marker.stat().st_mtime_ns == before
        files = subprocess.run(["git", "ls-files", "-s"], cwd=first, capture_output=True, text=True).stdout
        assert "__pycache__" not in files and ".pyc" not in files
        assert {line.split()[0] for line in files.splitlines()} == {"100644"}


def test_stale_build_is_replaced_but_foreign_dirs_are_refused(tmp_path):
    name = minibench.repo_names()[0]
    dest = minibench.build_repo(name, tmp_path / name)
    subprocess.run(
        ["git", "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "--allow-empty", "-m", "local"],
        cwd=dest, check=True,
    )  # fmt: skip
    assert _head(dest) != minibench.expected_commit(name)
    assert _head(minibench.build_repo(name, dest)) == minibench.expected_commit(name)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(minibench.MinibenchError, match="refusing"):
        minibench.build_repo(name, foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_repo_source_is_safe_for_concurrent_callers(tmp_path):
    name = minibench.repo_names()[-1]
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(minibench.repo_source(f"minibench/{name}", tmp_path))
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1 and _head(results[0]) == minibench.expected_commit(name)
    assert not [p for p in (tmp_path / "minibench").iterdir() if p.name.endswith(".tmp")]


def test_repo_source_rejects_unknown_repo(tmp_path):
    with pytest.raises(minibench.MinibenchError, match="nope"):
        minibench.repo_source("minibench/nope", tmp_path)
    with pytest.raises(minibench.MinibenchError, match="not a minibench repo"):
        minibench.repo_source("psf/requests", tmp_path)


def test_load_tasks_returns_fresh_rows():
    first = minibench.load_tasks()
    first[0]["patch"] = "changed"
    assert minibench.load_tasks()[0]["patch"] != "changed"


def test_shipped_source_tree_is_clean():
    litter = [
        str(path)
        for path in minibench.REPOS_DIR.rglob("*")
        if path.name in {".git", "__pycache__", ".pytest_cache"} or path.suffix == ".pyc"
    ]
    # package-data ships repos/** verbatim; remove litter with: find lib/swelab/minibench/repos -name __pycache__
    assert not litter, f"build/cache litter in the shipped repos: {litter}"
    for name in minibench.repo_names():
        root = minibench.REPOS_DIR / name
        assert (root / "tests").is_dir() and (root / name / "__init__.py").is_file()
        assert not (root / "tests" / "__init__.py").exists()


def _grade(row: dict, repo: Path, tmp_path: Path, model_patch: str) -> dict:
    spec = make_test_spec(row)
    log = run_eval_script(repo, row, model_patch or None)
    log_path = tmp_path / f"{row['instance_id']}-{'gold' if model_patch else 'empty'}.log"
    log_path.write_text(log)
    prediction = {"instance_id": row["instance_id"], "model_name_or_path": "test", "model_patch": model_patch}
    return get_eval_report(spec, prediction, str(log_path), include_tests_status=True)[row["instance_id"]]


@pytest.mark.parametrize("row", TASKS, ids=[row["instance_id"] for row in TASKS])
def test_gold_patch_resolves_and_empty_patch_does_not(row, repos, tmp_path):
    repo = repos[row["repo"].split("/", 1)[1]]
    f2p, p2p = json.loads(row["FAIL_TO_PASS"]), json.loads(row["PASS_TO_PASS"])

    empty = _grade(row, repo, tmp_path, "")
    assert empty["patch_successfully_applied"] and not empty["resolved"]
    assert sorted(empty["tests_status"]["FAIL_TO_PASS"]["failure"]) == sorted(f2p)
    assert sorted(empty["tests_status"]["PASS_TO_PASS"]["success"]) == sorted(p2p)

    gold = _grade(row, repo, tmp_path, row["patch"])
    assert gold["resolved"], gold
    assert sorted(gold["tests_status"]["FAIL_TO_PASS"]["success"]) == sorted(f2p)
    assert not gold["tests_status"]["PASS_TO_PASS"]["failure"]
