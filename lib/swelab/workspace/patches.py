"""Apply a model's patch with the official fallbacks; refuse one that escapes the repository."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from swelab.diffs import UnsafePatchError, check_patch_safe, patch_paths
from swelab.workspace.git import NO_HOOKS, git

# The official harness's fallbacks, in its order (swebench.harness.run_evaluation GIT_APPLY_CMDS).
# (Our git calls add NO_HOOKS; the log shows the official command.)
APPLY_COMMANDS = (
    ["git", "apply", "--verbose"],
    ["git", "apply", "--verbose", "--reject"],
    ["patch", "--batch", "--fuzz=5", "-p1", "-i"],
)
@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    method: str | None
    log: str


def apply_patch(worktree: Path, patch: str) -> ApplyResult:
    """Apply with the official fallbacks; a patch escaping the repo is refused before any command runs."""
    try:
        check_patch_safe(patch)
        _check_no_symlink_escape(worktree, patch)
    except UnsafePatchError as exc:
        return ApplyResult(False, None, f"refused: {exc}")
    patch_file = worktree.parent / f".{worktree.name}.model.diff"
    patch_file.write_text(patch if patch.endswith("\n") else patch + "\n")
    logs = []
    try:
        for command in APPLY_COMMANDS:
            argv = [command[0], *NO_HOOKS, *command[1:]] if command[0] == "git" else list(command)
            result = subprocess.run([*argv, str(patch_file)], cwd=worktree, capture_output=True, text=True)
            logs.append(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}")
            if result.returncode == 0:
                return ApplyResult(True, " ".join(command), "\n".join(logs))
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
