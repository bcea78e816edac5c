"""Agent endings: the exceptions that carry an exit reason, the one table from an ending to a cell status,
and one real agent run per status (patch and shell agents against the local fake OpenAI server)."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_openai_server import FakeOpenAIServer, error, ok

from swelab.generate.agents import exceptions as ex
from swelab.generate.agents.base import STATUSES, AttemptContext
from swelab.generate.providers import SKIP_KINDS, ProviderError
from swelab.io import read_jsonl
from swelab.params import ModelConfig
from swelab.sandbox import bwrap_available
from swelab.workspace.repos import Workspace

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bwrap unusable here: run tests/ensure_bwrap.sh")
AGENTS_DIR = Path(__file__).resolve().parents[1] / "lib" / "swelab" / "generate" / "agents"


# -- the table, on hand-made endings ---------------------------------------------------------------------
TABLE = [
    (ex.Submitted(), "ok", None, "submitted"),
    (ex.LimitsExceeded(exit_reason="max_steps"), "ok", None, "max_steps"),
    (ex.LimitsExceeded("context window exhausted after 3 steps", kind="context_length",
                       exit_reason="context_length"), "ok", "context_length", "context_length"),
    (ex.Finished(exit_reason="UserInterruption"), "ok", None, "UserInterruption"),
    (ex.Malformed("no unified diff in the reply"), "malformed", None, "malformed"),
    (ex.AttemptTimeout("attempt deadline reached"), "timeout", None, "timeout"),
    (ex.ProviderFailed("model gone", kind="model_not_found"), "skipped", "model_not_found", "provider_error"),
    (ex.ProviderFailed("no key", kind="auth"), "skipped", "auth", "provider_error"),
    (ex.ProviderFailed("boom", kind="server_error"), "provider_error", "server_error", "provider_error"),
    (ProviderError("unavailable", "down for maintenance"), "skipped", "unavailable", "provider_error"),
    (ProviderError("rate_limited", "slow down"), "provider_error", "rate_limited", "provider_error"),
    (ex.ModelGone("model_not_found: no such model"), "skipped", "model_unavailable", "model_gone"),
    (ex.SandboxMissing("shell mode needs a sandbox: bwrap not found"), "error", None, "sandbox_missing"),
    (ex.AgentBug("config cannot load"), "error", None, "error"),
    (KeyError("base_commit"), "error", None, "error"),
]


@pytest.mark.parametrize(("end", "status", "kind", "reason"), TABLE, ids=[type(row[0]).__name__ + "-" + row[1]
                                                                          for row in TABLE])
def test_each_ending_maps_to_its_status_kind_and_exit_reason(end, status, kind, reason):
    outcome = ex.outcome_for(end)
    assert (outcome.status, outcome.error_kind) == (status, kind)
    assert ex.as_exit(end).exit_reason == reason
    assert outcome.status in STATUSES
    if status != "ok" or kind:
        assert outcome.error  # every failure says why


def test_the_table_reaches_every_status_and_skips_exactly_the_model_gone_kinds():
    assert {row[1] for row in TABLE} == set(STATUSES)
    for kind in ("rate_limited", "unavailable", "model_not_found", "context_length", "timeout", "server_error",
                 "auth", "bad_request", "bad_response"):
        expected = "skipped" if kind in SKIP_KINDS else "provider_error"
        assert ex.outcome_for(ProviderError(kind, "x")).status == expected, kind


def test_an_unexpected_exception_is_one_redacted_line_with_its_type(monkeypatch):
    key = "sk-or-v1-" + "a" * 40
    monkeypatch.setenv("OPENROUTER_API_KEY", key)
    outcome = ex.outcome_for(RuntimeError(f"line one\nline two with {key}\n" + "x" * 2000))
    assert outcome.status == "error"
    assert outcome.error.startswith("RuntimeError: line one line two")
    assert "\n" not in outcome.error and len(outcome.error) <= ex.ERROR_LIMIT
    assert key not in outcome.error


def test_progress_is_kept_whatever_the_ending():
    progress = ex.Progress(model_patch="diff --git a/x b/x\n", steps=4, tool_calls=6, n_calls=5,
                           usage={"prompt_tokens": 10})
    for end in (ex.AttemptTimeout("late"), ex.ProviderFailed("boom", kind="server_error"), ValueError("bug")):
        outcome = ex.outcome_for(end, progress)
        assert (outcome.model_patch, outcome.steps, outcome.tool_calls, outcome.n_calls) == (
            progress.model_patch, 4, 6, 5)
        assert outcome.usage == {"prompt_tokens": 10}
    carried = ex.Malformed("bad", progress=ex.Progress(steps=2))
    assert ex.outcome_for(carried).steps == 2  # the exception's own progress when none is given


def test_provider_exit_is_a_timeout_only_at_the_deadline():
    late = ex.provider_exit(ProviderError("timeout", "read timed out"), deadline=time.monotonic() - 5)
    early = ex.provider_exit(ProviderError("timeout", "read timed out"), deadline=time.monotonic() + 600)
    assert isinstance(late, ex.AttemptTimeout) and "deadline" in late.error and late.kind == "timeout"
    assert isinstance(early, ex.ProviderFailed) and ex.outcome_for(early).status == "provider_error"


def test_an_unusable_patch_turns_only_a_finish_into_malformed():
    finished = ex.judge_patch(ex.LimitsExceeded("window spent", kind="context_length",
                                                exit_reason="context_length"), "patch does not apply")
    assert isinstance(finished, ex.Malformed)
    assert (finished.error, finished.kind, finished.exit_reason) == (
        "patch does not apply", "context_length", "context_length")
    timeout = ex.AttemptTimeout("late")
    assert ex.judge_patch(timeout, "patch does not apply") is timeout
    submitted = ex.Submitted()
    assert ex.judge_patch(submitted, None) is submitted


def test_no_agent_builds_an_outcome_itself():
    """Statuses are decided in exceptions.outcome_for only: no agent module constructs AttemptOutcome."""
    builders = [path.name for path in AGENTS_DIR.glob("*.py")
                if path.name not in ("base.py", "exceptions.py")
                and re.search(r"AttemptOutcome\(", path.read_text(encoding="utf-8"))]
    assert builders == []


# -- real agent runs, one per status ---------------------------------------------------------------------
@pytest.fixture
def workspace(toy_repo, cache_dir) -> Workspace:
    repo, _ = toy_repo
    return Workspace(cache_dir, {"toy/toy": str(repo)})


def attempt_ctx(tmp_path: Path, workspace, *, timeout_s: float = 120.0) -> AttemptContext:
    return AttemptContext(cell_dir=tmp_path / "cell", attempt=1, deadline=time.monotonic() + timeout_s,
                          params=SimpleNamespace(command_timeout_s=30.0, attempt_timeout_s=timeout_s),
                          workspace=workspace)


def run_patch(tmp_path: Path, workspace, instance: dict, server: FakeOpenAIServer, *, timeout_s: float = 120.0):
    from swelab.generate.agents.patch import PatchAgent

    model = ModelConfig(name="fake-patch", kind="patch", provider="vllm", model_id="coder",
                        base_url=server.base_url, context_budget_tokens=500, options={"max_retries": 0})
    return PatchAgent(model).run(instance, attempt_ctx(tmp_path, workspace, timeout_s=timeout_s))


def run_shell(tmp_path: Path, workspace, instance: dict, server: FakeOpenAIServer, *, timeout_s: float = 120.0):
    from swelab.generate.agents.shell import ShellAgent

    model = ModelConfig(name="fake-shell", kind="shell", provider="vllm", model_id="coder",
                        base_url=server.base_url, max_steps=5, options={"max_retries": 0, "use_environment": False})
    ctx = attempt_ctx(tmp_path, workspace, timeout_s=timeout_s)
    return ShellAgent(model).run(instance, ctx), read_jsonl(ctx.cell_dir / "trajectory.jsonl")


def gold_reply(instance: dict) -> dict:
    return ok(f"```diff\n{instance['patch']}```")


@pytest.mark.parametrize(("reply", "status", "kind"), [
    ("gold", "ok", None),
    (ok("I would change the comparison."), "malformed", None),
    (error(404, "no such model", code="model_not_found"), "skipped", "model_not_found"),
    (error(500, "boom"), "provider_error", "server_error"),
])
def test_patch_agent_endings(toy_repo, workspace, tmp_path, reply, status, kind):
    _, instance = toy_repo
    with FakeOpenAIServer(default=gold_reply(instance) if reply == "gold" else reply) as server:
        outcome = run_patch(tmp_path, workspace, instance, server)
    assert (outcome.status, outcome.error_kind) == (status, kind), outcome.error
    assert ("+        return high" in outcome.model_patch) == (status == "ok")
    assert outcome.n_calls == 1 and outcome.usage.keys() >= {"prompt_tokens", "cost_usd"}
    if status != "ok":
        assert outcome.error


def test_patch_agent_past_its_deadline_times_out_without_a_call(toy_repo, workspace, tmp_path):
    _, instance = toy_repo
    with FakeOpenAIServer(default=gold_reply(instance)) as server:
        outcome = run_patch(tmp_path, workspace, instance, server, timeout_s=-5)
        sent = server.chat_requests()
    assert (outcome.status, outcome.error_kind) == ("timeout", "timeout")
    assert "attempt deadline reached" in outcome.error and sent == []


def test_patch_agent_crash_is_the_cells_error(toy_repo, tmp_path):
    _, instance = toy_repo

    class NoWorktree:
        @contextmanager
        def worktree(self, instance: dict):
            raise RuntimeError(f"no worktree for {instance['instance_id']}")
            yield  # pragma: no cover

    with FakeOpenAIServer() as server:
        outcome = run_patch(tmp_path, NoWorktree(), instance, server)
    assert (outcome.status, outcome.error) == ("error", "RuntimeError: no worktree for toy__toy-1")


@needs_bwrap
def test_shell_agent_end_rows_record_the_exit_reason(toy_repo, workspace, tmp_path):
    _, instance = toy_repo
    submit = ok(None, tool_calls=[{"id": "c1", "type": "function",
                                   "function": {"name": "submit", "arguments": "{}"}}], finish_reason="tool_calls")
    cases = [  # (server script, status, exit reason, error kind)
        ([submit], "ok", "submitted", None),
        ([ok("I cannot use tools.")] * 3, "malformed", "malformed", None),
        ([error(401, "bad key", code="invalid_api_key")], "skipped", "provider_error", "auth"),
        ([error(500, "boom")], "provider_error", "provider_error", "server_error"),
    ]
    for index, (script, status, reason, kind) in enumerate(cases):
        with FakeOpenAIServer(script, default=ok("should not be asked")) as server:
            outcome, rows = run_shell(tmp_path / str(index), workspace, instance, server)
        assert (outcome.status, outcome.error_kind) == (status, kind), (index, outcome.error)
        assert (rows[-1]["event"], rows[-1]["exit_reason"], rows[-1]["status"]) == ("end", reason, status)
        assert rows[-1]["error"] == outcome.error


@needs_bwrap
def test_shell_agent_past_its_deadline_and_a_crash_mid_loop(toy_repo, workspace, tmp_path, monkeypatch):
    from swelab.generate.agents.shell import Toolbelt

    _, instance = toy_repo
    with FakeOpenAIServer(default=ok("should not be asked")) as server:
        outcome, rows = run_shell(tmp_path / "late", workspace, instance, server, timeout_s=-5)
        assert server.chat_requests() == []
    assert (outcome.status, rows[-1]["exit_reason"]) == ("timeout", "timeout")

    def crash(self, name, arguments, *, timeout_s=None):
        raise RuntimeError("tool dispatch crashed")

    monkeypatch.setattr(Toolbelt, "call", crash)
    listing = ok(None, tool_calls=[{"id": "c1", "type": "function",
                                    "function": {"name": "list_dir", "arguments": "{}"}}], finish_reason="tool_calls")
    with FakeOpenAIServer([listing]) as server:
        outcome, rows = run_shell(tmp_path / "crash", workspace, instance, server)
    assert (outcome.status, outcome.error) == ("error", "RuntimeError: tool dispatch crashed")
    assert (rows[-1]["exit_reason"], rows[-1]["status"]) == ("error", "error")
    assert outcome.n_calls == 1  # the call made before the crash is still counted


@needs_bwrap
def test_mini_swe_agent_provider_endings_through_its_loop(toy_repo, workspace, tmp_path):
    from swelab.generate.agents.mini import MiniSweAgent

    _, instance = toy_repo
    look = ok("THOUGHT: look", tool_calls=[{"id": "c1", "type": "function", "function": {
        "name": "bash", "arguments": '{"command": "ls"}'}}], finish_reason="tool_calls")
    overflow = error(400, "This model's maximum context length is 4096 tokens", code="context_length_exceeded")
    cases = [  # (server script, status, exit reason, error kind)
        ([error(404, "no such model", code="model_not_found")], "skipped", "provider_error", "model_not_found"),
        ([look, overflow], "ok", "context_length", "context_length"),
    ]
    for index, (script, status, reason, kind) in enumerate(cases):
        with FakeOpenAIServer(script, default=ok("should not be asked")) as server:
            model = ModelConfig(name="fake-mini", kind="mini-swe-agent", provider="vllm", model_id="coder",
                                base_url=server.base_url, max_steps=5,
                                options={"max_retries": 0, "use_environment": False})
            ctx = attempt_ctx(tmp_path / str(index), workspace)
            outcome = MiniSweAgent(model).run(instance, ctx)
        rows = read_jsonl(ctx.cell_dir / "trajectory.jsonl")
        assert (outcome.status, outcome.error_kind) == (status, kind), (index, outcome.error)
        assert (rows[-1]["event"], rows[-1]["exit_reason"], rows[-1]["status"]) == ("end", reason, status)
    assert "context window exhausted after 1 steps" in outcome.error
