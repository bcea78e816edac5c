"""The bubblewrap sandbox: no network, no writes outside the worktree, killed at the timeout, output
capped, no secret in its environment, and `git diff` still working in a worktree of a bare mirror."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from swelab import sandbox
from swelab.sandbox import TRUNCATION_MARKER, bwrap_available, run_sandboxed

pytestmark = pytest.mark.skipif(
    not bwrap_available(), reason="bwrap unusable here: run tests/ensure_bwrap.sh (Debian package bubblewrap)"
)

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          env={**os.environ, **GIT_ENV})
    return done.stdout.strip()


@pytest.fixture
def worktree(tmp_path) -> Path:
    """A git worktree whose .git file points into a bare mirror elsewhere, as swelab.workspace makes them."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("VALUE = 1\n")
    git("init", "-q", "-b", "main", cwd=src)
    git("add", "-A", cwd=src)
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "base", cwd=src)
    mirror = tmp_path / "mirror.git"
    git("clone", "-q", "--bare", str(src), str(mirror), cwd=tmp_path)
    wt = tmp_path / "wt"
    git("worktree", "add", "-q", "--detach", str(wt), "HEAD", cwd=mirror)
    assert (wt / ".git").is_file()
    return wt


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        _Handler.hits.append(self.path)
        body = b"reachable"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_host_loopback_server_is_unreachable(worktree):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/from-sandbox"
        with urllib.request.urlopen(url.replace("from-sandbox", "from-host"), timeout=5) as response:
            assert response.read() == b"reachable"  # the server works from the host
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=3).read())"
        result = run_sandboxed([sys.executable, "-c", code], worktree, 20, 10000)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code != 0
    assert "reachable" not in result.output
    assert "/from-sandbox" not in _Handler.hits
    assert "/from-host" in _Handler.hits


def test_writes_outside_the_worktree_do_not_reach_the_host(worktree):
    tag = uuid.uuid4().hex[:10]
    etc_file = Path("/etc") / f"swelab-probe-{tag}"
    home_file = Path.home() / f"swelab-probe-{tag}"
    parent_file = worktree.parent / f"swelab-probe-{tag}"
    inside_file = worktree / f"inside-{tag}.txt"
    for target in (etc_file, home_file):
        result = run_sandboxed(["sh", "-c", f"echo x > {target}"], worktree, 20, 10000)
        assert result.exit_code != 0, result.output
        assert not target.exists()
    # ../ of a worktree under /tmp lands in the sandbox's private tmpfs; elsewhere it is read-only.
    run_sandboxed(["sh", "-c", f"echo x > ../{parent_file.name}"], worktree, 20, 10000)
    assert not parent_file.exists()
    # The positive control: the worktree itself is writable and the host sees the file.
    result = run_sandboxed(["sh", "-c", f"echo inside > {inside_file.name}"], worktree, 20, 10000)
    assert result.exit_code == 0, result.output
    assert inside_file.read_text() == "inside\n"


def test_sleep_is_killed_at_the_timeout(worktree):
    result = run_sandboxed("sleep 1000", worktree, 2, 10000)
    assert result.timed_out
    assert result.exit_code is None


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(proc.name))
    return found


def test_fork_loop_is_killed_with_all_its_children(worktree):
    marker = f"98{uuid.uuid4().int % 10_000_000}.5"  # a unique sleep length to find leftovers by
    script = f"for i in $(seq 1 100); do (sleep {marker} &); done; while :; do (sleep {marker} &); sleep 0.05; done"
    result = run_sandboxed(["bash", "-c", script], worktree, 2, 10000)
    assert result.timed_out
    leftovers = _processes_with(f"sleep {marker}")
    for _ in range(50):  # SIGKILL is asynchronous: give the kernel a moment to reap
        if not leftovers:
            break
        time.sleep(0.1)
        leftovers = _processes_with(f"sleep {marker}")
    assert leftovers == []


def test_ten_megabytes_of_output_are_truncated_with_the_marker(worktree):
    result = run_sandboxed("head -c 10000000 /dev/zero | tr '\\0' x; echo; echo THE-END", worktree, 60, 10000)
    assert result.exit_code == 0
    assert result.truncated
    assert result.total_bytes == 10_000_000 + len("\nTHE-END\n")
    assert len(result.output.encode()) < 10000 + 200
    assert TRUNCATION_MARKER.split("{")[0] in result.output
    assert result.output.rstrip().endswith("THE-END")  # the tail is kept (test summaries live there)
    assert result.output.startswith("xxxx")


def test_planted_secret_never_reaches_the_sandbox(worktree, monkeypatch):
    secret = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("SWELAB_PLANTED_SECRET", secret)
    monkeypatch.setenv("OPENROUTER_API_KEY", secret)
    result = run_sandboxed(
        "printenv SWELAB_PLANTED_SECRET; echo \"[$OPENROUTER_API_KEY]\"; env; cat /proc/*/environ 2>/dev/null",
        worktree, 20, 100000,
    )
    assert "[]" in result.output  # the command ran
    assert secret not in result.output
    assert "SWELAB_PLANTED_SECRET" not in result.output


def test_git_diff_works_inside_and_dot_git_is_read_only(worktree):
    result = run_sandboxed(
        "sed -i 's/1/2/' app.py && git diff && git status --short", worktree, 20, 10000
    )
    assert result.exit_code == 0, result.output
    assert "-VALUE = 1" in result.output and "+VALUE = 2" in result.output
    assert " M app.py" in result.output
    pointer = (worktree / ".git").read_text()
    result = run_sandboxed("echo 'gitdir: /tmp/evil' > .git", worktree, 20, 10000)
    assert result.exit_code != 0
    assert (worktree / ".git").read_text() == pointer


def test_no_capabilities_inside(worktree):
    result = run_sandboxed("grep CapEff /proc/self/status; mount -o remount,rw / 2>&1; echo rc=$?",
                           worktree, 20, 10000)
    assert "CapEff:\t0000000000000000" in result.output
    assert "rc=0" not in result.output


def test_missing_bwrap_is_a_clear_error(worktree, monkeypatch):
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    sandbox._probe_bwrap.cache_clear()
    try:
        assert not sandbox.bwrap_available()
        with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap"):
            run_sandboxed("true", worktree, 5, 100)
    finally:
        monkeypatch.undo()
        sandbox._probe_bwrap.cache_clear()
    assert sandbox.bwrap_available()


def test_capped_buffer_keeps_head_and_tail():
    buffer = sandbox._CappedBuffer(10)
    for chunk in (b"abc", b"defgh", b"ijklmnop", b"qrst"):
        buffer.add(chunk)
    assert buffer.total == 20
    assert buffer.truncated
    text = buffer.text()
    assert text.startswith("abcde\n") and text.endswith("\npqrst")
    assert "10 of 20 bytes omitted" in text
    small = sandbox._CappedBuffer(100)
    small.add(b"hello")
    assert small.text() == "hello" and not small.truncated


def test_only_the_allow_list_is_visible(worktree):
    """No home, no /var but TeX's /var/lib/texmf, no /run, /sys, /srv or /mnt; the root itself read-only; /etc
    without what is not world-readable (the sandbox's uid maps to the owner of /etc/shadow, so permissions alone
    would not do)."""
    result = run_sandboxed("ls -A / | sort | tr '\\n' ' '; echo; ls -A /var /var/lib 2>&1 | tr '\\n' ' '; echo; "
                           "touch /newfile 2>&1; cat /etc/shadow 2>&1 | head -2", worktree, 20, 10000)
    lines = result.output.splitlines()
    top = set(lines[0].split())
    assert top <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr", "var",
                   *{Path(p).parts[1] for p in [sys.prefix, sys.base_prefix, str(worktree)]}}, top
    assert not {"home", "run", "sys", "srv", "mnt", "media"} & top
    if Path("/var/lib/texmf").is_dir():
        assert lines[1].split() == ["/var:", "lib", "/var/lib:", "texmf"]
    else:
        assert "var" not in top
    assert "Read-only file system" in result.output
    assert "root:" not in result.output  # /etc/shadow is an empty file inside


@pytest.mark.skipif(not Path("/var/lib/texmf").is_dir() or not shutil.which("latex"),
                    reason="no TeX here (Debian texlive: make system-deps-tex)")
def test_tex_runs_inside(worktree):
    """matplotlib's usetex and pgf tests run TeX, whose formats Debian keeps in /var/lib/texmf."""
    (worktree / "hello.tex").write_text("\\documentclass{article}\\begin{document}hello\\end{document}\n")
    result = run_sandboxed("latex -interaction=nonstopmode hello.tex >/dev/null 2>&1; echo rc=$?; ls hello.dvi",
                           worktree, 120, 10000)
    assert "rc=0" in result.output and "hello.dvi" in result.output.splitlines()[-1], result.output


def test_eval_limits_are_validated_and_rendered():
    limits = sandbox.EvalLimits(memory_bytes=2**30, processes=10)
    assert "--as=1073741824" in limits.prlimit_argv() and "--nproc=10" in limits.prlimit_argv()
    with pytest.raises(ValueError, match="EvalLimits.processes"):
        sandbox.EvalLimits(processes=0)
    assert sandbox.limits_in_force()  # the README names this line


def test_a_shell_command_gets_the_limits(worktree):
    result = run_sandboxed("cat /proc/self/limits", worktree, 20, 10000,
                           limits=sandbox.EvalLimits(processes=77, file_size_bytes=12345))
    assert "Max processes             77" in result.output
    assert "Max file size             12345" in result.output
