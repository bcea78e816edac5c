"""Apply a model's patch as grading does, and the rules that decide whether it may be applied at all.

One set of rules for both stages (generation may not import evaluation): grading applies a model patch with
`apply_model_patch`; a patch-mode or shell-mode attempt counts as `ok` only when `trial_apply` (the same call,
in a clean tree at the base commit, undone afterwards) says grading will apply it. The rules stricter than the
official harness (`patch_refusal`, `pytest_config_change`) are described in docs/SANDBOX.md."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from swelab.diffs import UnsafePatchError, check_patch_safe, patch_paths
from swelab.workspace.git import NO_HOOKS, git

# The official harness's fallbacks, in its order (swebench.harness.run_evaluation GIT_APPLY_CMDS), each with
# the short name a result reports. (Our git calls add NO_HOOKS; the log shows the official command.)
APPLY_COMMANDS = (
    ("git apply", ["git", "apply", "--verbose"]),
    ("git apply --reject", ["git", "apply", "--verbose", "--reject"]),
    ("patch --fuzz=5", ["patch", "--batch", "--fuzz=5", "-p1", "-i"]),
)
# A model patch larger than this is refused (a model option, `max_patch_bytes`): a 48 MB diff is no fix, and
# it would be stored and graded like one.
DEFAULT_MAX_PATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    method: str | None  # which fallback applied it ("git apply", "git apply --reject", "patch --fuzz=5")
    log: str
    refused: str | None = None  # why it was refused before (or after) applying, by our stricter rules


def apply_patch(worktree: Path, patch: str) -> ApplyResult:
    """Apply with the official fallbacks; a patch escaping the repo is refused before any command runs."""
    try:
        check_patch_safe(patch)
        _check_no_symlink_escape(worktree, patch)
    except UnsafePatchError as exc:
        return ApplyResult(False, None, f"refused: {exc}", refused=str(exc))
    patch_file = worktree.parent / f".{worktree.name}.model.diff"
    patch_file.write_text(patch if patch.endswith("\n") else patch + "\n")
    logs = []
    try:
        for name, command in APPLY_COMMANDS:
            argv = [command[0], *NO_HOOKS, *command[1:]] if command[0] == "git" else list(command)
            result = subprocess.run([*argv, str(patch_file)], cwd=worktree, capture_output=True, text=True)
            logs.append(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}")
            if result.returncode == 0:
                return ApplyResult(True, name, "\n".join(logs))
            git("checkout", "--", ".", cwd=worktree, check=False)  # undo a partial apply before the next try
            git("clean", "-fdq", cwd=worktree, check=False)
    finally:
        patch_file.unlink(missing_ok=True)
    return ApplyResult(False, None, "\n".join(logs))


def check_apply(worktree: Path, patch: str) -> tuple[bool, str]:
    """`git apply --check`: would this patch apply cleanly here? Safety first."""
    try:
        check_patch_safe(patch)
        _check_no_symlink_escape(worktree, patch)
    except UnsafePatchError as exc:
        return False, f"refused: {exc}"
    result = subprocess.run(
        ["git", *NO_HOOKS, "apply", "--check", "-"],
        cwd=worktree,
        input=patch if patch.endswith("\n") else patch + "\n",
        capture_output=True,
        text=True,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def _check_no_symlink_escape(worktree: Path, patch: str) -> None:
    root = worktree.resolve()
    for path in patch_paths(patch):
        target = (worktree / path).resolve()
        if target != root and root not in target.parents:
            raise UnsafePatchError(f"path {path} resolves outside the repository through a symlink")


# -- stricter than the official harness (docs/SANDBOX.md) -------------------------------------------
# What a model patch may not touch. Never touched by a gold patch: SWE-bench puts every test file in the test
# patch (checked on all 300 SWE-bench Lite rows and the bundled tasks), and these names are how code gets into
# the test process without being imported by the tests: pytest's conftest and ini files, Python's
# sitecustomize/usercustomize and .pth files, package metadata that registers pytest plugins (entry points).
TEST_DIRS = frozenset({"test", "tests", "testing"})
GUARDED_NAMES = frozenset({"conftest.py", "sitecustomize.py", "usercustomize.py", "pytest.ini", ".pytest.ini",
                           "pytest.toml", ".pytest.toml"})
GUARDED_SUFFIXES = (".pth", ".egg-info", ".dist-info", ".egg-link")
# Config files a fix may legitimately change, but not in their pytest section (addopts = -p plugin, ...).
PYTEST_SECTIONS = {"setup.cfg": "tool:pytest", "tox.ini": "pytest", "pyproject.toml": "tool.pytest"}


def size_refusal(patch: str, max_bytes: int = DEFAULT_MAX_PATCH_BYTES) -> str | None:
    """Why a patch is too large to keep, or None."""
    size = len(patch.encode("utf-8"))
    if size > max_bytes:
        return f"patch of {size} bytes exceeds the cap of {max_bytes} bytes"
    return None


def graded_test_ids(row: dict) -> list[str]:
    """The FAIL_TO_PASS and PASS_TO_PASS tests of an instance row (JSON strings or lists)."""
    ids = []
    for key in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        value = row.get(key) or []
        ids += json.loads(value) if isinstance(value, str) else list(value)
    return ids


def task_test_files(row: dict) -> set[str]:
    """The task's test files: those of its test patch and of its graded tests."""
    files = set(patch_paths(row.get("test_patch") or ""))
    return files | {test.split("::")[0] for test in graded_test_ids(row) if test.split("::")[0].endswith(".py")}


def path_refusal(path: str, test_files: Iterable[str] = ()) -> str | None:
    """Why a model patch may not change `path`, or None: one of the task's test files, any test file or test
    folder, or a file that brings code into the test process (conftest.py, pytest.ini, sitecustomize.py, .pth)."""
    parts = PurePosixPath(path).parts
    name = parts[-1] if parts else path
    if path in set(test_files):
        return f"the patch changes the task's test file {path}"
    if TEST_DIRS & set(parts[:-1]) or name.startswith("test_") or name.endswith("_test.py"):
        return f"the patch changes {path}, a test file (only the test patch may)"
    if name in GUARDED_NAMES or any(part.endswith(GUARDED_SUFFIXES) for part in parts):
        return f"the patch changes {path}, which would run code in the test process (conftest, plugin, .pth)"
    return None


def patch_refusal(row: dict, model_patch: str) -> str | None:
    """Why a model patch is refused before it is applied (`path_refusal` of a path it names), or None."""
    test_files = task_test_files(row)
    for path in patch_paths(model_patch):
        reason = path_refusal(path, test_files)
        if reason is not None:
            return reason
    return None


def _pytest_section(name: str, text: str) -> object:
    """The pytest part of a setup.cfg / tox.ini / pyproject.toml, comparable before and after a patch."""
    if name == "pyproject.toml":
        # read as text (no TOML parser on Python 3.10): the [tool.pytest*] tables and any line naming pytest
        kept, inside = [], False
        for line in text.splitlines():
            if line.lstrip().startswith("["):
                inside = line.strip().startswith("[tool.pytest")
            if inside or "pytest" in line:
                kept.append(line.strip())
        return kept
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(text)
    section = PYTEST_SECTIONS[name]
    return dict(parser[section]) if parser.has_section(section) else None


def pytest_config_change(worktree: Path, model_patch: str) -> str | None:
    """After the patch is applied: why it is refused for changing a pytest section of setup.cfg, tox.ini or
    pyproject.toml (`-p plugin` in addopts runs any module in the test process), or None."""
    for path in patch_paths(model_patch):
        name = PurePosixPath(path).name
        if name not in PYTEST_SECTIONS:
            continue
        before = git("show", f"HEAD:{path}", cwd=worktree, check=False)
        after = worktree / path
        try:
            old = _pytest_section(name, before.stdout) if before.returncode == 0 else None
            new = _pytest_section(name, after.read_text(errors="replace")) if after.is_file() else None
        except (configparser.Error, UnicodeDecodeError) as exc:
            return f"the patch leaves {path} unreadable ({type(exc).__name__}): its pytest settings are unknown"
        if old != new:
            return f"the patch changes the pytest settings in {path}"
    return None


def grade_apply(worktree: Path, row: dict, model_patch: str) -> ApplyResult:
    """Apply a model patch as grading does: refused first when it touches what the tests run on
    (`patch_refusal`), then the official fallbacks, then refused when it changed pytest's settings."""
    refusal = patch_refusal(row, model_patch)
    if refusal is not None:
        return ApplyResult(False, None, f"refused: {refusal}", refused=refusal)
    applied = apply_patch(worktree, model_patch)
    if not applied.applied:
        return applied
    changed = pytest_config_change(worktree, model_patch)
    if changed is not None:
        return ApplyResult(False, None, f"{applied.log}\nrefused: {changed}", refused=changed)
    return applied


def apply_model_patch(worktree: Path, row: dict, model_patch: str) -> tuple[str, bool]:
    """`grade_apply` as grading logs it: (log, applied)."""
    result = grade_apply(worktree, row, model_patch)
    return result.log, result.applied


def trial_apply(clean_tree: Path, row: dict, model_patch: str) -> ApplyResult:
    """Would grading apply this patch? `grade_apply` for real in `clean_tree` (a git checkout at the instance's
    base commit, nothing else in it), which is put back to its commit afterwards. A dry run is not enough:
    `patch --dry-run` accepts a diff that writes through a symlink it creates, which the real apply refuses."""
    try:
        return grade_apply(clean_tree, row, model_patch)
    finally:
        git("reset", "--hard", "--quiet", "HEAD", cwd=clean_tree, check=False)
        git("clean", "-ffdxq", cwd=clean_tree, check=False)


@contextmanager
def clean_checkout(repo: Path, commit: str) -> Iterator[Path]:
    """A scratch checkout of `commit` beside `repo` (a repository or one of its worktrees) that borrows its
    objects, removed afterwards: where a patch is tried whatever a model left in its own worktree. Nothing is
    registered in the repository (no worktree entry, no ref), so no lock on its worktree list is needed."""
    objects = git("rev-parse", "--git-path", "objects", cwd=repo).stdout.strip()
    objects_dir = (Path(repo) / objects).resolve()
    scratch = Path(tempfile.mkdtemp(prefix=".swelab-check-", dir=Path(repo).resolve().parent))
    try:
        git("init", "--quiet", str(scratch))
        (scratch / ".git" / "objects" / "info" / "alternates").write_text(f"{objects_dir}\n")
        git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit, cwd=scratch)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
