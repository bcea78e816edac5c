"""git as the workspace calls it: never running a hook.

A worktree or mirror could hold hooks (a patch, a test, a shell-mode command that reached a git dir): every git
call of the workspace points core.hooksPath at /dev/null, so no hook ever runs, whatever a git dir holds."""

from __future__ import annotations

import subprocess
from pathlib import Path

from swelab.workspace.errors import WorkspaceError

# no hook, and no fsmonitor command either (a config could name one)
NO_HOOKS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


def git_argv(*args: str) -> list[str]:
    """The argv of a git call that runs no hook."""
    return ["git", *NO_HOOKS, *args]


def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(git_argv(*args), cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result
