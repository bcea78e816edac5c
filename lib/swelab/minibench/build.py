"""Build the bundled repos as git repositories whose commit SHA is the same on every machine.

The commit is content-addressed, so a fixed tree, fixed author/committer identity and dates and a fixed
message give a fixed SHA. `expected_commit` computes that SHA in pure Python (git's object format), which
lets `build_repo` recognise a finished build without trusting anything else on disk, and lets the build
check that git produced exactly the commit it should have (a stray global config cannot sneak in).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPOS_DIR = PACKAGE_DIR / "repos"
TASKS_DIR = PACKAGE_DIR / "tasks"  # the readable task sources (see generate.py)
TASKS_FILE = PACKAGE_DIR / "tasks.json"  # the generated rows
REPO_PREFIX = "minibench/"

# Fixed identity and time of every base commit (2024-01-01T00:00:00Z).
AUTHOR_NAME = "minibench"
AUTHOR_EMAIL = "minibench@swelab.invalid"
COMMIT_EPOCH = 1704067200
# Marks a directory as one this module built, so a stale build may be replaced but a foreign repo never is.
MARKER_KEY = "swelab.minibench"

# Build and cache litter that must never enter a repo, even if someone ran the tests in the source tree.
_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".venv"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")
_SKIP_FILES = {".DS_Store"}

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class MinibenchError(RuntimeError):
    """A bundled repo that cannot be built or located."""


def repo_names() -> list[str]:
    """Names of the bundled repos (the `<name>` in `minibench/<name>`), sorted."""
    return sorted(p.name for p in REPOS_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _source_dir(name: str) -> Path:
    if name not in repo_names():
        raise MinibenchError(f"unknown minibench repo {name!r}; known: {', '.join(repo_names())}")
    return REPOS_DIR / name


def source_files(name: str) -> dict[str, bytes]:
    """The repo's files as {posix relative path: bytes}, litter excluded, sorted by path."""
    root = _source_dir(name)
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(_SKIP_SUFFIXES))
        for filename in filenames:
            if filename in _SKIP_FILES or filename.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(dirpath, filename)
            if path.is_symlink():
                raise MinibenchError(f"{path}: symlinks are not allowed in minibench repos")
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return dict(sorted(files.items()))


def _git_hash(kind: str, body: bytes) -> bytes:
    return hashlib.sha1(f"{kind} {len(body)}\0".encode() + body).digest()


def _tree_hash(files: dict[str, bytes]) -> bytes:
    """Git tree SHA of a flat {path: content} map; every file has mode 100644 (normalized)."""
    blobs: dict[str, bytes] = {}
    subtrees: dict[str, dict[str, bytes]] = {}
    for path, data in files.items():
        head, _, rest = path.partition("/")
        if rest:
            subtrees.setdefault(head, {})[rest] = data
        else:
            blobs[head] = _git_hash("blob", data)
    entries = [(name, b"100644", sha) for name, sha in blobs.items()]
    entries += [(name, b"40000", _tree_hash(sub)) for name, sub in subtrees.items()]
    # git sorts tree entries by name, comparing a directory's name as if it ended with "/".
    entries.sort(key=lambda e: e[0].encode() + (b"/" if e[1] == b"40000" else b""))
    body = b"".join(mode + b" " + name.encode() + b"\0" + sha for name, mode, sha in entries)
    return _git_hash("tree", body)


def commit_message(name: str) -> str:
    # Neutral on purpose: agents can read `git log`, so it must not hint at the bugs.
    return f"{name} 0.1.0\n"


def expected_commit(name: str) -> str:
    """The SHA `build_repo(name, ...)` produces, computed without git."""
    tree = _tree_hash(source_files(name)).hex()
    ident = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}> {COMMIT_EPOCH} +0000"
    body = f"tree {tree}\nauthor {ident}\ncommitter {ident}\n\n{commit_message(name)}".encode()
    return _git_hash("commit", body).hex()


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    date = f"{COMMIT_EPOCH} +0000"
    env.update(
        GIT_AUTHOR_NAME=AUTHOR_NAME,
        GIT_AUTHOR_EMAIL=AUTHOR_EMAIL,
        GIT_AUTHOR_DATE=date,
        GIT_COMMITTER_NAME=AUTHOR_NAME,
        GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
        GIT_COMMITTER_DATE=date,
        GIT_CONFIG_NOSYSTEM="1",  # no system or user config: hooks, autocrlf, signing cannot interfere
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    return env


_GIT_OPTS = [
    "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", "-c", "core.autocrlf=false",
    "-c", "core.hooksPath=/dev/null", "-c", "core.fileMode=true",
]  # fmt: skip


def _git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *_GIT_OPTS, *args], cwd=cwd, env=_git_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise MinibenchError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result


def _head(path: Path) -> str | None:
    if not (path / ".git").exists():
        return None
    result = _git("rev-parse", "--verify", "-q", "HEAD", cwd=path, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _is_our_build(path: Path) -> bool:
    return _git("config", "--get", MARKER_KEY, cwd=path, check=False).stdout.strip() != ""


def build_repo(name: str, dest: Path) -> Path:
    """Create a git repo at `dest` holding `repos/<name>` as one commit with a machine-independent SHA.

    Idempotent: a `dest` already at the right HEAD is returned untouched. A stale build of ours is
    replaced; any other non-empty `dest` is refused rather than overwritten.
    """
    dest = Path(dest)
    files = source_files(name)
    want = expected_commit(name)
    if _head(dest) == want:
        return dest
    if dest.exists() and any(dest.iterdir()):
        if not ((dest / ".git").exists() and _is_our_build(dest)):
            raise MinibenchError(f"{dest} exists and is not a minibench build of {name!r}; refusing to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir()
        _git("init", "-q", "--template=", cwd=tmp)
        _git("symbolic-ref", "HEAD", "refs/heads/main", cwd=tmp)  # git < 2.28 ignores init.defaultBranch
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o644)
        _git("add", "--", *files, cwd=tmp)
        _git("commit", "-q", "--no-verify", "-m", commit_message(name).rstrip("\n"), cwd=tmp)
        _git("config", MARKER_KEY, name, cwd=tmp)
        got = _head(tmp)
        if got != want:
            raise MinibenchError(f"built {name} at {got}, expected {want}: git did not produce the fixed commit")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def parse_repo(repo: str) -> str:
    """`minibench/textkit` -> `textkit`, with a clear error for anything else."""
    if not repo.startswith(REPO_PREFIX):
        raise MinibenchError(f"not a minibench repo: {repo!r} (expected {REPO_PREFIX}<name>)")
    name = repo[len(REPO_PREFIX) :]
    _source_dir(name)
    return name


def repo_source(repo: str, cache_dir: Path) -> Path:
    """The git repo for `minibench/<name>`, built once under `cache_dir/minibench/<name>` and reused.

    Safe for concurrent callers: threads share an in-process lock, processes an flock on a lock file.
    """
    name = parse_repo(repo)
    root = Path(cache_dir) / "minibench"
    root.mkdir(parents=True, exist_ok=True)
    with _locks_guard:
        lock = _locks.setdefault(name, threading.Lock())
    with lock, open(root / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            return build_repo(name, root / name)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
