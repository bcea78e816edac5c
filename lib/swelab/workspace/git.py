"""git as the workspace calls it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from swelab.workspace.errors import WorkspaceError


def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result
