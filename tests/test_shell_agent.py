"""Shell mode end to end: the audited toolbelt, the model patch taken from the worktree, the tool-calling
loop with its plain-text fallback and limits, mini-swe-agent on our client and sandbox, and the
trajectory browser's text. Models are scripted through the local OpenAI-compatible test server."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_openai_server import FakeOpenAIServer, error, ok

from swelab.analyze import browser
from swelab.generate.agents.base import AttemptContext
from swelab.generate.agents.tools import (
    Toolbelt,
    extract_patch,
    paths_of_test_patch,
    resolve_in_worktree,
    validate_patch,
)
from swelab.io import read_jsonl, write_json
from swelab.params import ModelConfig
from swelab.sandbox import bwrap_available
from swelab.workspace.repos import Workspace

pytestmark = pytest.mark.skipif(
    not bwrap_available(), reason="bwrap unusable here: run tests/ensure_bwrap.sh (Debian package bubblewrap)"
)

FIX_OLD = "    if value > high:\n        return value"
FIX_NEW = "    if value > high:\n        return high"
SUBMIT = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
DOUBLE_TEST = "from toy.core import double\n\n\ndef test_double_again():\n    assert double(3) == 6\n"
PY_FIX = (
    "python - <<'EOF'\n"
    "import pathlib\n"
    "p = pathlib.Path('toy/core.py')\n"
    "s = p.read_text()\n"
    "p.write_text(s.replace('return value\\n    return value', 'return high\\n    return value', 1))\n"
    "EOF"
)


def git(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, input=input, env=env)


# -- helpers for scripted conversations ----------------------------------------------------------------
class Script:
    """Scripted tool-calling turns; each turn is a list of (tool, arguments) or a plain reply."""

    def __init__(self) -> None:
        self.count = 0

    def calls(self, *calls: tuple[str, object], content: str | None = None) -> dict:
        tool_calls = []
        for name, arguments in calls:
            self.count += 1
            raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
            tool_calls.append({"id": f"call_{self.count}", "type": "function",
                               "function": {"name": name, "arguments": raw}})
        return ok(content, tool_calls=tool_calls, finish_reason="tool_calls")


def model_config(server: FakeOpenAIServer, kind: str = "shell", **options: object) -> ModelConfig:
    return ModelConfig(name=f"fake-{kind}", kind=kind, provider="vllm", base_url=server.base_url, max_steps=12,
                       options=dict(options))


def make_ctx(tmp_path: Path, workspace: Workspace, model: str, timeout_s: float = 120.0) -> AttemptContext:
    cell_dir = tmp_path / "run" / "cells" / model / "toy__toy-1" / "1"
    return AttemptContext(cell_dir=cell_dir, attempt=1, deadline=time.monotonic() + timeout_s,
                          params=SimpleNamespace(command_timeout_s=30.0, attempt_timeout_s=timeout_s),
                          workspace=workspace)


def run_scripted(turns: list, tmp_path: Path, workspace: Workspace, instance: dict, kind: str = "shell",
                 **options: object) -> tuple:
    """Run one attempt of the `kind` agent against a fake server that answers with `turns`;
    returns (outcome, the chat requests it sent, its AttemptContext)."""
    from swelab.generate.agents.mini import MiniSweAgent
    from swelab.generate.agents.shell import ShellAgent

    agent_class = MiniSweAgent if kind == "mini-swe-agent" else ShellAgent
    with FakeOpenAIServer(turns, default=ok("should not be asked")) as server:
        model = model_config(server, kind, **options)
        ctx = make_ctx(tmp_path, workspace, model.name)
        outcome = agent_class(model).run(instance, ctx)
        return outcome, server.chat_requests(), ctx


def assert_applies_and_fixes(repo: Path, base: str, patch: str, tmp_path: Path) -> None:
    """The patch applies to a clean checkout of base and makes clamp right."""
    clean = tmp_path / "clean-check"
    assert git("clone", "-q", str(repo), str(clean), cwd=tmp_path).returncode == 0
    git("checkout", "-q", base, cwd=clean)
    applied = git("apply", "-", cwd=clean, input=patch)
    assert applied.returncode == 0, applied.stderr
    assert "return high" in (clean / "toy" / "core.py").read_text()


@pytest.fixture
def workspace(toy_repo, cache_dir) -> Workspace:
    repo, _ = toy_repo
    return Workspace(cache_dir, {"toy/toy": str(repo)})


@pytest.fixture
def belt(toy_repo) -> Toolbelt:
    repo, instance = toy_repo
    return Toolbelt(repo, base_commit=instance["base_commit"],
                    exclude_from_patch=paths_of_test_patch(instance["test_patch"]), command_timeout_s=20,
                    max_output_bytes=4000)


# -- the toolbelt -----------------------------------------------------------------------------------
def test_paths_that_escape_or_touch_git_are_refused(toy_repo, tmp_path):
    repo, _ = toy_repo
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    (repo / "link-out").symlink_to(outside)
    (repo / "link-in").symlink_to(repo / "toy")
    for bad in ("../outside.txt", str(outside), "link-out", ".git/config", "toy/../../outside.txt", "", "a\0b"):
        with pytest.raises(Exception, match="outside|.git|non-empty|NUL"):
            resolve_in_worktree(repo, bad)
    assert resolve_in_worktree(repo, "link-in/core.py") == (repo / "toy" / "core.py").resolve()
    assert resolve_in_worktree(repo, str(repo / "toy" / "core.py")) == (repo / "toy" / "core.py").resolve()


def test_bad_tool_calls_come_back_as_errors(belt, toy_repo, tmp_path):
    repo, _ = toy_repo
    cases = [
        ("no_such_tool", "{}", "unknown tool"),
        ("read_file", '{"path": ', "not valid JSON"),
        ("read_file", "[1, 2]", "JSON object"),
        ("read_file", "{}", "missing"),
        ("str_replace", '{"path": "toy/core.py", "old_str": "x"}', "missing"),
        ("read_file", '{"path": "toy/core.py", "colour": 1}', "unexpected"),
        ("write_file", json.dumps({"path": "../escape.txt", "content": "x"}), "outside"),
        ("write_file", json.dumps({"path": ".git/hooks/post-commit", "content": "x"}), ".git"),
        ("read_file", json.dumps({"path": "toy/core.py", "start_line": "abc"}), "integer"),
        ("run_tests", json.dumps({"paths": ["../x.py"]}), "outside"),
    ]
    for name, arguments, expected in cases:
        result = belt.call(name, arguments)
        assert result.error, (name, arguments)
        assert result.output.startswith("Error:") and expected in result.output, result.output
    assert not (tmp_path / "escape.txt").exists()
    assert not (repo / ".git" / "hooks" / "post-commit").exists()


def test_read_write_and_str_replace(belt, toy_repo):
    repo, _ = toy_repo
    shown = belt.call("read_file", {"path": "toy/core.py", "start_line": 4, "end_line": 5}).output
    assert shown.splitlines() == ["     4\t    if value > high:", "     5\t        return value"]
    script = repo / "run.sh"
    script.write_text("echo old\n")
    script.chmod(0o755)
    assert not belt.call("write_file", {"path": "run.sh", "content": "echo new\n"}).error
    assert script.read_text() == "echo new\n"
    assert script.stat().st_mode & 0o777 == 0o755  # the mode survives the atomic write
    result = belt.call("write_file", {"path": "toy/sub/new.py", "content": "X = 1\n"})
    assert not result.error and (repo / "toy" / "sub" / "new.py").read_text() == "X = 1\n"
    missing = belt.call("str_replace", {"path": "toy/core.py", "old_str": "nope", "new_str": "x"})
    assert missing.error and "not found" in missing.output
    twice = belt.call("str_replace", {"path": "toy/core.py", "old_str": "return value", "new_str": "x"})
    assert twice.error and "occurs 3 times" in twice.output
    assert "return value\n    return value" in (repo / "toy" / "core.py").read_text()  # untouched
    done = belt.call("str_replace", {"path": "toy/core.py", "old_str": FIX_OLD, "new_str": FIX_NEW})
    assert not done.error and "line 4" in done.output
    assert FIX_NEW in (repo / "toy" / "core.py").read_text()


def test_search_list_and_run_python(belt):
    found = belt.call("search", {"pattern": "def (clamp|double)"}).output
    assert "toy/core.py:1:def clamp" in found and "toy/core.py:9:def double" in found
    assert belt.call("search", {"pattern": "zzz_not_there"}).output == "no matches"
    listing = belt.call("list_dir", {"depth": 2}).output.splitlines()
    assert "toy/" in listing and "toy/core.py" in listing and not any(".git" in e for e in listing)
    result = belt.call("run_python", {"code": "import os; print(sorted(os.listdir('toy')))"})
    assert result.exit_code == 0 and "core.py" in result.output


def test_patch_keeps_new_files_and_leaves_out_test_files_and_litter(belt, toy_repo):
    repo, instance = toy_repo
    base = instance["base_commit"]
    (repo / "toy" / "core.py").write_text((repo / "toy" / "core.py").read_text().replace(FIX_OLD, FIX_NEW))
    (repo / "toy" / "limits.py").write_text("MAX = 5\n")
    (repo / "tests" / "test_core.py").write_text("def test_nothing():\n    pass\n")
    (repo / "toy" / "__pycache__").mkdir()
    (repo / "toy" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\0\1\2")
    (repo / "blob.bin").write_bytes(b"\0binary")
    (repo / "toy" / "passwd").symlink_to("/etc/passwd")
    patch = extract_patch(repo, base, paths_of_test_patch(instance["test_patch"]))
    assert "+        return high" in patch
    assert "b/toy/limits.py" in patch and "+MAX = 5" in patch
    assert "tests/test_core.py" not in patch
    assert "__pycache__" not in patch and "blob.bin" not in patch and "passwd" not in patch
    assert validate_patch(repo, base, patch) is None
    assert "tests/test_core.py" in belt.call("git_diff", {}).output  # named as left out
    assert validate_patch(repo, base, patch.replace("toy/core.py", "../core.py")).startswith("unsafe")
    broken = patch.replace("-        return value", "-        return nothing")
    assert "does not apply" in validate_patch(repo, base, broken)


# -- the shell agent ----------------------------------------------------------------------------------
def test_scripted_tool_calling_conversation_fixes_the_bug(toy_repo, workspace, tmp_path):

    repo, instance = toy_repo
    s = Script()
    turns = [
        s.calls(("list_dir", {})),
        s.calls(("search", {"pattern": "def clamp"})),
        s.calls(("read_file", {"path": "toy/core.py", "start_line": 1, "end_line": 6})),
        s.calls(("nonexistent", {}), ("read_file", '{"path": '), ("write_file", {"path": "../escape.txt",
                                                                               "content": "x"})),
        s.calls(("str_replace", {"path": "toy/core.py", "old_str": FIX_OLD, "new_str": FIX_NEW})),
        s.calls(("write_file", {"path": "tests/test_core.py", "content": DOUBLE_TEST}),
                ("write_file", {"path": "toy/limits.py", "content": "MAX = 5\n"})),
        s.calls(("run_tests", {"k": "double", "paths": ["tests/test_core.py"]})),
        s.calls(("git_diff", {})),
        s.calls(("submit", {"summary": "clamp returns high"})),
    ]
    outcome, requests, ctx = run_scripted(turns, tmp_path, workspace, instance)
    assert outcome.status == "ok", outcome.error
    assert (outcome.steps, outcome.tool_calls, outcome.n_calls) == (9, 12, 9)
    assert "+        return high" in outcome.model_patch and "+MAX = 5" in outcome.model_patch
    assert "tests/test_core.py" not in outcome.model_patch
    assert not (tmp_path / "escape.txt").exists()
    assert_applies_and_fixes(repo, instance["base_commit"], outcome.model_patch, tmp_path)
    assert outcome.usage["prompt_tokens"] and outcome.usage["completion_tokens"]
    # What went over the wire: tools offered, each tool result answered with its call id.
    assert len(requests) == 9
    assert {t["function"]["name"] for t in requests[0]["body"]["tools"]} >= {"bash", "str_replace", "submit"}
    last = requests[-1]["body"]["messages"]
    tool_ids = [m["tool_call_id"] for m in last if m["role"] == "tool"]
    assert tool_ids == [f"call_{i}" for i in range(1, 12)]
    # The trajectory: start, one line per step, end; errors are shown to the model, not raised.
    rows = read_jsonl(ctx.cell_dir / "trajectory.jsonl")
    assert [r["event"] for r in rows] == ["start"] + ["step"] * 9 + ["end"]
    bad = rows[4]["actions"]
    assert [a["error"] for a in bad] == [True, True, True]
    assert "unknown tool" in bad[0]["output"] and "outside the repository" in bad[2]["output"]
    tests_run = rows[7]["actions"][0]
    assert tests_run["tool"] == "run_tests" and tests_run["exit_code"] == 0
    assert "1 passed" in tests_run["output"]
    assert (rows[-1]["exit_reason"], rows[-1]["status"]) == ("submitted", "ok")
    assert all(isinstance(a["duration_s"], float) for r in rows[1:-1] for a in r["actions"])
    (tmp_path / "outcome.json").write_text(json.dumps(outcome.__dict__))


def test_plain_text_fallback_runs_one_bash_block_per_turn(toy_repo, workspace, tmp_path):

    repo, instance = toy_repo
    turns = [
        ok("THOUGHT: read it first.\n\n```bash\ncat toy/core.py\n```"),
        ok(f"THOUGHT: fix it.\n\n```bash\n{PY_FIX}\n```"),
        ok("I think that is it."),  # no block: a reminder, not the end
        ok(f"```bash\necho {SUBMIT}\n```"),
    ]
    outcome, requests, ctx = run_scripted(turns, tmp_path, workspace, instance)
    assert outcome.status == "ok", outcome.error
    assert outcome.steps == 4 and outcome.tool_calls == 3
    assert_applies_and_fixes(repo, instance["base_commit"], outcome.model_patch, tmp_path)
    assert "tools" in requests[0]["body"] and all("tools" not in r["body"] for r in requests[1:])
    second = requests[1]["body"]["messages"][-1]
    assert second["role"] == "user" and "<returncode>0</returncode>" in second["content"]
    assert "def clamp" in second["content"]
    assert "exactly one fenced" in requests[3]["body"]["messages"][-1]["content"]
    rows = read_jsonl(ctx.cell_dir / "trajectory.jsonl")
    assert "switched to the plain-text protocol" in rows[1]["note"]
    assert (rows[-1]["exit_reason"], rows[-1]["status"]) == ("submitted", "ok")


def test_tool_calling_false_starts_in_text_mode(toy_repo, workspace, tmp_path):
    from swelab.generate.agents.shell import ShellAgent

    _, instance = toy_repo
    with FakeOpenAIServer([ok(f"```bash\n{PY_FIX}\n```"), ok(f"```sh\necho {SUBMIT}\n```")]) as server:
        model = model_config(server, tool_calling=False, use_environment=False)
        outcome = ShellAgent(model).run(instance, make_ctx(tmp_path, workspace, model.name))
        requests = server.chat_requests()
    assert outcome.status == "ok" and "+        return high" in outcome.model_patch
    assert all("tools" not in r["body"] for r in requests)
    assert "exactly ONE fenced bash block" in requests[0]["body"]["messages"][0]["content"]


def test_deadline_stops_a_long_command_and_keeps_the_partial_diff(toy_repo, workspace, tmp_path):
    from swelab.generate.agents.shell import ShellAgent

    _, instance = toy_repo
    s = Script()
    holder: dict = {}
    replies = [
        s.calls(("str_replace", {"path": "toy/core.py", "old_str": FIX_OLD, "new_str": FIX_NEW})),
        s.calls(("bash", {"command": "sleep 1000"})),
    ]

    def responder(request: dict) -> dict:
        index = len([m for m in request["body"]["messages"] if m["role"] == "assistant"])
        if index == 1:  # the second turn: the attempt has 2 s left from now
            holder["ctx"].deadline = time.monotonic() + 2.0
        return replies[index] if index < len(replies) else ok("late")

    with FakeOpenAIServer(responder=responder) as server:
        model = model_config(server, use_environment=False)
        ctx = make_ctx(tmp_path, workspace, model.name)
        holder["ctx"] = ctx
        outcome = ShellAgent(model).run(instance, ctx)
    assert outcome.status == "timeout"
    assert "+        return high" in outcome.model_patch  # the work done before the deadline is kept
    rows = read_jsonl(ctx.cell_dir / "trajectory.jsonl")
    killed = rows[2]["actions"][0]
    assert killed["timed_out"] and "killed" in killed["output"]
    assert rows[-1]["exit_reason"] == "timeout"


def test_step_limit_and_provider_errors_and_silence(toy_repo, workspace, tmp_path):
    from swelab.generate.agents.shell import ShellAgent

    _, instance = toy_repo
    s = Script()
    looping = [s.calls(("list_dir", {})) for _ in range(3)]
    with FakeOpenAIServer(looping, default=ok("...")) as server:
        model = dataclasses.replace(model_config(server, use_environment=False), max_steps=3)
        outcome = ShellAgent(model).run(instance, make_ctx(tmp_path / "a", workspace, model.name))
    assert outcome.status == "ok" and outcome.steps == 3 and outcome.model_patch == ""

    with FakeOpenAIServer([error(404, "no such model", code="model_not_found")]) as server:
        model = model_config(server, use_environment=False)
        outcome = ShellAgent(model).run(instance, make_ctx(tmp_path / "b", workspace, model.name))
    # a model-gone kind skips, as in patch mode, so the runner skips the model's other cells
    assert outcome.status == "skipped" and outcome.error_kind == "model_not_found"

    overflow = [Script().calls(("str_replace", {"path": "toy/core.py", "old_str": FIX_OLD, "new_str": FIX_NEW})),
                error(400, "This model's maximum context length is 4096 tokens", code="context_length_exceeded")]
    with FakeOpenAIServer(overflow) as server:
        model = model_config(server, use_environment=False)
        outcome = ShellAgent(model).run(instance, make_ctx(tmp_path / "d", workspace, model.name))
    assert (outcome.status, outcome.error_kind, outcome.steps) == ("ok", "context_length", 1)
    assert "+        return high" in outcome.model_patch and "context window exhausted" in outcome.error

    with FakeOpenAIServer(default=ok("I cannot use tools.")) as server:
        model = model_config(server, use_environment=False)
        outcome = ShellAgent(model).run(instance, make_ctx(tmp_path / "c", workspace, model.name))
    assert outcome.status == "malformed" and outcome.steps == 3 and "no usable action" in outcome.error


# -- mini-swe-agent ---------------------------------------------------------------------------------
def test_mini_swe_agent_with_tool_calls_submits_its_patch(toy_repo, workspace, tmp_path):

    repo, instance = toy_repo
    s = Script()
    turns = [
        s.calls(("bash", {"command": "cat toy/core.py"}), content="THOUGHT: look"),
        s.calls(("bash", {"command": PY_FIX})),
        s.calls(("bash", {"command": "git diff -- toy/core.py > patch.txt"})),
        s.calls(("bash", {"command": f"echo {SUBMIT} && cat patch.txt"})),
    ]
    outcome, requests, ctx = run_scripted(turns, tmp_path, workspace, instance, kind="mini-swe-agent")
    assert outcome.status == "ok", outcome.error
    assert (outcome.steps, outcome.tool_calls, outcome.n_calls) == (4, 4, 4)
    assert "patch.txt" not in outcome.model_patch
    assert_applies_and_fixes(repo, instance["base_commit"], outcome.model_patch, tmp_path)
    first = requests[0]["body"]
    assert [t["function"]["name"] for t in first["tools"]] == ["bash"]
    assert "/testbed" not in json.dumps(first["messages"]) and str(workspace.cache_dir) in json.dumps(
        first["messages"])
    assert "clamp(9, 0, 5) returns 9" in first["messages"][1]["content"]
    rows = read_jsonl(ctx.cell_dir / "trajectory.jsonl")
    assert [r["event"] for r in rows] == ["step"] * 4 + ["end"]
    assert "def clamp" in rows[0]["actions"][0]["output"] and rows[3]["actions"][0]["submitted"]
    native = json.loads((ctx.cell_dir / "mini_trajectory.json").read_text())
    assert native["info"]["exit_status"] == "Submitted"


def test_mini_swe_agent_text_mode_and_format_errors(toy_repo, workspace, tmp_path):

    _, instance = toy_repo
    turns = [
        ok("no block here"),
        ok(f"THOUGHT: fix\n\n```mswea_bash_command\n{PY_FIX}\n```"),
        ok(f"```mswea_bash_command\necho {SUBMIT} && git diff\n```"),
    ]
    outcome, requests, ctx = run_scripted(turns, tmp_path, workspace, instance, kind="mini-swe-agent",
                                          tool_calling=False, use_environment=False)
    assert outcome.status == "ok", outcome.error
    assert "+        return high" in outcome.model_patch
    assert all("tools" not in r["body"] for r in requests)
    reminder = requests[1]["body"]["messages"][-1]
    assert reminder["role"] == "user" and "Expected exactly 1 action, found 0" in reminder["content"]
    rows = read_jsonl(ctx.cell_dir / "trajectory.jsonl")
    assert rows[0]["note"].startswith("format error")


# -- the browser ------------------------------------------------------------------------------------
def test_browser_text_for_one_attempt(tmp_path):
    run_dir = tmp_path / "run"
    cell_dir = run_dir / "cells" / "m1" / "toy__toy-1" / "1"
    rows = [
        {"event": "start", "mode": "tool", "tools": ["bash"], "messages": [{"role": "user", "content": "fix it"}]},
        {"event": "step", "step": 1, "mode": "tool", "message": {"role": "assistant", "content": "looking"},
         "actions": [{"tool": "bash", "arguments": '{"command": "ls"}', "output": "toy\ntests",
                      "exit_code": 0, "duration_s": 0.1, "timed_out": False}]},
        {"event": "end", "exit_reason": "submitted", "status": "ok", "steps": 1, "tool_calls": 1,
         "patch_bytes": 10, "notes": []},
    ]
    cell_dir.mkdir(parents=True)
    (cell_dir / "trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    write_json(run_dir / "cells" / "m1" / "toy__toy-1" / "1.json",
               {"model": "m1", "instance_id": "toy__toy-1", "attempt": 1,
                "status": "ok", "mode": "shell", "model_patch": "diff --git a/x b/x\n", "steps": 1,
                "usage": {"prompt_tokens": 12}})
    log = run_dir / "eval" / "m1__a1" / "toy__toy-1" / "test_output.txt"
    log.parent.mkdir(parents=True)
    log.write_text("1 passed\n")
    assert browser.list_models(run_dir) == ["m1"]
    assert browser.list_instances(run_dir, "m1") == ["toy__toy-1"]
    assert browser.list_attempts(run_dir, "m1", "toy__toy-1") == [1]
    shown = browser.render_attempt(run_dir, "m1", "toy__toy-1", 1)
    assert "$ bash: ls" in shown["steps"] and "exit 0" in shown["steps"] and "fix it" in shown["steps"]
    assert "=== end: submitted -> status ok" in shown["steps"]
    assert "not valid JSON" in shown["steps"]
    assert shown["diff"].startswith("diff --git") and shown["eval_log"] == "1 passed\n"
    assert "status: ok" in shown["summary"] and "prompt tokens: 12" in shown["summary"]
    log.unlink()
    assert "no evaluation log" in browser.render_attempt(run_dir, "m1", "toy__toy-1", 1)["eval_log"]
    ui = browser.trajectory_browser(run_dir)
    model_box, instance_box, attempt_box = ui.children[0].children
    assert (model_box.value, instance_box.value, attempt_box.value) == ("m1", "toy__toy-1", 1)
    assert "$ bash: ls" in ui.children[1].children[1].value


@pytest.mark.parametrize("kind", ["shell", "mini-swe-agent"])
def test_no_sandbox_no_run(kind, monkeypatch, tmp_path):
    from swelab.generate.agents import build_agent
    from swelab.sandbox import SandboxUnavailable

    def missing():
        raise SandboxUnavailable("bwrap not found on PATH: install the Debian package 'bubblewrap'")

    monkeypatch.setattr("swelab.generate.agents.shell.require_bwrap", missing)
    model = ModelConfig(name="m", kind=kind, provider="vllm", model_id="m", base_url="http://127.0.0.1:9/v1")
    outcome = build_agent(model).run({"instance_id": "x"}, SimpleNamespace())
    assert outcome.status == "error" and outcome.error.startswith(f"{kind} mode needs a sandbox: bwrap not found")


def test_the_agent_cannot_reach_the_upstream_fix_through_git(toy_repo, workspace, tmp_path):
    """The mirror holds the project's whole history, the upstream fix included (a commit after the base). The
    agent works in a repository of the base commit alone: `git log --all` and `git cat-file` do not know the fix,
    and the only commit object it can read is the base; `git diff` against the base still works."""
    repo, instance = toy_repo
    (repo / "toy" / "core.py").write_text((repo / "toy" / "core.py").read_text() + "# UPSTREAM-FIX-MARKER\n")
    git("-c", "commit.gpgsign=false", "commit", "-qam", "the upstream fix", cwd=repo)
    fix = git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    workspace.ensure_commit(instance["repo"], fix)  # the mirror really holds the fix: the isolation must hide it
    packs = "git cat-file --batch-all-objects --batch-check | grep -w commit"  # every object, packed or loose
    turns = [ok(f"```bash\ngit log --all --format=%H; git cat-file -t {fix}\n```"), ok(f"```bash\n{packs}\n```"),
             ok(f"```bash\n{PY_FIX}\n```"), ok(f"```bash\necho {SUBMIT}\n```")]
    outcome, requests, ctx = run_scripted(turns, tmp_path, workspace, instance, tool_calling=False)
    assert outcome.status == "ok", outcome.error
    steps = [row for row in read_jsonl(ctx.cell_dir / "trajectory.jsonl") if row.get("event") == "step"]
    history, packed = (steps[0]["actions"][0]["output"], steps[1]["actions"][0]["output"])
    assert instance["base_commit"] in history and "could not get object info" in history
    assert fix not in history.replace(f"git cat-file -t {fix}", "")
    assert [line.split()[0] for line in packed.splitlines() if " commit " in line] == [instance["base_commit"]]
    assert_applies_and_fixes(repo, instance["base_commit"], outcome.model_patch, tmp_path)
