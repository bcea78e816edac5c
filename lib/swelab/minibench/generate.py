"""(Re)generate `tasks.json` from the readable task folders, by running the tests.

Each task lives in `tasks/<instance_id>/` with four files:

- `fix.diff`   the gold patch (source files only), a `git diff` against the repo's base commit
- `tests.diff` the test patch (files under `tests/` only), also against the base commit
- `issue.md`   the problem statement, written like a GitHub issue: symptom, reproducer, expected vs actual
- `meta.json`  `created_at` (ISO date), `difficulty`, `bug_kind`, `read` (source files needed to fix it)

`instance_id` is `minibench__<repo>-<n>`. FAIL_TO_PASS and PASS_TO_PASS are not written by hand: the row's
own eval script runs at the base commit without and with the gold patch, and swebench's pytest log parser
reads the results. Usage: `python -m swelab.minibench.generate [--check]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from unidiff import PatchSet

from swelab.io import atomic_write_text
from swelab.minibench.build import (
    TASKS_DIR,
    TASKS_FILE,
    MinibenchError,
    build_repo,
    expected_commit,
    repo_names,
)

VERSION = "0.1"
HEREDOC = "EOF_114329324912"  # the delimiter the official harness uses for the test patch
TEST_CMD = "python -m pytest -rA -p no:cacheprovider"
_ID = re.compile(r"minibench__(?P<repo>[a-z0-9_]+)-(?P<number>\d+)")
SOURCE_FILES = ("fix.diff", "tests.diff", "issue.md", "meta.json")


@dataclass(frozen=True)
class TaskSource:
    instance_id: str
    repo_name: str
    number: int
    patch: str
    test_patch: str
    problem_statement: str
    meta: dict

    @property
    def repo(self) -> str:
        return f"minibench/{self.repo_name}"


def load_sources(tasks_dir: Path = TASKS_DIR) -> list[TaskSource]:
    """Every task folder, checked for shape, in (repo, number) order."""
    sources = []
    for folder in sorted(p for p in tasks_dir.iterdir() if p.is_dir()):
        match = _ID.fullmatch(folder.name)
        if match is None:
            raise MinibenchError(f"{folder}: folder name must look like minibench__<repo>-<n>")
        if match["repo"] not in repo_names():
            raise MinibenchError(f"{folder}: no bundled repo named {match['repo']!r}")
        missing = [name for name in SOURCE_FILES if not (folder / name).is_file()]
        if missing:
            raise MinibenchError(f"{folder}: missing {', '.join(missing)}")
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta.get("created_at"), str):
            raise MinibenchError(f"{folder / 'meta.json'}: field 'created_at' must be an ISO date string")
        source = TaskSource(
            instance_id=folder.name,
            repo_name=match["repo"],
            number=int(match["number"]),
            patch=(folder / "fix.diff").read_text(encoding="utf-8"),
            test_patch=(folder / "tests.diff").read_text(encoding="utf-8"),
            problem_statement=(folder / "issue.md").read_text(encoding="utf-8").strip() + "\n",
            meta=meta,
        )
        _check_split(source)
        sources.append(source)
    return sorted(sources, key=lambda s: (s.repo_name, s.number))


def _check_split(source: TaskSource) -> None:
    """The gold patch must not touch tests and the test patch must touch only tests."""
    for label, text, want_tests in (("fix.diff", source.patch, False), ("tests.diff", source.test_patch, True)):
        files = [f.path for f in PatchSet(text)]
        if not files:
            raise MinibenchError(f"{source.instance_id}/{label}: empty diff")
        wrong = [path for path in files if path.startswith("tests/") != want_tests]
        if wrong:
            raise MinibenchError(f"{source.instance_id}/{label}: unexpected file(s) {', '.join(wrong)}")


def touched_test_files(test_patch: str) -> tuple[list[str], list[str]]:
    """(all test files the test patch touches, those of them that exist at the base commit)."""
    touched, existing = [], []
    for patched in PatchSet(test_patch):
        if patched.is_removed_file:
            continue
        touched.append(patched.path)
        if not patched.is_added_file:
            existing.append(patched.path)
    return touched, existing


def make_eval_script(base_commit: str, test_patch: str) -> str:
    """The eval script in the official swebench shape (run in a worktree at the base commit)."""
    touched, existing = touched_test_files(test_patch)
    reset = [f"git checkout {base_commit} {' '.join(existing)}"] if existing else []
    lines = [
        "#!/bin/bash",
        "set -uxo pipefail",
        *reset,
        f"git apply -v - <<'{HEREDOC}'",
        test_patch.rstrip("\n"),
        HEREDOC,
        ": '>>>>> Start Test Output'",
        f"{TEST_CMD} {' '.join(touched)}",
        ": '>>>>> End Test Output'",
        *reset,
    ]
    return "\n".join(lines) + "\n"


def base_row(source: TaskSource, base_commit: str) -> dict:
    """The row without FAIL_TO_PASS/PASS_TO_PASS (those need a test run)."""
    return {
        "instance_id": source.instance_id,
        "repo": source.repo,
        "base_commit": base_commit,
        "patch": source.patch,
        "test_patch": source.test_patch,
        "problem_statement": source.problem_statement,
        "hints_text": "",
        "created_at": source.meta["created_at"],
        "version": VERSION,
        "environment_setup_commit": base_commit,
        "FAIL_TO_PASS": "[]",
        "PASS_TO_PASS": "[]",
        "image": f"swelab-local/minibench-{source.repo_name}:{VERSION}",
        "log_parser": "parse_log_pytest",
        "eval_type": "pass_and_fail",
        "eval_script": make_eval_script(base_commit, source.test_patch),
    }


def run_eval_script(repo: Path, row: dict, patch: str | None, timeout: float = 120) -> str:
    """Run the row's eval script (as swebench's TestSpec renders it) in a fresh worktree; the merged log.

    `patch`, when given, is applied with `git apply` before the script runs, as the harness does.
    """
    from swebench.harness.utils import make_test_spec

    script = make_test_spec(row).eval_script
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PYTHON"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The repos need plain pytest only; autoloading the workbench's plugins (nbval, ...) costs seconds a run.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    with tempfile.TemporaryDirectory(prefix="minibench-eval-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--quiet", "--detach", str(tree), row["base_commit"]],
            cwd=repo, check=True, capture_output=True,
        )  # fmt: skip
        try:
            if patch:
                (Path(tmp) / "patch.diff").write_text(patch, encoding="utf-8")
                subprocess.run(["git", "apply", str(Path(tmp) / "patch.diff")], cwd=tree, check=True, env=env)
            (Path(tmp) / "eval.sh").write_text(script, encoding="utf-8")
            result = subprocess.run(
                ["bash", str(Path(tmp) / "eval.sh")], cwd=tree, env=env, timeout=timeout,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            return result.stdout
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)
            subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)


def status_map(log: str, row: dict) -> dict[str, str]:
    """Test id -> status, read from the log exactly as swebench's grading reads it."""
    from swebench.harness.grading import get_logs_eval
    from swebench.harness.utils import make_test_spec

    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False, encoding="utf-8") as handle:
        handle.write(log)
    try:
        statuses, ok = get_logs_eval(make_test_spec(row), handle.name)
    finally:
        os.unlink(handle.name)
    if not ok:
        raise MinibenchError(f"{row['instance_id']}: the eval log could not be graded:\n{log[-3000:]}")
    return statuses


def compute_row(source: TaskSource, repo: Path) -> dict:
    """A full row: FAIL_TO_PASS fail at base and pass with the gold patch; PASS_TO_PASS pass in both."""
    row = base_row(source, expected_commit(source.repo_name))
    before = status_map(run_eval_script(repo, row, None), row)
    after = status_map(run_eval_script(repo, row, source.patch), row)
    broken = sorted(test for test, status in after.items() if status != "PASSED")
    if broken:
        raise MinibenchError(f"{source.instance_id}: tests not passing with the gold patch: {broken}")
    f2p = sorted(test for test in after if before.get(test) != "PASSED")
    p2p = sorted(test for test in after if before.get(test) == "PASSED")
    if not f2p:
        raise MinibenchError(f"{source.instance_id}: no test fails at the base commit; the task tests nothing")
    row["FAIL_TO_PASS"] = json.dumps(f2p)
    row["PASS_TO_PASS"] = json.dumps(p2p)
    return row


def generate(tasks_dir: Path = TASKS_DIR) -> list[dict]:
    """All rows, computed from the task folders against freshly built repos."""
    sources = load_sources(tasks_dir)
    with tempfile.TemporaryDirectory(prefix="minibench-build-") as tmp:
        repos = {name: build_repo(name, Path(tmp) / name) for name in {s.repo_name for s in sources}}
        return [compute_row(source, repos[source.repo_name]) for source in sources]


def render(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if tasks.json is not up to date")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.check:
        current = TASKS_FILE.read_text(encoding="utf-8") if TASKS_FILE.exists() else ""
        print("tasks.json is up to date" if current == text else "tasks.json is stale; regenerate it")
        return 0 if current == text else 1
    atomic_write_text(TASKS_FILE, text)
    print(f"wrote {len(json.loads(text))} tasks to {TASKS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
