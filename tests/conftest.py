"""Shared fixtures: a tiny git repository made by the test, in SWE-bench's shape, and a private cache."""

from __future__ import annotations

import json
import os
import signal
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


# -- the session-wide check: no test leaves a process, a mount or a change under /etc behind ----------------
PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    """Orphans of our tests (a daemon, a stand-in that outlived its evaluation) become our children instead of
    init's, so the check below can see them."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _live_children() -> dict[int, str]:
    me = os.getpid()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == me and state != "Z":
            found[int(proc.name)] = cmdline
    return found


def _mounts() -> set[tuple[str, str]]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return {(line.split()[4], line.split(" - ", 1)[1].split()[0]) for line in lines}


def _etc_state() -> dict[str, tuple]:
    state = {}
    for root, _dirs, files in os.walk("/etc"):
        for name in files:
            path = os.path.join(root, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            state[path] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return state


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """Fails the run when the tests leave a process (of ours, orphans included), a mount in our namespace or a
    change under /etc: what an evaluation that escaped its sandbox would leave (issue 11)."""
    import time

    subreaper = _become_subreaper()
    processes, mounts, etc = set(_live_children()), _mounts(), _etc_state()
    yield
    left = {}
    for _ in range(50):  # a killed process takes a moment to go
        left = {pid: cmd for pid, cmd in _live_children().items() if pid not in processes}
        if not left:
            break
        time.sleep(0.1)
    for pid in left:  # reported below, and not left running either
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    problems = []
    if left:
        problems.append(f"processes left running{'' if subreaper else ' (no subreaper)'}: {left}")
    added, removed = _mounts() - mounts, mounts - _mounts()
    if added or removed:
        problems.append(f"mounts changed in the test process's namespace: added {sorted(added)}, removed "
                        f"{sorted(removed)}")
    after = _etc_state()
    changed = sorted(p for p in set(etc) | set(after) if etc.get(p) != after.get(p))
    if changed:
        problems.append(f"files under /etc changed: {changed[:20]}")
    assert not problems, "; ".join(problems)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium; installs it with apt when root (tests/ensure_chromium.sh)."""
    ensure = Path(__file__).with_name("ensure_chromium.sh")
    done = subprocess.run(["bash", str(ensure)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not done.stdout.strip():
        pytest.skip(f"chromium cannot be installed here: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]

