"""Escapes tried from inside both sandboxes: an eval script (through `evaluate_local` or `run_eval_script`) and a
shell-mode command (`run_sandboxed`). Each must fail while the run goes on: the eval script's tests still run
and the verdict is recorded (a gold patch still resolves), the shell command prints its last line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from swelab import minibench, sandbox
from swelab.evaluate.local import evaluate_local, run_eval_script
from swelab.sandbox import EvalLimits, run_sandboxed
from swelab.workspace.repos import Workspace

pytestmark = pytest.mark.skipif(
    not sandbox.eval_sandbox_available(), reason=f"no sandbox here: {sandbox.sandbox_problem(True)}"
)
GOES_ON = "THE-RUN-GOES-ON"


@pytest.fixture(scope="module")
def task() -> dict:
    return minibench.load_tasks()[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("escape-cache"))


def in_eval(task: dict, workspace: Workspace, attack: str) -> str:
    """The attack runs in the eval script before the tests; the gold patch must still resolve (the run went
    on and its verdict is recorded). Returns the log."""
    script = task["eval_script"].replace(": '>>>>> Start Test Output'", attack + f"\necho {GOES_ON}\n"
                                         ": '>>>>> Start Test Output'", 1)
    verdict = evaluate_local(dict(task, eval_script=script), task["patch"], workspace, timeout_s=120)
    assert verdict.resolved, verdict.log[-3000:]
    assert GOES_ON in verdict.log.splitlines()
    return verdict.log


def in_shell(workspace: Workspace, task: dict, attack: str, limits: EvalLimits | None = None) -> str:
    with workspace.worktree(task) as worktree:
        result = run_sandboxed(f"{attack}\necho {GOES_ON}", worktree, 60, 200_000, limits=limits)
    assert GOES_ON in result.output.splitlines(), result.output[-3000:]
    return result.output


def in_eval_script(workspace: Workspace, task: dict, attack: str, limits: EvalLimits) -> str:
    """The eval sandbox with small limits (evaluate_local uses the defaults)."""
    with workspace.worktree(task) as worktree, tempfile.TemporaryDirectory() as home:
        env = workspace.environment(task).process_env(Path(home))
        output, timed_out = run_eval_script(worktree, f"{attack}\necho {GOES_ON}\n", env, 60, limits)
    assert not timed_out and GOES_ON in output.splitlines(), output[-3000:]
    return output


BOTH = pytest.mark.parametrize("where", ["eval", "shell"])


def run(where: str, task, workspace, attack: str) -> str:
    return in_eval(task, workspace, attack) if where == "eval" else in_shell(workspace, task, attack)


@BOTH
def test_a_file_in_the_host_home_is_invisible(where, task, workspace):
    secret = f"home-secret-{uuid.uuid4().hex}"
    path = Path.home() / f".swelab-escape-{uuid.uuid4().hex[:8]}"
    path.write_text(secret)
    try:
        output = run(where, task, workspace, f"cat {path}; ls -a {Path.home()} | sed 's/^/LS:/'")
    finally:
        path.unlink()
    assert secret not in output and f"LS:{path.name}" not in output.splitlines()


@BOTH
def test_another_process_environment_is_unreadable(where, task, workspace, monkeypatch):
    secret = f"sk-escape-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENROUTER_API_KEY", secret)  # ours: never passed on
    other = subprocess.Popen(["sleep", "60"], env={"CHUTES_API_KEY": secret})
    try:
        output = run(where, task, workspace,
                     f"cat /proc/{other.pid}/environ; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | sort -u; env")
    finally:
        other.kill()
        other.wait()
    assert secret not in output
    assert "SWELAB_" not in output and "OPENROUTER" not in output


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@BOTH
def test_the_mirror_and_its_hooks_cannot_be_written(where, task, workspace):
    mirror = workspace.mirror(task["repo"])
    before = _tree_state(mirror)
    attack = "\n".join([
        f"echo 'exit 1' > {mirror}/hooks/post-checkout; chmod +x {mirror}/hooks/post-checkout",
        f"echo '[core] hooksPath = /tmp' >> {mirror}/config",
        'common=$(git rev-parse --git-common-dir) && echo "exit 1" > "$common/hooks/post-checkout"',
        'chmod +x "$common/hooks/post-checkout" 2>/dev/null; cat .git',
        'echo "gitdir: /tmp/elsewhere" > .git',
    ])
    output = run(where, task, workspace, attack)
    assert _tree_state(mirror) == before, output[-2000:]
    # a later run on this cache still starts clean (a hook that fails would break `git worktree add`)
    with workspace.worktree(task) as worktree:
        assert (worktree / ".git").is_file()


class _Handler(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        _Handler.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@BOTH
def test_host_sockets_are_unreachable(where, task, workspace, tmp_path):
    tag = uuid.uuid4().hex[:8]
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    unix_path = Path(tempfile.gettempdir()) / f"swelab-escape-{tag}.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen()
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0swelab-escape-{tag}")
    abstract.listen()
    probe = (
        "import socket\n"
        "for family, address in ((socket.AF_INET, ('127.0.0.1', @PORT@)), (socket.AF_UNIX, '@UNIX@'),"
        " (socket.AF_UNIX, '\\0@ABSTRACT@')):\n"
        "    s = socket.socket(family); s.settimeout(3)\n"
        "    try:\n        s.connect(address); print('CONNECTED', repr(address))\n"
        "    except OSError as exc:\n        print('BLOCKED', repr(address), exc)\n"
    ).replace("@PORT@", str(server.server_address[1])).replace("@UNIX@", str(unix_path)).replace(
        "@ABSTRACT@", f"swelab-escape-{tag}")
    try:
        output = run(where, task, workspace, f"python3 - <<'EOF'\n{probe}EOF\n"
                     f"curl -s --max-time 3 http://127.0.0.1:{server.server_address[1]}/{tag} || echo no-curl")
    finally:
        server.shutdown()
        server.server_close()
        unix.close()
        abstract.close()
        unix_path.unlink(missing_ok=True)
    assert "CONNECTED" not in output and output.count("BLOCKED") == 3, output[-2000:]
    assert f"/{tag}" not in _Handler.hits


SMALL = EvalLimits(memory_bytes=2 * 2**30, processes=64, file_size_bytes=10 * 2**20, cpu_seconds=20)
# 200 processes asked for, each kept alive; the attacker's own shell is spared so the run can go on.
FORK_BOMB = """python3 - <<'EOF'
import subprocess
alive, refused = [], 0
for _ in range(200):
    try:
        alive.append(subprocess.Popen(["sleep", "30"]))
    except OSError:
        refused += 1
print(f"STARTED={len(alive)} REFUSED={refused}", flush=True)
for proc in alive:
    proc.kill()
    proc.wait()
EOF"""


@pytest.mark.parametrize("where", ["eval", "shell"])
def test_a_fork_bomb_is_bounded(where, task, workspace):
    if where == "eval":
        output = in_eval_script(workspace, task, FORK_BOMB, SMALL)
    else:
        output = in_shell(workspace, task, FORK_BOMB, SMALL)
    started = int(output.split("STARTED=")[1].split()[0])
    assert 0 < started < SMALL.processes, output[-2000:]
    assert f"{sandbox.LIMIT_MARKER} processes" in output


@pytest.mark.parametrize("where", ["eval", "shell"])
def test_a_large_allocation_and_a_large_file_fail(where, task, workspace):
    attack = ("python3 -c 'bytearray(6 * 2**30); print(\"ALLOCATED\")' 2>&1 | tail -1; "
              "head -c 50000000 /dev/zero > big.bin; echo WROTE=$(stat -c %s big.bin); rm -f big.bin")
    if where == "eval":
        output = in_eval_script(workspace, task, attack, SMALL)
    else:
        output = in_shell(workspace, task, attack, SMALL)
    assert "MemoryError" in output and "ALLOCATED" not in output
    assert f"WROTE={SMALL.file_size_bytes}" in output


def test_default_limits_are_in_force_in_an_evaluation(task, workspace):
    limits = EvalLimits()
    log = in_eval(task, workspace, "cat /proc/self/limits; id -u; grep -E 'CapEff|NoNewPrivs' /proc/self/status")
    assert f"Max address space         {limits.memory_bytes}" in log
    assert f"Max processes             {limits.processes}" in log
    assert f"Max file size             {limits.file_size_bytes}" in log
    assert "CapEff:\t0000000000000000" in log and "NoNewPrivs:\t1" in log
    assert "\n1000\n" in log  # an unprivileged user


def _alive_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@BOTH
def test_a_daemon_is_not_left_behind(where, task, workspace):
    marker = f"97{uuid.uuid4().int % 10_000_000}.5"
    run(where, task, workspace, f"(setsid nohup sleep {marker} >/dev/null 2>&1 &) ; ( (sleep {marker} &) & )")
    for _ in range(50):
        if not _alive_with(f"sleep {marker}"):
            break
        time.sleep(0.1)
    assert _alive_with(f"sleep {marker}") == []


def test_the_workbench_interpreter_is_all_the_evaluation_sees_of_the_workbench(task, workspace):
    # the bundled tasks' gold patches live in swelab's source: never visible to what is graded
    tasks_file = Path(minibench.__file__).parent / "tasks.json"
    log = in_eval(task, workspace, f"cat {tasks_file} | head -c 200; ls {Path(sys.prefix)}; ls /")
    assert "instance_id" not in log.split(GOES_ON)[0]
    assert os.environ.get("SWELAB_CACHE", "\0") not in log
