"""Repository mirrors, git worktrees, per-(repo, version) environments, and patch application.

One bare mirror per repo, one environment per (repo, version) built once and reused, one worktree per
(instance, patch): what the design card calls batching by environment, not by instance.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from swelab.diffs import UnsafePatchError, check_patch_safe, patch_paths

DEFAULT_SOURCE = "https://github.com/{repo}.git"
# The official harness's fallbacks, in its order (swebench.harness.run_evaluation GIT_APPLY_CMDS).
APPLY_COMMANDS = (
    ["git", "apply", "--verbose"],
    ["git", "apply", "--verbose", "--reject"],
    ["patch", "--batch", "--fuzz=5", "-p1", "-i"],
)
# What a test process may see of our environment: nothing that could hold a secret.
SAFE_ENV_KEYS = ("LANG", "LC_ALL", "TZ", "TERM")
# A row may ask for the plain pure-Python environment (what the bundled tasks use) with env_recipe.
PYTEST_VENV = "pytest-venv"


def default_cache_dir() -> Path:
    return Path(os.environ.get("SWELAB_CACHE", Path.home() / ".cache" / "swelab"))


class WorkspaceError(RuntimeError):
    """A repository, worktree or environment that could not be prepared."""


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    method: str | None
    log: str


@dataclass(frozen=True)
class Environment:
    """A Python environment for one (repo, version): its interpreter's bin dir goes first on PATH."""

    key: str
    path: Path
    variables: tuple[tuple[str, str], ...] = ()  # what the recipe wants set for every command

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    def readable_paths(self) -> list[Path]:
        """Host folders a sandboxed command needs to see to use this environment: the environment itself and
        any folder its .pth files add (a sandbox may hide them, e.g. under a private /tmp)."""
        paths = [self.path]
        for pth in self.path.glob("lib/python*/site-packages/*.pth"):
            for line in pth.read_text(encoding="utf-8").splitlines():
                candidate = Path(line.strip())
                if candidate.is_absolute() and candidate.is_dir():
                    paths.append(candidate)
        return paths

    def process_env(self, home: Path) -> dict[str, str]:
        env = {key: os.environ[key] for key in SAFE_ENV_KEYS if key in os.environ}
        env.update(
            PATH=f"{self.bin_dir}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
            VIRTUAL_ENV=str(self.path),
            HOME=str(home),
            PYTHONDONTWRITEBYTECODE="1",
            GIT_CONFIG_NOSYSTEM="1",
        )
        env.update(self.variables)
        return env


def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result


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

    # -- repositories -------------------------------------------------------------------------------
    def source_for(self, repo: str) -> str:
        if repo in self.repo_sources:
            return str(self.repo_sources[repo])
        if repo.startswith("minibench/"):
            from swelab import minibench

            return str(minibench.repo_source(repo, self.cache_dir))
        return DEFAULT_SOURCE.format(repo=repo)

    def mirror(self, repo: str) -> Path:
        """A bare mirror of the repo, cloned once and reused."""
        path = self.cache_dir / "mirrors" / (repo.replace("/", "__") + ".git")
        with self._lock(f"mirror:{repo}"):
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
                git("fetch", "--quiet", self.source_for(repo), commit, cwd=mirror, check=False)
            if git("cat-file", "-e", f"{commit}^{{commit}}", cwd=mirror, check=False).returncode != 0:
                raise WorkspaceError(f"{repo}: commit {commit} not found in {self.source_for(repo)}")
        return mirror

    @contextmanager
    def worktree(self, instance: dict) -> Iterator[Path]:
        """A fresh detached worktree at the instance's base commit, removed afterwards."""
        mirror = self.ensure_commit(instance["repo"], instance["base_commit"])
        path = self.cache_dir / "worktrees" / f"{instance['instance_id']}-{uuid.uuid4().hex[:8]}"
        path.parent.mkdir(parents=True, exist_ok=True)
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
    def environment(self, instance: dict) -> Environment:
        """One environment per (repo, version), built the first time it is asked for."""
        key = f"{instance['repo'].replace('/', '__')}__{instance['version']}"
        path = self.cache_dir / "envs" / key
        with self._lock(f"env:{key}"):
            identity = environment_identity(instance)
            marker = path / ".swelab-ready"
            # A cached environment is reused only if it was built by the same recipe from the same pieces (a
            # borrowed pytest that moved, a new interpreter): otherwise it is rebuilt, never trusted stale.
            if not marker.exists() or marker.read_text() != identity:
                build_environment(instance, path, self)
                marker.write_text(identity)
                self.builds["environments"] += 1
        variables_file = path / "swelab-env.json"
        variables = json.loads(variables_file.read_text()) if variables_file.exists() else {}
        return Environment(key=key, path=path, variables=tuple(sorted(variables.items())))


def uses_pytest_venv(instance: dict) -> bool:
    """The bundled tasks, and any row that asks for it, run in the plain pure-Python environment."""
    return instance["repo"].startswith("minibench/") or instance.get("env_recipe") == PYTEST_VENV


def environment_identity(instance: dict) -> str:
    """What an environment was built from; a change means a rebuild."""
    if uses_pytest_venv(instance):
        import pytest

        return f"{PYTEST_VENV} {sys.executable} {Path(pytest.__file__).resolve().parent.parent}\n"
    from swelab import recipes

    # the recipe itself too: a changed recipe (a pin, a step) rebuilds the environments made by the old one
    recipe = recipes.RECIPES.get((instance["repo"], str(instance["version"])))
    fingerprint = hashlib.sha256(repr(recipe).encode()).hexdigest()[:12]
    return f"recipe {instance['repo']} {instance['version']} {fingerprint}\n"


def build_environment(instance: dict, path: Path, workspace: Workspace) -> None:
    """Bundled tasks are pure Python with pytest: a venv that borrows the workbench's pytest, so the demo
    needs no network. Real repositories get their recipe from swelab.recipes."""
    shutil.rmtree(path, ignore_errors=True)
    if uses_pytest_venv(instance):
        _pytest_venv(path)
        return
    try:
        from swelab import recipes
    except ImportError as exc:
        raise WorkspaceError(f"{instance['instance_id']}: no environment recipe module for {instance['repo']}") from exc
    recipes.build_environment(instance, path, workspace)


def _pytest_venv(path: Path) -> None:
    import pytest

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    site = next(path.glob("lib/python*/site-packages"))
    pytest_home = Path(pytest.__file__).resolve().parent.parent
    (site / "swelab-pytest.pth").write_text(f"{pytest_home}\n")
    # The borrowed site-packages holds the workbench's own pytest plugins (nbval…): plain pytest is all the
    # bundled repos need, and loading those plugins costs seconds per test run.
    (path / "swelab-env.json").write_text(json.dumps({"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}))


# -- patches ----------------------------------------------------------------------------------------
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
            result = subprocess.run([*command, str(patch_file)], cwd=worktree, capture_output=True, text=True)
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
        ["git", "apply", "--check", "-"],
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
