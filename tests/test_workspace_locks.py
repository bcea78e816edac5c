"""Two processes sharing one cold cache (two services, Dask workers on one machine) make a mirror and an
environment once, and neither fails on the other's half-made folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swelab.workspace.errors import WorkspaceError
from swelab.workspace.repos import Workspace

CHILD = """
import json, sys, time
from pathlib import Path
from swelab import minibench
from swelab.workspace.repos import Workspace

cache, gate, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
task = minibench.load_tasks()[0]
workspace = Workspace(cache)
(gate / f"ready-{name}").touch()
deadline = time.monotonic() + 120
while not (gate / "go").exists():  # a barrier: both start on the cold cache together
    if time.monotonic() > deadline:
        sys.exit("the test never opened the gate")
    time.sleep(0.01)
workspace.mirror(task["repo"])
workspace.environment(task)
print(json.dumps(workspace.builds))
"""


def _wait_for(paths: list[Path], bound_s: float = 120) -> None:
    deadline = time.monotonic() + bound_s
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"not ready within {bound_s} s: {paths}"
        time.sleep(0.05)


def test_two_processes_on_one_cold_cache_build_each_thing_once(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "cache"), str(gate), name],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "ab"]
    _wait_for([gate / "ready-a", gate / "ready-b"])
    (gate / "go").touch()
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], [err[-2000:] for _, err in outputs]
    builds = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(b["mirrors"] for b in builds) == 1 and sum(b["environments"] for b in builds) == 1
    assert not list((tmp_path / "cache" / "mirrors").glob("*.tmp"))


def test_a_commit_the_source_cannot_send_is_named_with_gits_own_reason(tmp_path: Path) -> None:
    """A source without the commit: the error names repository, commit, source, and what git fetch said."""
    source = tmp_path / "source"
    source.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=source, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one"],
                   cwd=source, check=True)
    workspace = Workspace(cache_dir=tmp_path / "cache", repo_sources={"o/r": str(source)})
    absent = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(WorkspaceError, match=rf"o/r: commit {absent} not found in .*source \(git fetch: .+\)"):
        workspace.ensure_commit("o/r", absent)
