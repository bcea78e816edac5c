"""A model patch is judged by grading's rules before its cell counts as ok, and a huge one is refused and stored
once (issue 11, item 4).

- the size cap (`options.max_patch_bytes`, default 4 MiB): over it, the cell is `malformed` with "patch of N bytes
  exceeds the cap of M bytes", the cell and the predictions hold "" and the patch is kept once (shell mode: the
  attempt folder's refused_patch.diff; patch mode: the reply in the trajectory);
- patch mode (`prepare_patch`) and shell mode (`validate_patch`) accept exactly the patches grading applies
  (`workspace.patches.apply_model_patch`), a symlink-writing diff that `patch --dry-run` lets through included.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, ok
from scaffold import write_params

from swelab.generate import runner
from swelab.generate.agents.diff_extract import prepare_patch
from swelab.generate.agents.tools import extract_patch, paths_of_test_patch, validate_patch
from swelab.generate.agents.trajectory import REFUSED_PATCH
from swelab.io import read_json, read_jsonl, write_jsonl
from swelab.options import ModelOptions
from swelab.params import load_params
from swelab.sandbox import bwrap_available
from swelab.workspace.patches import DEFAULT_MAX_PATCH_BYTES, apply_model_patch

SUBMIT = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
CAP = 4096
TOO_BIG = re.compile(r"^patch of (\d+) bytes exceeds the cap of 4096 bytes$")


def _new_file(path: str, text: str, mode: str = "100644") -> str:
    lines = text.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    tail = "\\ No newline at end of file\n" if not text.endswith("\n") else ""
    return (f"diff --git a/{path} b/{path}\nnew file mode {mode}\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n{body}{tail}")


def _run(tmp_path: Path, toy_repo, kind: str, turns: list[dict], **options: object) -> Path:
    """One attempt of `kind` through the runner, the model answering with `turns`: the run folder."""
    repo, instance = toy_repo
    write_jsonl(tmp_path / "toy.jsonl", [instance])
    lock, count = threading.Lock(), [0]

    def responder(_request: dict) -> dict:
        with lock:
            count[0] += 1
            return turns[min(count[0], len(turns)) - 1]

    extra = "".join(f", {name}: {json.dumps(value)}" for name, value in options.items())
    with FakeOpenAIServer(responder=responder) as server:
        path = write_params(
            tmp_path,
            f"name: cap\ndataset: {tmp_path / 'toy.jsonl'}\nattempts: 1\nworkers: 1\nattempt_timeout_s: 300\n"
            f"repo_sources: {{toy/toy: {repo}}}\nmodels:\n  - {{name: m, kind: {kind}, provider: vllm,"
            f" model_id: m, base_url: '{server.base_url}', options: {{max_retries: 0{extra}}}}}\n",
        )
        params = load_params(path, environ={})
        runner.generate(params, [instance], progress=False)
    return params.run_dir


def _files_holding(run_dir: Path, text: str) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()
                  and text.encode() in p.read_bytes())


def test_the_default_cap_is_4_mib_and_a_params_file_can_set_it():
    assert ModelOptions().max_patch_bytes == DEFAULT_MAX_PATCH_BYTES == 4 * 1024 * 1024


def test_an_oversized_patch_mode_reply_is_malformed_and_stored_once(tmp_path, toy_repo, cache_dir):
    big = "\n".join(f"ROW_{i} = {i}" for i in range(600)) + "\n"  # about 7 kB of diff
    reply = ok(f"```diff\n{_new_file('toy/table.py', big)}```")
    run_dir = _run(tmp_path, toy_repo, "patch", [reply], max_patch_bytes=CAP)
    cell = read_json(run_dir / "cells" / "m" / "toy__toy-1" / "1.json")
    assert cell["status"] == "malformed" and TOO_BIG.match(cell["error"]), cell["error"]
    assert int(TOO_BIG.match(cell["error"]).group(1)) > CAP
    assert cell["model_patch"] == ""
    assert [p["model_patch"] for p in read_jsonl(run_dir / "predictions" / "m__a1.jsonl")] == [""]
    assert _files_holding(run_dir, "ROW_599 = 599") == ["cells/m/toy__toy-1/1/trajectory.jsonl"]  # the reply


def test_a_patch_mode_reply_under_the_cap_is_kept(tmp_path, toy_repo, cache_dir):
    _, instance = toy_repo
    run_dir = _run(tmp_path, toy_repo, "patch", [ok(f"```diff\n{instance['patch']}```")], max_patch_bytes=CAP)
    cell = read_json(run_dir / "cells" / "m" / "toy__toy-1" / "1.json")
    assert cell["status"] == "ok" and "+        return high" in cell["model_patch"]


@pytest.mark.skipif(not bwrap_available(), reason="bwrap unusable here: run tests/ensure_bwrap.sh")
def test_an_oversized_shell_patch_is_malformed_and_kept_once_aside(tmp_path, toy_repo, cache_dir):
    # the file's lines are made by the command, so its text is in no trajectory row, only in the patch
    write_big = "for i in $(seq 1 600); do echo \"ROW_$i = $i\"; done > toy/table.py"
    turns = [ok(f"```bash\n{write_big}\n```"), ok(f"```bash\necho {SUBMIT}\n```")]
    run_dir = _run(tmp_path, toy_repo, "shell", turns, max_patch_bytes=CAP, tool_calling=False,
                   use_environment=False)
    cell = read_json(run_dir / "cells" / "m" / "toy__toy-1" / "1.json")
    assert cell["status"] == "malformed" and TOO_BIG.match(cell["error"]), cell["error"]
    assert cell["model_patch"] == ""
    assert [p["model_patch"] for p in read_jsonl(run_dir / "predictions" / "m__a1.jsonl")] == [""]
    assert _files_holding(run_dir, "ROW_599 = 599") == [f"cells/m/toy__toy-1/1/{REFUSED_PATCH}"]
    kept = (run_dir / "cells" / "m" / "toy__toy-1" / "1" / REFUSED_PATCH).read_text()
    assert len(kept.encode()) == int(TOO_BIG.match(cell["error"]).group(1))
    end = read_jsonl(run_dir / "cells" / "m" / "toy__toy-1" / "1" / "trajectory.jsonl")[-1]
    assert (end["event"], end["status"], end["patch_bytes"]) == ("end", "malformed", 0)


# -- generation accepts exactly what grading applies ---------------------------------------------------------
OUTSIDE = "/nonexistent-swelab-outside"  # where the link points: nothing can be written there, whatever happens
SYMLINK_THEN_WRITE = (  # a link out of the repository, then a file written through it
    _new_file("toy/out", OUTSIDE, mode="120000") + _new_file("toy/out/planted.py", "print('planted')\n"))
PYTEST_PLUGIN_CFG = _new_file("setup.cfg", "[tool:pytest]\naddopts = -p toy.core\n")


def _cases(instance: dict) -> dict[str, tuple[str, str]]:
    """name -> (patch, what grading does with it: applies | refuses (our rules) | fails (no fallback applies it))."""
    gold = instance["patch"]
    return {
        "the gold patch": (gold, "applies"),
        "a symlink, then a file written through it": (SYMLINK_THEN_WRITE, "fails"),
        "a new conftest.py": (_new_file("conftest.py", "import toy\n"), "refuses"),
        "a scratch test file": (_new_file("toy/test_scratch.py", "def test_x():\n    pass\n"), "refuses"),
        "the task's test file": (instance["test_patch"], "refuses"),
        "pytest addopts in setup.cfg": (PYTEST_PLUGIN_CFG, "refuses"),
        "a setup.cfg without pytest settings": (_new_file("setup.cfg", "[metadata]\nname = toy\n"), "applies"),
        "context that is not there": (gold.replace("-        return value", "-        return nothing"), "fails"),
    }


@contextmanager
def _checkout(repo: Path, base: str, tmp_path: Path, name: str):
    path = tmp_path / name
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(path), base], cwd=repo, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=repo, check=True)


def test_patch_dry_run_alone_accepts_the_symlink_diff_that_grading_refuses(toy_repo, tmp_path):
    repo, instance = toy_repo
    with _checkout(repo, instance["base_commit"], tmp_path, "dry") as tree:
        dry = subprocess.run(["patch", "--batch", "--forward", "--fuzz=5", "-p1", "--dry-run"], cwd=tree,
                             input=SYMLINK_THEN_WRITE, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stdout  # why a dry run is not enough
        log, applied = apply_model_patch(tree, instance, SYMLINK_THEN_WRITE)
    assert not applied, log


@pytest.mark.parametrize("name", list(_cases({"patch": "", "test_patch": ""})))
def test_generation_accepts_exactly_what_grading_applies(name, toy_repo, tmp_path):
    repo, instance = toy_repo
    patch, outcome = _cases(instance)[name]
    graded = outcome == "applies"
    base = instance["base_commit"]
    with _checkout(repo, base, tmp_path, "grading") as tree:
        log, applied = apply_model_patch(tree, instance, patch)
    assert applied is graded, log
    with _checkout(repo, base, tmp_path, "patch-mode") as tree:
        extracted = prepare_patch(f"```diff\n{patch}```", tree, row=instance)
        assert subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=tree, capture_output=True,
                              text=True, check=True).stdout == ""  # tried, then undone
    assert extracted.ok is graded, extracted.reason
    reason = validate_patch(repo, base, patch, instance)  # shell mode: in a scratch checkout of base
    assert (reason is None) is graded, reason
    if outcome == "refuses":
        assert log.startswith("refused: ") or "\nrefused: " in log, log
        assert reason.startswith("refused: ") and extracted.reason.startswith("refused: "), (reason, extracted)
    elif outcome == "fails":
        assert "does not apply" in reason and extracted.reason.startswith("does not apply"), (reason, extracted)


def test_a_shell_patch_leaves_out_the_files_grading_refuses(toy_repo):
    repo, instance = toy_repo
    core = repo / "toy" / "core.py"
    core.write_text(core.read_text().replace("if value > high:\n        return value",
                                             "if value > high:\n        return high"))
    (repo / "test_repro.py").write_text("from toy.core import clamp\nassert clamp(9, 0, 5) == 5\n")
    (repo / "conftest.py").write_text("collect_ignore = ['test_repro.py']\n")
    patch = extract_patch(repo, instance["base_commit"], paths_of_test_patch(instance["test_patch"]))
    assert "+        return high" in patch
    assert "test_repro.py" not in patch and "conftest.py" not in patch
    assert validate_patch(repo, instance["base_commit"], patch, instance) is None
