"""Shared fixtures: a tiny git repository made by the test, in SWE-bench's shape, and a private cache."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}

BUGGY = textwrap.dedent(
    """\
    def clamp(value, low, high):
        if value < low:
            return low
        if value > high:
            return value
        return value


    def double(value):
        return value * 2
    """
)

GOLD_PATCH = """\
diff --git a/toy/core.py b/toy/core.py
--- a/toy/core.py
+++ b/toy/core.py
@@ -2,7 +2,7 @@ def clamp(value, low, high):
     if value < low:
         return low
     if value > high:
-        return value
+        return high
     return value
 
 
"""

TEST_PATCH = """\
diff --git a/tests/test_core.py b/tests/test_core.py
--- a/tests/test_core.py
+++ b/tests/test_core.py
@@ -4,3 +4,7 @@ from toy.core import clamp, double
 
 def test_double():
     assert double(2) == 4
+
+
+def test_clamp_high():
+    assert clamp(9, 0, 5) == 5
"""


def _git(*args: str, cwd: Path) -> str:
    import os

    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV},
                            check=True)
    return result.stdout.strip()


def eval_script(base: str, test_patch: str) -> str:
    return "\n".join(
        [
            "#!/bin/bash",
            "set -uxo pipefail",
            f"git checkout {base} tests/test_core.py",
            "git apply -v - <<'EOF_114329324912'",
            test_patch.rstrip("\n"),
            "EOF_114329324912",
            ": '>>>>> Start Test Output'",
            "python -m pytest -rA -p no:cacheprovider tests/test_core.py",
            ": '>>>>> End Test Output'",
            f"git checkout {base} tests/test_core.py",
            "",
        ]
    )


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("SWELAB_CACHE", str(path))
    return path


@pytest.fixture
def toy_repo(tmp_path) -> tuple[Path, dict]:
    """A git repo with one bug and an instance row for it (SWE-bench schema + 5.x grading fields)."""
    repo = tmp_path / "toy-src"
    (repo / "toy").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "toy" / "__init__.py").write_text("")
    (repo / "toy" / "core.py").write_text(BUGGY)
    (repo / "tests" / "test_core.py").write_text("from toy.core import clamp, double\n\n\ndef test_double():\n"
                                                 "    assert double(2) == 4\n")
    _git("init", "-q", "-b", "main", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "base", cwd=repo)
    base = _git("rev-parse", "HEAD", cwd=repo)
    instance = {
        "instance_id": "toy__toy-1",
        "repo": "toy/toy",
        "base_commit": base,
        "patch": GOLD_PATCH,
        "test_patch": TEST_PATCH,
        "problem_statement": "clamp(9, 0, 5) returns 9, expected 5.",
        "hints_text": "",
        "created_at": "2024-01-01T00:00:00Z",
        "version": "0.1",
        "environment_setup_commit": base,
        "FAIL_TO_PASS": json.dumps(["tests/test_core.py::test_clamp_high"]),
        "PASS_TO_PASS": json.dumps(["tests/test_core.py::test_double"]),
        "image": "swelab-local/toy:0.1",
        "log_parser": "parse_log_pytest",
        "eval_type": "pass_and_fail",
        "env_recipe": "pytest-venv",
        "eval_script": eval_script(base, TEST_PATCH),
    }
    return repo, instance
