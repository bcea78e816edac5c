"""Run one command in a bubblewrap sandbox: no network, read-only system, a writable worktree only.

Every shell-mode command (the model's bash, search, tests) goes through `run_sandboxed`. The sandbox:
- sees the host root read-only, a private /tmp (tmpfs) and HOME inside it, its own /dev and /proc;
- can write only to the worktree (the worktree's `.git` pointer and the git dirs are read-only);
- has no network (`--unshare-net`: not even the host's 127.0.0.1), its own pid/ipc/uts namespaces;
- hides well-known credential files of the real HOME (~/.netrc, ~/.ssh, ~/.aws, ...);
- drops every capability (as root bwrap keeps them unless told, and CAP_SYS_ADMIN could remount / rw);
- starts from an empty environment plus an allow-list (bwrap itself too: its pid-1 fork's
  /proc/1/environ is readable inside), so no API key in our process reaches it;
- is killed as a whole (process group, and with it the pid namespace) at the timeout;
- has its output read incrementally and capped: the head and tail are kept, the middle is dropped.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BWRAP_PACKAGE = "bubblewrap"
SANDBOX_HOME = "/tmp/home"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TRUNCATION_MARKER = "[... output truncated by the sandbox: {omitted} of {total} bytes omitted ...]"
# The host root is visible read-only, so credential files would be readable: hide the usual ones
# (relative to the real HOME) behind an empty file or folder when they exist.
SECRET_HOME_PATHS = (
    ".netrc", ".git-credentials", ".ssh", ".aws", ".gnupg", ".docker", ".kube", ".config/gh",
    ".config/gcloud", ".config/mini-swe-agent", ".config/openai", ".cache/huggingface/token",
    ".huggingface/token", ".pypirc", ".npmrc", ".env",
)
_READ_CHUNK = 65536
# After the kill, how long we wait for the pipe to close before giving up on the remaining output.
_DRAIN_AFTER_KILL_S = 5.0


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot create namespaces on this machine."""


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # None when killed at the timeout
    output: str  # stdout and stderr merged, capped with TRUNCATION_MARKER in the middle
    timed_out: bool
    duration_s: float
    truncated: bool = False
    total_bytes: int = 0


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def _probe_bwrap() -> str | None:
    """None when a trivial sandbox starts, else the reason it does not."""
    path = bwrap_path()
    if path is None:
        return (
            f"bwrap not found on PATH: install the Debian package '{BWRAP_PACKAGE}' "
            f"(apt-get install {BWRAP_PACKAGE}, or run tests/ensure_bwrap.sh)"
        )
    probe = [path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net",
             "--unshare-pid", "--cap-drop", "ALL", "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap ({path}) could not be started: {exc}"
    if done.returncode != 0:
        return (
            f"bwrap ({path}) cannot create a sandbox here (exit {done.returncode}: "
            f"{done.stderr.strip()[:300]}); unprivileged user namespaces may be disabled"
        )
    return None


def bwrap_available() -> bool:
    return _probe_bwrap() is None


def require_bwrap() -> str:
    """The bwrap path, or SandboxUnavailable with the reason and the package to install."""
    reason = _probe_bwrap()
    if reason is not None:
        raise SandboxUnavailable(reason)
    path = bwrap_path()
    assert path is not None
    return path


def sandbox_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment: nothing from our process except PATH and the locale."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "LC_ALL": os.environ.get("LC_ALL") or os.environ.get("LANG") or "C.UTF-8",
        "HOME": SANDBOX_HOME,
        "TMPDIR": "/tmp",
        "TERM": "dumb",
        "PAGER": "cat",
        "GIT_PAGER": "cat",
        "MANPAGER": "cat",
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ litter in the worktree (and so in the diff)
        "PYTHONUNBUFFERED": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_PROGRESS_BAR": "off",
        "TQDM_DISABLE": "1",
        "NO_COLOR": "1",
    }
    # pyenv shims need to know their root; the value is a path, never a secret.
    if os.environ.get("PYENV_ROOT"):
        env["PYENV_ROOT"] = os.environ["PYENV_ROOT"]
    # Explicit values from the caller (e.g. an environment's PATH) are trusted: the caller chose them.
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    return env


def git_dirs_of(worktree: Path) -> list[Path]:
    """The git dirs a worktree needs for `git diff`: its own gitdir and the common (bare mirror) dir."""
    dot_git = worktree / ".git"
    if dot_git.is_dir():
        return [dot_git.resolve()]
    if not dot_git.is_file():
        return []
    text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("gitdir:"):
        return []
    gitdir = Path(text[len("gitdir:"):].strip())
    if not gitdir.is_absolute():
        gitdir = worktree / gitdir
    gitdir = gitdir.resolve()
    dirs = [gitdir]
    commondir_file = gitdir / "commondir"
    if commondir_file.is_file():
        common = Path(commondir_file.read_text(encoding="utf-8").strip())
        common = (common if common.is_absolute() else gitdir / common).resolve()
        if common != gitdir and common not in gitdir.parents:
            dirs.append(common)
        elif common in gitdir.parents:
            dirs = [common]  # the common dir contains the worktree's gitdir: one bind covers both
    return dirs


def build_bwrap_argv(
    cmd: Sequence[str],
    worktree: Path,
    env: Mapping[str, str],
    *,
    bwrap: str = "bwrap",
    ro_paths: Sequence[Path] = (),
    cwd: Path | None = None,
) -> list[str]:
    worktree = worktree.resolve()
    argv = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname", "sandbox",
        "--cap-drop", "ALL",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--dir", SANDBOX_HOME,
    ]
    argv += _mask_secret_paths()
    # Re-expose, read-only, what the tmpfs on /tmp may have hidden (git dirs, an environment).
    for path in [*git_dirs_of(worktree), *ro_paths]:
        path = Path(path).resolve()
        if path.exists():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--bind", str(worktree), str(worktree)]
    dot_git = worktree / ".git"
    if dot_git.exists():
        # The model must not repoint .git: host-side git later reads the config it would name.
        argv += ["--ro-bind", str(dot_git), str(dot_git)]
    argv += ["--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", str((cwd or worktree).resolve()), "--", *cmd]
    return argv


def _mask_secret_paths() -> list[str]:
    home = Path.home()
    args: list[str] = []
    for rel in SECRET_HOME_PATHS:
        path = home / rel
        if path.is_symlink() or not path.exists():
            continue
        args += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    return args


class _CappedBuffer:
    """Keeps the first and last `limit/2` bytes of a stream; memory stays O(limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self.head_limit = self.limit // 2
        self.tail_limit = self.limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self.tail_limit > 0:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.truncated:
            return head + tail
        omitted = self.total - len(self.head) - len(self.tail)
        marker = TRUNCATION_MARKER.format(omitted=omitted, total=self.total)
        return f"{head}\n{marker}\n{tail}"


def cap_text(text: str, max_bytes: int) -> str:
    """The same head+tail cap as sandbox output, for text we produce on the host (file reads, diffs)."""
    buffer = _CappedBuffer(max_bytes)
    buffer.add(text.encode("utf-8", errors="replace"))
    return buffer.text()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_sandboxed(
    cmd: Sequence[str] | str,
    worktree: Path,
    timeout_s: float,
    max_output_bytes: int,
    env: Mapping[str, str] | None = None,
    *,
    ro_paths: Sequence[Path] = (),
    cwd: Path | None = None,
) -> SandboxResult:
    """Run `cmd` (argv, or a string for `bash -c`) in the sandbox, in `worktree` (or `cwd` inside it)."""
    bwrap = require_bwrap()
    worktree = Path(worktree)
    if not worktree.is_dir():
        raise FileNotFoundError(f"sandbox worktree {worktree} is not a directory")
    argv_cmd = ["bash", "-c", cmd] if isinstance(cmd, str) else [str(part) for part in cmd]
    clean_env = sandbox_env(env)
    argv = build_bwrap_argv(argv_cmd, worktree, clean_env, bwrap=bwrap, ro_paths=ro_paths, cwd=cwd)
    buffer = _CappedBuffer(max_output_bytes)
    started = time.monotonic()
    deadline = started + max(0.0, float(timeout_s))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so one killpg takes bwrap and all it started
        close_fds=True,
        # bwrap's own environment too: the sandbox's pid 1 is a fork of bwrap, and /proc/1/environ inside
        # would show whatever bwrap was started with (--clearenv only cleans what the command gets).
        env=clean_env,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    timed_out = False
    try:
        eof = False
        while not eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, _READ_CHUNK)
                if chunk:
                    buffer.add(chunk)
                else:
                    eof = True
        if timed_out:
            _kill_group(proc)
            # bwrap's death kills the pid namespace; read what is left until the pipe closes.
            drain_until = time.monotonic() + _DRAIN_AFTER_KILL_S
            while time.monotonic() < drain_until:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    chunk = os.read(fd, _READ_CHUNK)
                    if not chunk:
                        break
                    buffer.add(chunk)
        try:
            exit_code: int | None = proc.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        except subprocess.TimeoutExpired:
            # Output closed but the process lingers (e.g. it closed stdout itself): same as a timeout.
            timed_out = True
            _kill_group(proc)
            exit_code = proc.wait()
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        proc.stdout.close()
    if timed_out:
        exit_code = None
    return SandboxResult(
        exit_code=exit_code,
        output=buffer.text(),
        timed_out=timed_out,
        duration_s=round(time.monotonic() - started, 3),
        truncated=buffer.truncated,
        total_bytes=buffer.total,
    )
