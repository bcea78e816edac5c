"""minibench: a bundled, fully offline SWE-bench-style task set.

Three small pure-Python repos ship as source under `repos/` in their buggy base state; `tasks.json` holds
the task rows in the SWE-bench instance schema (with the swebench 5.x grading fields), generated from the
readable task folders under `tasks/` by `python -m swelab.minibench.generate`. `repo_source` turns
`minibench/<name>` into a local git repo whose base commit SHA is the same on every machine.
"""

from __future__ import annotations

import json

from swelab.minibench.build import (
    REPOS_DIR,
    TASKS_DIR,
    TASKS_FILE,
    MinibenchError,
    build_repo,
    expected_commit,
    repo_names,
    repo_source,
)

__all__ = [
    "REPOS_DIR",
    "TASKS_DIR",
    "TASKS_FILE",
    "MinibenchError",
    "build_repo",
    "expected_commit",
    "load_tasks",
    "repo_names",
    "repo_source",
]


def load_tasks() -> list[dict]:
    """The task rows of tasks.json, freshly parsed on every call (callers may mutate them)."""
    rows = json.loads(TASKS_FILE.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise MinibenchError(f"{TASKS_FILE}: expected a JSON list of task objects")
    return rows
