"""Run untrusted commands in a bubblewrap sandbox: a shell-mode command, or an evaluation's eval script.

Both uses share one argv builder (`build_bwrap_argv`) and one visibility rule, an allow-list:
- the system's read-only folders (/usr and its /bin, /lib, /sbin links; /etc minus every entry that is not
  world-readable: shadow files, private keys; TeX's /var/lib/texmf), a private /dev and a /proc of the
  sandbox's own pid namespace;
- the interpreter(s) and environment the command needs, read-only (`python_paths`, `ro_paths`);
- the worktree, writable; a private /tmp (a fresh folder on disk, removed afterwards) holding HOME and TMPDIR;
- nothing else of the host: no home folders, no $SWELAB_CACHE beyond the worktree, no /run or host sockets,
  no /sys, no other worktree. The shell mode also sees the worktree's git dirs read-only (`git diff`); the
  evaluation sees a private git dir instead (`_private_git`) whose objects come read-only from the mirror,
  so nothing it does reaches the mirror, its config or its hooks.
The sandboxed processes run as uid 1000 in their own user namespace with every capability dropped and
no_new_privs set, in their own pid/ipc/uts (and cgroup) namespaces, a new session, and die with us
(`--die-with-parent`). The environment is empty plus an allow-list (`sandbox_env`); bwrap itself is started
with that environment too (its pid-1 fork's /proc/1/environ is readable inside).
Network: the shell mode has none (`--unshare-net`: not even the host's 127.0.0.1); the evaluation has a
network namespace of its own made before bwrap starts (`EVAL_NETNS_SETUP`: loopback up, the default route
on lo, low ports bindable so a stand-in can serve :80/:443) and inherits it, with no capability over it.
Limits (`EvalLimits`): rlimits set inside the sandbox by `prlimit` right before the command (address space,
processes, file size, CPU time, open files, no core files) and, where the machine lets us make one, a cgroup
per run for the run's total memory and process count (swelab.cgroups). Where neither can bound the process
count (root without a writable cgroup: RLIMIT_NPROC never binds processes that map to the host's root), or
bwrap, unshare, ip or prlimit is missing, nothing runs: SandboxUnavailable says what is missing.
Output is read incrementally and capped (head and tail kept); the whole process group is killed at the
timeout, and with bwrap goes the sandbox's pid namespace, so no process outlives its run.
"""

from __future__ import annotations

import functools
import os
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swelab import cgroups

BWRAP_PACKAGE = "bubblewrap"
SANDBOX_HOME = "/tmp/home"
SANDBOX_UID = 1000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TRUNCATION_MARKER = "[... output truncated by the sandbox: {omitted} of {total} bytes omitted ...]"
LIMIT_MARKER = "swelab-sandbox: limit reached:"
INSTALL_HINT = "make system-deps (README: the sandbox) installs what is missing"
# The system's folders: bound read-only when they are folders, recreated as links when they are links.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
                "/var/lib/texmf")  # Debian's TeX keeps its formats and file database there (matplotlib's TeX tests)
# Inside the evaluation sandbox: the private git dir, the mirror's objects, the script.
EVAL_ROOT = "/swelab"
# Made in the evaluation's own network namespace before bwrap starts; any failure stops the run (exit 125).
EVAL_NETNS_SETUP = (
    "{ ip link set lo up && ip route add default dev lo "
    "&& echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start; } "
    "|| { echo 'swelab-sandbox: unavailable: the evaluation network namespace could not be set up' >&2; exit 125; }; "
)
_SETUP_FAILED = 125
_READ_CHUNK = 65536
# After the kill, how long we wait for the pipe to close before giving up on the remaining output.
_DRAIN_AFTER_KILL_S = 5.0
GiB = 2**30


@dataclass(frozen=True)
class EvalLimits:
    """Resource limits of one sandboxed run: an evaluation, or one shell-mode command.

    Per-process limits are rlimits (set by `prlimit` inside the sandbox); `memory_bytes` and `processes` also
    bound the run as a whole where a cgroup can be made (swelab.cgroups). A limit reached is named in the
    run's output with LIMIT_MARKER, and so in the verdict's log."""

    memory_bytes: int = 4 * GiB
    """Address space of each process (RLIMIT_AS), and the whole run's memory where a cgroup is in force."""
    processes: int = 1024
    """Processes and threads of the run: cgroup pids.max, and RLIMIT_NPROC (binding where no cgroup is)."""
    file_size_bytes: int = 2 * GiB
    """The largest file a process may write (RLIMIT_FSIZE: SIGXFSZ, the write fails)."""
    cpu_seconds: int = 3600
    """CPU time of each process (RLIMIT_CPU: SIGXCPU, then SIGKILL); the wall-clock timeout is separate."""
    open_files: int = 4096
    """Open file descriptors of each process (RLIMIT_NOFILE)."""
    output_bytes: int = 64 * 2**20
    """An evaluation's log is capped here (head and tail kept); a shell command has its own cap."""

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "processes", "file_size_bytes", "cpu_seconds", "open_files", "output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"EvalLimits.{name} must be a positive integer, got {value!r}")

    def prlimit_argv(self) -> list[str]:
        return [
            "prlimit",
            f"--as={self.memory_bytes}",
            f"--nproc={self.processes}",
            f"--fsize={self.file_size_bytes}",
            f"--cpu={self.cpu_seconds}",
            f"--nofile={self.open_files}",
            "--core=0",
            "--",
        ]


class SandboxUnavailable(RuntimeError):
    """The machine cannot give this run its sandbox (bwrap, namespaces, limits): nothing was run."""


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # None when killed at the timeout
    output: str  # stdout and stderr merged, capped with TRUNCATION_MARKER in the middle
    timed_out: bool
    duration_s: float
    truncated: bool = False
    total_bytes: int = 0
    limits_hit: tuple[str, ...] = field(default=())  # one line per limit reached (see LIMIT_MARKER)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _is_root() -> bool:
    return os.geteuid() == 0


@functools.lru_cache(maxsize=1)
def _probe_bwrap() -> str | None:
    """None when a trivial sandbox starts, else the reason it does not."""
    path = bwrap_path()
    if path is None:
        return (
            f"bwrap not found on PATH: install the Debian package '{BWRAP_PACKAGE}' "
            f"(apt-get install {BWRAP_PACKAGE}, or run tests/ensure_bwrap.sh; {INSTALL_HINT})"
        )
    probe = [path, "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--ro-bind", "/", "/",
             "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--unshare-pid", "--cap-drop", "ALL", "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, env=sandbox_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap ({path}) could not be started: {exc}"
    if done.returncode != 0:
        return (
            f"bwrap ({path}) cannot create a sandbox here (exit {done.returncode}: "
            f"{done.stderr.strip()[:300]}); user namespaces may be disabled (sysctl user.max_user_namespaces)"
        )
    return None


@functools.lru_cache(maxsize=1)
def _probe_limits() -> str | None:
    """None when the limits can be enforced here, else what is missing."""
    if shutil.which("prlimit") is None:
        return f"prlimit not found on PATH (Debian package util-linux; {INSTALL_HINT})"
    if _is_root() and cgroups.mechanism() is None:
        return (
            "running as root without a cgroup we can create: the process limit cannot be enforced "
            "(RLIMIT_NPROC never binds processes that map to root); run as a non-root user, or give the "
            "workbench a delegated cgroup v2 (memory and pids controllers) or writable cgroup v1 hierarchies"
        )
    return None


@functools.lru_cache(maxsize=1)
def _probe_eval() -> str | None:
    """None when an evaluation sandbox (own network namespace set up, then bwrap) starts, else why not."""
    for tool, package in (("unshare", "util-linux"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (Debian package {package}; {INSTALL_HINT})"
    argv = [*_netns_prefix(), shutil.which("true") or "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=sandbox_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the evaluation network namespace could not be made: {exc}"
    if done.returncode != 0:
        return (f"the evaluation network namespace could not be made (exit {done.returncode}: "
                f"{done.stderr.strip()[:300]}); needs root or unprivileged user namespaces")
    return None


def bwrap_available() -> bool:
    return _probe_bwrap() is None


def sandbox_problem(evaluation: bool = False) -> str | None:
    """None when this machine can run the sandbox (the evaluation's, with `evaluation`), else the one line
    saying what is missing."""
    return _probe_bwrap() or _probe_limits() or (_probe_eval() if evaluation else None)


def eval_sandbox_available() -> bool:
    return sandbox_problem(evaluation=True) is None


def require_bwrap(evaluation: bool = False) -> str:
    """The bwrap path, or SandboxUnavailable with the reason and what to install."""
    reason = sandbox_problem(evaluation)
    if reason is not None:
        raise SandboxUnavailable(reason)
    path = bwrap_path()
    assert path is not None
    return path


def limits_in_force() -> str:
    """Which mechanism enforces the limits on this machine (the README names them)."""
    kind = cgroups.mechanism()
    if kind:
        return f"{kind} (memory and processes per run) + rlimits via prlimit (per process)"
    return "rlimits via prlimit (per process; processes counted per sandbox user namespace)"


def sandbox_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment: nothing from our process except PATH and the locale."""
    path = os.environ.get("PATH") or DEFAULT_PATH
    workbench_bin = str(Path(sys.prefix) / "bin")  # visible read-only (workbench_python_paths): `python` works
    env = {
        "PATH": path if workbench_bin in path.split(os.pathsep) else f"{path}{os.pathsep}{workbench_bin}",
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
        # git inside never runs a hook, whatever a git dir holds
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.hooksPath",
        "GIT_CONFIG_VALUE_0": "/dev/null",
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


# -- what is visible -------------------------------------------------------------------------------
def python_paths(prefix: Path, follow_pth: bool = True) -> list[Path]:
    """What a sandbox must see to run the Python of `prefix` (a venv or an installation): the prefix, every
    folder on the way of its interpreter's symlinks (a venv's python links to its base, maybe through another
    venv), the base installation, and (with `follow_pth`) the folders its .pth files add."""
    prefix = Path(prefix)
    paths = [prefix]
    python = prefix / "bin" / "python"
    if not python.exists():
        python = prefix / "bin" / "python3"
    hop = python
    for _ in range(16):
        if not hop.is_symlink():
            break
        target = Path(os.readlink(hop))
        hop = target if target.is_absolute() else hop.parent / target
        paths.append(hop.parent.parent if hop.parent.name == "bin" else hop.parent)
    real = python.resolve()
    if real.exists():
        paths.append(real.parent.parent if real.parent.name == "bin" else real.parent)
    cfg = prefix / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                home = Path(value.strip())
                paths.append(home.parent if home.name == "bin" else home)
    if follow_pth:
        for pth in prefix.glob("lib/python*/site-packages/*.pth"):
            for line in pth.read_text(encoding="utf-8", errors="replace").splitlines():
                candidate = Path(line.strip())
                if line.strip() and not line.startswith(("import ", "#")) and candidate.is_absolute() \
                        and candidate.is_dir():
                    paths.append(candidate)
    return [path for path in paths if path.exists()]


def workbench_python_paths() -> list[Path]:
    """The workbench's own interpreter (the stand-ins and the tests' borrowed pytest run on it). Its .pth files
    are not followed: they point at swelab's source, which holds the bundled tasks' gold patches."""
    return python_paths(Path(sys.prefix), follow_pth=False)


@functools.lru_cache(maxsize=1)
def _etc_hidden() -> tuple[tuple[str, bool], ...]:
    """Entries of /etc that are not world-readable (shadow, private keys, ...): (path, is_dir). Inside, the
    sandbox's uid maps to the host uid that owns them, so they are hidden rather than left to permissions."""
    hidden = []
    for root, dirs, files in os.walk("/etc"):
        for name in list(dirs):
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode) and not (mode & stat.S_IROTH and mode & stat.S_IXOTH):
                hidden.append((path, True))
                dirs.remove(name)
        for name in files:
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and not mode & stat.S_IROTH:
                hidden.append((path, False))
    return tuple(hidden)


def system_args() -> list[str]:
    """bwrap arguments for the system's read-only folders, /dev and /proc."""
    args: list[str] = []
    for name in SYSTEM_PATHS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    for path, is_dir in _etc_hidden():
        args += ["--tmpfs", path, "--remount-ro", path] if is_dir else ["--ro-bind", "/dev/null", path]
    args += ["--dev", "/dev", "--proc", "/proc"]
    return args


def _ro_bind_args(paths: Sequence[Path]) -> list[str]:
    """Read-only binds, parents before children, each path once."""
    args: list[str] = []
    seen: set[str] = set()
    for path in sorted({str(Path(p).resolve()) for p in paths if Path(p).exists()}, key=len):
        if path not in seen and path != "/":
            seen.add(path)
            args += ["--ro-bind", path, path]
    return args


def build_bwrap_argv(
    cmd: Sequence[str],
    worktree: Path,
    env: Mapping[str, str],
    *,
    bwrap: str = "bwrap",
    ro_paths: Sequence[Path] = (),
    cwd: Path | None = None,
    tmp_dir: Path | None = None,
    network: bool = False,
    git_args: Sequence[str] | None = None,
    extra_args: Sequence[str] = (),
    limits: EvalLimits | None = None,
) -> list[str]:
    """The bwrap command line for `cmd` in `worktree`, shared by the shell mode and the evaluation.

    `tmp_dir`: the host folder that becomes /tmp (a tmpfs when None); `network`: keep the network namespace
    we are started in (the evaluation's own) instead of a new empty one; `git_args`: how git dirs appear
    (default: the worktree's own, read-only, with .git itself read-only); `limits`: rlimits set by prlimit."""
    worktree = worktree.resolve()
    argv = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-user",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname", "sandbox",
        "--cap-drop", "ALL",
    ]
    if not network:
        argv.append("--unshare-net")
    argv += system_args()
    argv += ["--bind", str(tmp_dir), "/tmp"] if tmp_dir is not None else ["--tmpfs", "/tmp"]
    argv += ["--dir", SANDBOX_HOME]
    argv += _ro_bind_args([*workbench_python_paths(), *ro_paths])
    argv += list(extra_args)
    argv += ["--bind", str(worktree), str(worktree)]
    if git_args is None:
        git_args = _ro_bind_args(git_dirs_of(worktree))
        dot_git = worktree / ".git"
        if dot_git.exists():
            # The command must not repoint .git: host-side git later reads the config it would name.
            git_args += ["--ro-bind", str(dot_git), str(dot_git)]
    argv += list(git_args)
    argv += ["--remount-ro", "/"]  # the root bwrap builds (a tmpfs holding the mount points) is not a scratchpad
    argv += ["--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", str((cwd or worktree).resolve()), "--"]
    argv += limits.prlimit_argv() if limits is not None else []
    return argv + list(cmd)


def _join_cgroup_prefix(cgroup: cgroups.RunCgroup | None) -> list[str]:
    """`sh -c` that moves itself into the run's cgroup, then execs the rest (before any sandboxed process)."""
    if cgroup is None:
        return []
    joins = " && ".join(f"echo $$ > {shlex.quote(str(path))}" for path in cgroup.procs_files)
    return ["sh", "-c", joins + ' || { echo "swelab-sandbox: unavailable: could not join the run\'s cgroup" >&2;'
            f' exit {_SETUP_FAILED}; }}; exec "$@"', "sh"]


def _netns_prefix() -> list[str]:
    """Our own network namespace, set up (as root there), then exec the rest: root needs no user namespace."""
    unshare = ["unshare", "--net"] if _is_root() else ["unshare", "--user", "--map-root-user", "--net"]
    return [*unshare, "--", "sh", "-c", EVAL_NETNS_SETUP + 'exec "$@"', "sh"]


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


def _run_capped(argv: list[str], env: Mapping[str, str], timeout_s: float,
                max_output_bytes: int) -> tuple[int | None, _CappedBuffer, bool, float]:
    """Run argv in its own process group, output merged and capped; the group is killed at the timeout.
    Returns (exit code or None at the timeout, output, timed out, seconds)."""
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
        env=dict(env),
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
        _kill_group(proc)  # anything of the group still alive outside the pid namespace (the set-up shells)
        proc.stdout.close()
    return (None if timed_out else exit_code), buffer, timed_out, round(time.monotonic() - started, 3)


def _limit_lines(exit_code: int | None, cgroup: cgroups.RunCgroup | None, limits: EvalLimits) -> tuple[str, ...]:
    hits = list(cgroup.limits_hit()) if cgroup is not None else []
    by_signal = {128 + signal.SIGXCPU: f"cpu time: the command exceeded {limits.cpu_seconds} s of CPU",
                 128 + signal.SIGXFSZ: f"file size: the command wrote past {limits.file_size_bytes} bytes",
                 -signal.SIGXCPU: f"cpu time: the command exceeded {limits.cpu_seconds} s of CPU",
                 -signal.SIGXFSZ: f"file size: the command wrote past {limits.file_size_bytes} bytes"}
    if exit_code in by_signal:
        hits.append(by_signal[exit_code])
    return tuple(f"{LIMIT_MARKER} {hit}" for hit in hits)


def _sandboxed_run(argv: list[str], env: Mapping[str, str], timeout_s: float, max_output_bytes: int,
                   limits: EvalLimits, prefix: Sequence[str] = ()) -> SandboxResult:
    """Run a bwrap argv in a fresh cgroup (where one can be made), then remove the cgroup."""
    cgroup = cgroups.create(limits.memory_bytes, limits.processes) if cgroups.mechanism() else None
    try:
        full = [*_join_cgroup_prefix(cgroup), *prefix, *argv]
        exit_code, buffer, timed_out, duration = _run_capped(full, env, timeout_s, max_output_bytes)
        hits = _limit_lines(exit_code, cgroup, limits)
    finally:
        if cgroup is not None:
            cgroup.remove()
    text = buffer.text()
    if exit_code == _SETUP_FAILED and "swelab-sandbox: unavailable:" in text:
        line = next(line for line in text.splitlines() if "swelab-sandbox: unavailable:" in line)
        raise SandboxUnavailable(line.split("unavailable:", 1)[1].strip() + f" ({INSTALL_HINT})")
    if hits:
        text = text.rstrip("\n") + "\n" + "\n".join(hits) + "\n"
    return SandboxResult(exit_code, text, timed_out, duration, buffer.truncated, buffer.total, hits)


def run_sandboxed(
    cmd: Sequence[str] | str,
    worktree: Path,
    timeout_s: float,
    max_output_bytes: int,
    env: Mapping[str, str] | None = None,
    *,
    ro_paths: Sequence[Path] = (),
    cwd: Path | None = None,
    limits: EvalLimits | None = None,
) -> SandboxResult:
    """Run `cmd` (argv, or a string for `bash -c`) in the shell-mode sandbox, in `worktree` (or `cwd` inside
    it): no network, the worktree writable, its git dirs and `ro_paths` read-only, a private /tmp."""
    bwrap = require_bwrap()
    limits = limits or EvalLimits()
    worktree = Path(worktree)
    if not worktree.is_dir():
        raise FileNotFoundError(f"sandbox worktree {worktree} is not a directory")
    argv_cmd = ["bash", "-c", cmd] if isinstance(cmd, str) else [str(part) for part in cmd]
    clean_env = sandbox_env(env)
    tmp_dir = Path(tempfile.mkdtemp(prefix="swelab-sandbox-tmp-"))
    try:
        argv = build_bwrap_argv(argv_cmd, worktree, clean_env, bwrap=bwrap, ro_paths=ro_paths, cwd=cwd,
                                tmp_dir=tmp_dir, limits=limits)
        return _sandboxed_run(argv, clean_env, timeout_s, max_output_bytes, limits)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


# -- the evaluation --------------------------------------------------------------------------------
def _host_git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=cwd, capture_output=True,
                          text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def _gitdir_and_common(worktree: Path) -> tuple[Path, Path] | None:
    """(the worktree's own git dir, the common git dir holding the objects), or None without git."""
    dot_git = worktree / ".git"
    if dot_git.is_dir():
        return dot_git.resolve(), dot_git.resolve()
    if not dot_git.is_file():
        return None
    text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(text[len("gitdir:"):].strip())
    gitdir = (gitdir if gitdir.is_absolute() else worktree / gitdir).resolve()
    common = gitdir
    if (gitdir / "commondir").is_file():
        named = Path((gitdir / "commondir").read_text(encoding="utf-8").strip())
        common = (named if named.is_absolute() else gitdir / named).resolve()
    return gitdir, common


def _private_git(worktree: Path, scratch: Path) -> list[str]:
    """bwrap arguments giving the evaluation a git dir of its own: HEAD and index as the worktree's, objects
    read-only from the real git dir (through `objects/info/alternates`). The mirror's config, refs and hooks
    stay out of sight, and nothing the eval script's git does (checkout, apply) can write to the mirror."""
    dot_git = worktree / ".git"
    found = _gitdir_and_common(worktree)
    if found is None:
        return []
    gitdir, common = found
    objects = (common / "objects").resolve()
    head = _host_git("rev-parse", "HEAD", cwd=worktree)
    private = scratch / "git"
    for sub in ("objects/info", "refs/heads", "refs/tags", "info"):
        (private / sub).mkdir(parents=True, exist_ok=True)
    (private / "HEAD").write_text(head + "\n" if head else "ref: refs/heads/main\n")
    (private / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n")
    if (gitdir / "index").is_file():
        shutil.copyfile(gitdir / "index", private / "index")
    alternates = [f"{EVAL_ROOT}/objects"]
    binds = ["--ro-bind", str(objects), f"{EVAL_ROOT}/objects"]
    extra = objects / "info" / "alternates"
    if extra.is_file():  # the real objects borrow from elsewhere too: seen read-only at the same paths
        for line in extra.read_text().splitlines():
            path = Path(line.strip()) if Path(line.strip()).is_absolute() else objects / line.strip()
            if line.strip() and path.is_dir():
                alternates.append(str(path.resolve()))
                binds += ["--ro-bind", str(path.resolve()), str(path.resolve())]
    (private / "objects" / "info" / "alternates").write_text("\n".join(alternates) + "\n")
    if dot_git.is_dir():
        return [*binds, "--bind", str(private), str(dot_git.resolve())]
    (scratch / "dotgit").write_text(f"gitdir: {EVAL_ROOT}/git\n")
    return [*binds, "--bind", str(private), f"{EVAL_ROOT}/git", "--ro-bind", str(scratch / "dotgit"), str(dot_git)]


def _private_etc(scratch: Path) -> list[str]:
    """A private /etc/hosts (writable: a stand-in adds its names; its first line marks it as the sandbox's)
    and /etc/resolv.conf (127.0.0.1, where nothing answers: names not stood in fail at once)."""
    hosts = scratch / "hosts"
    original = Path("/etc/hosts").read_text(errors="replace") if Path("/etc/hosts").is_file() else ""
    hosts.write_text(f"{HOSTS_SANDBOX_LINE}\n{original}")
    resolv = scratch / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    args = []
    if Path("/etc/hosts").is_file() and not Path("/etc/hosts").is_symlink():
        args += ["--bind", str(hosts), "/etc/hosts"]
    if Path("/etc/resolv.conf").is_file() and not Path("/etc/resolv.conf").is_symlink():
        args += ["--ro-bind", str(resolv), "/etc/resolv.conf"]
    return args


HOSTS_SANDBOX_LINE = "# swelab-sandbox: this evaluation's private hosts file"


def run_eval(
    script: str,
    worktree: Path,
    env: Mapping[str, str],
    timeout_s: float,
    *,
    ro_paths: Sequence[Path] = (),
    ro_files: Sequence[Path] = (),
    limits: EvalLimits | None = None,
    scratch_parent: Path | None = None,
) -> SandboxResult:
    """Run an eval script in the evaluation sandbox: its own network namespace (loopback only, outside
    addresses a blackhole), the worktree writable, `ro_paths` (the environment) and `ro_files` read-only,
    a private git dir, /tmp, HOME, /etc/hosts and resolv.conf; the env's variables and nothing else.
    `scratch_parent`: where the run's scratch folder (its /tmp) goes on the host (default: the temp dir).

    Fails closed: SandboxUnavailable, and nothing run, where the machine cannot give it all of that."""
    bwrap = require_bwrap(evaluation=True)
    limits = limits or EvalLimits()
    worktree = Path(worktree).resolve()
    # the run's /tmp, private git dir and files: removed afterwards, even after a kill at the timeout
    scratch = Path(tempfile.mkdtemp(prefix="swelab-eval-", dir=scratch_parent))
    try:
        (scratch / "tmp" / "home").mkdir(parents=True)
        (scratch / "eval.sh").write_text(script)
        extra = [*_private_etc(scratch), *_private_git(worktree, scratch)]
        extra += ["--ro-bind", str(scratch / "eval.sh"), f"{EVAL_ROOT}/eval.sh"]
        for path in ro_files:
            extra += ["--ro-bind", str(Path(path).resolve()), str(Path(path).resolve())]
        clean_env = {**sandbox_env(), **dict(env), "HOME": SANDBOX_HOME, "TMPDIR": "/tmp"}
        # git_args come after the worktree's bind: they cover its .git
        argv = build_bwrap_argv(["bash", f"{EVAL_ROOT}/eval.sh"], worktree, clean_env, bwrap=bwrap,
                                ro_paths=ro_paths, tmp_dir=scratch / "tmp", network=True, git_args=extra,
                                limits=limits)
        return _sandboxed_run(argv, sandbox_env(), timeout_s, limits.output_bytes, limits, _netns_prefix())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
