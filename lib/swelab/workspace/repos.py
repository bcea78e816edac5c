"""The Workspace: one bare mirror per repo, one worktree per (instance, patch), environments on demand.

What the design card calls batching by environment, not by instance. Safe to use from many threads at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from swelab import minibench
from swelab.io import write_json
from swelab.workspace.environments import (
    Environment,
    build_environment,
    environment_identity,
    environment_key,
    one_line,
)
from swelab.workspace.errors import WorkspaceError
from swelab.workspace.git import git

DEFAULT_SOURCE = "https://github.com/{repo}.git"
BUILD_RECORD = ".swelab-build.json"  # inside an environment: its repo, version and build seconds


def default_cache_dir() -> Path:
    return Path(os.environ.get("SWELAB_CACHE", Path.home() / ".cache" / "swelab"))


class Workspace:
    """Shared by generation and evaluation; safe to use from many threads at once."""

    def __init__(self, cache_dir: Path | None = None, repo_sources: dict | None = None):
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self.repo_sources = dict(repo_sources or {})
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.builds = {"mirrors": 0, "environments": 0}

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    @contextmanager
    def _exclusive(self, key: str, lock_file: Path) -> Iterator[None]:
        """Held by one thread of this process and one process of this machine at a time: two services, Dask
        workers or runs may share a cache, and a mirror or an environment must be made by only one of them."""
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(key), open(lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- repositories -------------------------------------------------------------------------------
    def source_for(self, repo: str) -> str:
        if repo in self.repo_sources:
            return str(self.repo_sources[repo])
        if repo.startswith("minibench/"):
            return str(minibench.repo_source(repo, self.cache_dir))
        return DEFAULT_SOURCE.format(repo=repo)

    def mirror(self, repo: str) -> Path:
        """A bare mirror of the repo, cloned once and reused."""
        path = self.cache_dir / "mirrors" / (repo.replace("/", "__") + ".git")
        with self._exclusive(f"mirror:{repo}", path.with_name(path.name + ".lock")):
            if not (path / "HEAD").exists():
                source = self.source_for(repo)
                tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:8]}.tmp")
                tmp.parent.mkdir(parents=True, exist_ok=True)
                git("clone", "--quiet", "--bare", source, str(tmp))
                os.replace(tmp, path)
                self.builds["mirrors"] += 1
        return path

    def ensure_commit(self, repo: str, commit: str) -> Path:
        mirror = self.mirror(repo)
        if git("cat-file", "-e", f"{commit}^{{commit}}", cwd=mirror, check=False).returncode != 0:
            with self._lock(f"mirror:{repo}"):
                fetched = git("fetch", "--quiet", self.source_for(repo), commit, cwd=mirror, check=False)
            if git("cat-file", "-e", f"{commit}^{{commit}}", cwd=mirror, check=False).returncode != 0:
                # git's own words say whether the commit is absent or the source could not send it (a snapshot
                # missing blobs elsewhere in its history cannot be fetched from, though it can be cloned)
                why = one_line(fetched.stderr or "", 300)
                raise WorkspaceError(f"{repo}: commit {commit} not found in {self.source_for(repo)}"
                                     + (f" (git fetch: {why})" if why else ""))
        return mirror

    @contextmanager
    def worktree(self, instance: dict, history: bool = True) -> Iterator[Path]:
        """A fresh detached worktree at the instance's base commit, removed afterwards.

        history=False is what an agent works in: a standalone repository holding the base commit alone (a
        depth-1 fetch from the mirror), so no later commit, the upstream fix among them, can be reached from
        inside, by `git log --all` or by reading the mirror's packs; the base commit keeps its real id."""
        mirror = self.ensure_commit(instance["repo"], instance["base_commit"])
        path = self.cache_dir / "worktrees" / f"{instance['instance_id']}-{uuid.uuid4().hex[:8]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not history:
            try:
                snapshot(mirror, instance["base_commit"], path)
                yield path
            finally:
                shutil.rmtree(path, ignore_errors=True)
            return
        with self._lock(f"worktrees:{instance['repo']}"):  # git's worktree list is not safe to edit concurrently
            git("worktree", "add", "--quiet", "--detach", str(path), instance["base_commit"], cwd=mirror)
        try:
            yield path
        finally:
            with self._lock(f"worktrees:{instance['repo']}"):
                git("worktree", "remove", "--force", str(path), cwd=mirror, check=False)
                git("worktree", "prune", cwd=mirror, check=False)
            shutil.rmtree(path, ignore_errors=True)

    # -- environments -------------------------------------------------------------------------------
    def environment_key(self, instance: dict) -> str:
        """The name of the instance's environment folder under envs/ (what a build failure is filed under)."""
        return environment_key(instance)

    def environment(self, instance: dict) -> Environment:
        """One environment per environment key (swelab.workspace.environments.environment_key), built the first
        time it is asked for."""
        key = self.environment_key(instance)
        path = self.cache_dir / "envs" / key
        with self._exclusive(f"env:{key}", path.with_name(key + ".lock")):
            identity = environment_identity(instance)
            marker = path / ".swelab-ready"
            # A cached environment is reused only if it was built by the same recipe from the same pieces (a
            # borrowed pytest that moved, a new interpreter): otherwise it is rebuilt, never trusted stale.
            if not marker.exists() or marker.read_text() != identity:
                started = time.monotonic()
                build_environment(instance, path, self.ensure_commit)
                # what the build cost, for docs/BENCHMARKS.md (tests/benchmarks/environment_cost.py reads it)
                write_json(path / BUILD_RECORD, {"repo": instance["repo"], "version": str(instance["version"]),
                                                 "seconds": round(time.monotonic() - started, 1)})
                marker.write_text(identity)
                self.builds["environments"] += 1
        variables_file = path / "swelab-env.json"
        variables = json.loads(variables_file.read_text()) if variables_file.exists() else {}
        return Environment(key=key, path=path, variables=tuple(sorted(variables.items())))


def snapshot(mirror: Path, commit: str, path: Path) -> None:
    """A new repository at `path` holding `commit` alone (its tree, no parents), checked out detached."""
    git("init", "--quiet", str(path))
    # a mirror serves any commit it holds to this one fetch only; its own config is left alone
    upload_pack = "git -c uploadpack.allowAnySHA1InWant=true upload-pack"
    git("fetch", "--quiet", "--no-tags", "--depth", "1", f"--upload-pack={upload_pack}", str(mirror), commit,
        cwd=path)
    git("checkout", "--quiet", "--detach", commit, cwd=path)
