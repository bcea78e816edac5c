"""Shell mode (`kind: shell`): the model works in a sandboxed worktree through audited tools.

The loop speaks OpenAI tool calling. Models without tool support (option `tool_calling: false`, or a
model that answers with one fenced bash block and no tool call) get the plain-text protocol of
mini-swe-agent instead: one ```bash block per turn, run in the same sandbox. Limits: a per-command
timeout, the attempt's deadline (then status "timeout", the partial diff kept), `max_steps` model turns,
and `max_output_bytes` per tool result. Each turn is one line of `trajectory.jsonl` in the cell folder.

The model patch is `git diff <base_commit>` of the worktree (new files included), without the files the
task's test patch touches and those grading refuses (test files, conftest.py, ...), checked with grading's own
rules in a clean checkout (`tools.validate_patch`); one over `max_patch_bytes` is refused and kept once, aside
(`trajectory.stored_patch`). Every row is written redacted (`trajectory.append_row`).

trajectory.jsonl rows (one JSON object a line; mini-swe-agent mode writes the same "step" and "end" rows):
- {"event": "start", "mode", "messages" (system + task), "tools", "time"}
- {"event": "step", "step" (1-based model turn), "mode" ("tool" | "text"), "message" (the assistant message:
  role, content, tool_calls), "reasoning", "finish_reason", "usage", "note" (optional), "time",
  "actions": [{"tool", "arguments", "tool_call_id", "output" (as shown to the model), "exit_code",
  "duration_s", "error", "timed_out", "submitted"}]}
- {"event": "end", "exit_reason" ("submitted" | "max_steps" | "stopped" | "context_length" | "timeout" |
  "malformed" | "provider_error" | "error"), "status", "error", "steps", "tool_calls", "patch_bytes", "notes", "time"}

The loop ends by raising an `exceptions.AgentExit` (a normal finish included); `run` takes the diff, and
`exceptions.outcome_for` turns the ending into the status.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from swelab.generate.agents.base import AttemptContext, AttemptOutcome
from swelab.generate.agents.exceptions import (
    AgentBug,
    AgentExit,
    AttemptTimeout,
    LimitsExceeded,
    Malformed,
    Progress,
    SandboxMissing,
    Submitted,
    as_exit,
    call_exit,
    judge_patch,
    outcome_for,
)
from swelab.generate.agents.tools import (
    DEFAULT_TOOLS,
    SUBMIT_SENTINEL,
    Toolbelt,
    ToolResult,
    extract_patch,
    paths_of_test_patch,
    validate_patch,
    which_python,
)
from swelab.generate.agents.trajectory import TRAJECTORY, append_row, stored_patch
from swelab.generate.providers import ProviderError, open_program
from swelab.generate.providers.errors import one_line
from swelab.sandbox import SandboxUnavailable, require_bwrap

MAX_NO_ACTION_TURNS = 3  # consecutive turns without a usable action before the loop gives up
_BASH_BLOCK = re.compile(r"```(?:bash|sh|shell|mswea_bash_command)[ \t]*\n(.*?)```", re.DOTALL)

TOOL_SYSTEM_PROMPT = """\
You are a careful software engineer. You fix an issue in the Python repository checked out in the \
current directory, working only through the tools you are given. Commands run in a sandbox with no \
network; each one is stopped after {command_timeout:g} seconds and its output is cut to {max_output} bytes.

Rules:
- Change the non-test source files so that the issue is resolved; keep the change small and in the style \
of the code base. Changes to the task's test files are discarded.
- Explore first (list_dir, search, read_file), then edit (str_replace, write_file), then check \
(run_python, run_tests, git_diff).
- When the fix is complete, call submit. You have at most {max_steps} turns."""

TEXT_SYSTEM_PROMPT = """\
You are a careful software engineer. You fix an issue in the Python repository checked out in the \
current directory by running shell commands. Commands run in a sandbox with no network; each one is stopped after \
{command_timeout:g} seconds and its output is cut to {max_output} bytes. Each command runs in a new shell \
in the repository root.

Every reply must contain a short THOUGHT and exactly ONE fenced bash block with ONE command \
(commands may be chained with && or ||), like this:

THOUGHT: I need to see the package layout.

```bash
ls -R | head -50
```

Rules:
- Change the non-test source files so that the issue is resolved; keep the change small. Edit files with \
sed, python, or cat <<'EOF' > file. Changes to the task's test files are discarded.
- When the fix is complete, run exactly: echo {sentinel}
You have at most {max_steps} turns."""

INSTANCE_PROMPT = """\
<issue>
{problem_statement}
</issue>

The repository is the current directory of every command; paths are relative to it. Resolve the issue."""

FORMAT_REMINDER_TOOLS = (
    "No tool was called. Use the tools to inspect and change the repository, and call submit when done."
)
FORMAT_REMINDER_TEXT = (
    "Your reply must contain exactly one fenced ```bash block with one command (found {n}). "
    "To finish, run: echo " + SUBMIT_SENTINEL
)


@dataclass
class LoopState:
    steps: int = 0
    tool_calls: int = 0
    no_action_turns: int = 0
    text_mode: bool = False
    notes: list[str] = field(default_factory=list)


def parse_bash_blocks(content: str | None) -> list[str]:
    return [block.strip() for block in _BASH_BLOCK.findall(content or "")]


def render_observation(result: ToolResult) -> str:
    """Text-mode observation, in mini-swe-agent's tags."""
    code = "killed (timeout)" if result.timed_out else result.exit_code
    return f"<returncode>{code}</returncode>\n<output>\n{result.output}\n</output>"


def prepare_environment(instance: dict, ctx: AttemptContext, model: Any) -> tuple[dict, list[Path], str | None]:
    """Sandbox env and read-only paths for the instance's Python environment, when the workspace has one.

    Returns (env, ro_paths, note); on failure the system Python is used and the note says why."""
    if not model.options.use_environment or ctx.workspace is None:
        return {}, [], None
    getter = getattr(ctx.workspace, "environment", None)
    if getter is None:
        return {}, [], None
    try:
        environment = getter(instance)
    except Exception as exc:  # noqa: BLE001 - a missing environment degrades to the system python
        return {}, [], f"instance environment unavailable ({type(exc).__name__}: {exc}); using system python"
    bin_dir = Path(environment.path) / "bin"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
           "VIRTUAL_ENV": str(environment.path), **dict(getattr(environment, "variables", ()))}
    readable = getattr(environment, "readable_paths", None)
    return env, readable() if readable else [Path(environment.path)], None


def final_patch(worktree: Path, instance: dict, max_bytes: int) -> tuple[str, str | None]:
    """(model patch, reason grading would not apply it, or None)."""
    exclude = paths_of_test_patch(instance.get("test_patch"))
    patch = extract_patch(worktree, instance["base_commit"], exclude)
    return patch, validate_patch(worktree, instance["base_commit"], patch, instance, max_bytes)


def record_end(trajectory: Path, end: BaseException, progress: Progress, notes: list[str]) -> AttemptOutcome:
    """The attempt's outcome for its ending, with the trajectory's `end` row (exit reason and status)."""
    outcome = outcome_for(end, progress)
    append_row(trajectory, {
        "event": "end", "exit_reason": as_exit(end).exit_reason, "status": outcome.status, "error": outcome.error,
        "steps": outcome.steps, "tool_calls": outcome.tool_calls, "patch_bytes": len(outcome.model_patch),
        "notes": notes, "time": time.time(),
    })
    return outcome


class SandboxedAgent:
    """What the agents that run model commands share: their model entry, and no run without a sandbox."""

    mode = "shell"

    def __init__(self, model: Any):
        self.model = model

    def require_sandbox(self) -> None:
        try:
            require_bwrap()
        except SandboxUnavailable as exc:
            raise SandboxMissing(f"{self.mode} mode needs a sandbox: {exc}") from exc

    def run(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        """No sandbox, no run; every ending (an exit raised by the loop, or one before it: no worktree, no
        package) becomes the outcome through exceptions.outcome_for."""
        try:
            self.require_sandbox()
            return self._attempt(instance, ctx)
        except Exception as end:  # noqa: BLE001 - every ending is mapped, never lost
            return outcome_for(end)

    def _attempt(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        raise NotImplementedError


class ShellAgent(SandboxedAgent):
    mode = "shell"

    def _attempt(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        cell_dir = Path(ctx.cell_dir)
        state = LoopState(text_mode=not self.model.options.tool_calling)
        progress = Progress()
        end: BaseException = AgentBug("the shell loop returned without an ending")  # a guard: _loop raises
        # a repository of the base commit alone: the agent's commands cannot reach the upstream fix
        with ctx.workspace.worktree(instance, history=False) as worktree:
            try:
                with open_program(self.model, cell_dir, instance["instance_id"], ctx.attempt) as client:
                    try:
                        self._loop(instance, ctx, client, Path(worktree), state)
                    finally:
                        progress.count_calls(client)
            except Exception as exc:  # noqa: BLE001 - every ending: a finish, a provider failure, a crash
                end = exc
            progress.steps, progress.tool_calls = state.steps, state.tool_calls
            progress.n_calls = progress.n_calls or state.steps
            cap = self.model.options.max_patch_bytes
            try:
                patch, invalid = final_patch(Path(worktree), instance, cap)
                progress.model_patch = stored_patch(cell_dir, patch, cap)  # over the cap: kept once, aside
            except Exception as exc:  # noqa: BLE001
                invalid = one_line(f"could not take the diff: {type(exc).__name__}: {exc}")
        return record_end(cell_dir / TRAJECTORY, judge_patch(end, invalid), progress, state.notes)

    # -- the loop -------------------------------------------------------------------------------------
    def _loop(self, instance: dict, ctx: AttemptContext, client: Any, worktree: Path, state: LoopState) -> NoReturn:
        params = ctx.params
        command_timeout = float(getattr(params, "command_timeout_s", 25.0) or 25.0)
        max_output = self.model.options.max_output_bytes
        max_steps = int(getattr(self.model, "max_steps", 30) or 30)
        env, ro_paths, note = prepare_environment(instance, ctx, self.model)
        if note:
            state.notes.append(note)
        tools = self.model.options.tools or DEFAULT_TOOLS
        belt = Toolbelt(
            worktree, base_commit=instance["base_commit"],
            exclude_from_patch=paths_of_test_patch(instance.get("test_patch")),
            command_timeout_s=command_timeout, max_output_bytes=max_output, env=env, ro_paths=ro_paths,
            python=which_python(env), tools=tools,
        )
        # No absolute path in the prompts: worktree names are random, prompts should repeat across attempts.
        fmt = {"command_timeout": command_timeout, "max_output": max_output,
               "max_steps": max_steps, "sentinel": SUBMIT_SENTINEL}
        system = (TEXT_SYSTEM_PROMPT if state.text_mode else TOOL_SYSTEM_PROMPT).format(**fmt)
        messages: list[dict] = [
            {"role": "system", "content": system},
            {"role": "user", "content": INSTANCE_PROMPT.format(
                problem_statement=instance.get("problem_statement", "").strip())},
        ]
        trajectory = Path(ctx.cell_dir) / TRAJECTORY
        append_row(trajectory, {"event": "start", "mode": "text" if state.text_mode else "tool",
                                "messages": messages, "tools": list(tools), "time": time.time()})
        while True:
            if time.monotonic() >= ctx.deadline:
                raise AttemptTimeout("attempt deadline reached")
            if state.steps >= max_steps:
                state.notes.append(f"step limit ({max_steps}) reached without submit")
                raise LimitsExceeded(exit_reason="max_steps")
            try:
                result = client.complete(messages, tools=None if state.text_mode else belt.schemas(),
                                         deadline=ctx.deadline)
            except ProviderError as exc:
                raise call_exit(exc, state.steps, ctx.deadline) from exc
            state.steps += 1
            message = _clean_message(result.message)
            messages.append(message)
            row: dict[str, Any] = {
                "event": "step", "step": state.steps, "mode": "text" if state.text_mode else "tool",
                "message": message, "reasoning": getattr(result, "reasoning", None),
                "finish_reason": result.finish_reason, "usage": result.usage, "actions": [],
                "time": time.time(),
            }
            end = self._act(message, belt, ctx, messages, state, row)
            append_row(trajectory, row)  # the step's row first, then the ending
            if end is not None:
                raise end

    def _act(self, message: dict, belt: Toolbelt, ctx: AttemptContext, messages: list[dict],
             state: LoopState, row: dict) -> AgentExit | None:
        """Carry out the model's turn; the ending when the loop should end, else None."""
        calls = message.get("tool_calls") or []
        if calls and not state.text_mode:
            state.no_action_turns = 0
            for call in calls:
                function = call.get("function") or {}
                name, arguments = function.get("name"), function.get("arguments")
                result = belt.call(name, arguments, timeout_s=ctx.deadline - time.monotonic())
                state.tool_calls += 1
                messages.append({"role": "tool", "tool_call_id": call.get("id"), "content": result.output})
                row["actions"].append(_action_row(name, arguments, result, call.get("id")))
            return self._submitted(belt)
        if calls:  # text mode: unanswered tool calls would make the next request invalid
            messages[-1] = {k: v for k, v in messages[-1].items() if k != "tool_calls"}
        blocks = parse_bash_blocks(message.get("content"))
        if len(blocks) == 1:
            if not state.text_mode:
                # The model wrote a bash block instead of calling a tool: it likely has no tool support.
                state.text_mode = True
                row["note"] = "no tool call but one bash block: switched to the plain-text protocol"
                state.notes.append(f"text fallback at step {state.steps}")
            state.no_action_turns = 0
            result = belt.call("bash", {"command": blocks[0]}, timeout_s=ctx.deadline - time.monotonic())
            state.tool_calls += 1
            shown = render_observation(result)
            messages.append({"role": "user", "content": shown})
            row["actions"].append(_action_row("bash", {"command": blocks[0]}, result, None, shown))
            return self._submitted(belt)
        state.no_action_turns += 1
        reminder = FORMAT_REMINDER_TEXT.format(n=len(blocks)) if state.text_mode else FORMAT_REMINDER_TOOLS
        row["note"] = f"no usable action ({len(blocks)} bash blocks, no tool call)"
        if state.no_action_turns >= MAX_NO_ACTION_TURNS:
            # A model that stops acting after working is done; one that never acted is malformed.
            if state.tool_calls:
                return LimitsExceeded(exit_reason="stopped")
            return Malformed(f"no usable action in {MAX_NO_ACTION_TURNS} consecutive turns")
        messages.append({"role": "user", "content": reminder})
        return None

    @staticmethod
    def _submitted(belt: Toolbelt) -> AgentExit | None:
        return Submitted() if belt.submitted else None


def _clean_message(message: dict) -> dict:
    """The assistant message as it goes back into the history (empty tool_calls dropped: APIs refuse [])."""
    out: dict[str, Any] = {"role": message.get("role") or "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out


def _action_row(name: Any, arguments: Any, result: ToolResult, call_id: str | None,
                shown: str | None = None) -> dict:
    return {
        "tool": name, "arguments": arguments, "tool_call_id": call_id,
        "output": result.output if shown is None else shown,  # exactly what the model saw
        "exit_code": result.exit_code, "duration_s": result.duration_s, "error": result.error,
        "timed_out": result.timed_out, "submitted": result.submitted,
    }
