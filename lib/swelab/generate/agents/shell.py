"""Shell mode (`kind: shell`): the model works in a sandboxed worktree through audited tools.

The loop speaks OpenAI tool calling. Models without tool support (option `tool_calling: false`, or a
model that answers with one fenced bash block and no tool call) get the plain-text protocol of
mini-swe-agent instead: one ```bash block per turn, run in the same sandbox. Limits: a per-command
timeout, the attempt's deadline (then status "timeout", the partial diff kept), `max_steps` model turns,
and `max_output_bytes` per tool result. Each turn is one line of `trajectory.jsonl` in the cell folder.

The model patch is `git diff <base_commit>` of the worktree (new files included), without the files the
task's test patch touches, validated like a patch-mode diff (safe paths; applies to a clean tree).

trajectory.jsonl rows (one JSON object a line; mini-swe-agent mode writes the same "step" and "end" rows):
- {"event": "start", "mode", "messages" (system + task), "tools", "time"}
- {"event": "step", "step" (1-based model turn), "mode" ("tool" | "text"), "message" (the assistant message:
  role, content, tool_calls), "reasoning", "finish_reason", "usage", "note" (optional), "time",
  "actions": [{"tool", "arguments", "tool_call_id", "output" (as shown to the model), "exit_code",
  "duration_s", "error", "timed_out", "submitted"}]}
- {"event": "end", "exit_reason" ("submitted" | "max_steps" | "stopped" | "context_length" | "timeout" |
  "malformed" | "provider_error" | "error"), "status", "error", "steps", "tool_calls", "patch_bytes", "notes", "time"}
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swelab.generate.agents.base import AttemptContext, AttemptOutcome
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
from swelab.io import append_jsonl
from swelab.sandbox import SandboxUnavailable, require_bwrap

DEFAULT_MAX_OUTPUT_BYTES = 10000
MAX_NO_ACTION_TURNS = 3  # consecutive turns without a usable action before the loop gives up
_BASH_BLOCK = re.compile(r"```(?:bash|sh|shell|mswea_bash_command)[ \t]*\n(.*?)```", re.DOTALL)
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd")

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
    exit_reason: str | None = None
    error: str | None = None
    error_kind: str | None = None
    notes: list[str] = field(default_factory=list)


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def option(model: Any, name: str, default: Any) -> Any:
    options = getattr(model, "options", None) or {}
    return options.get(name, default)


def parse_bash_blocks(content: str | None) -> list[str]:
    return [block.strip() for block in _BASH_BLOCK.findall(content or "")]


def render_observation(result: ToolResult) -> str:
    """Text-mode observation, in mini-swe-agent's tags."""
    code = "killed (timeout)" if result.timed_out else result.exit_code
    return f"<returncode>{code}</returncode>\n<output>\n{result.output}\n</output>"


def prepare_environment(instance: dict, ctx: AttemptContext, model: Any) -> tuple[dict, list[Path], str | None]:
    """Sandbox env and read-only paths for the instance's Python environment, when the workspace has one.

    Returns (env, ro_paths, note); on failure the system Python is used and the note says why."""
    if not option(model, "use_environment", True) or ctx.workspace is None:
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


def usage_from_totals(totals: dict | None) -> dict:
    totals = totals or {}
    return {key: totals.get(key) for key in USAGE_KEYS}


def final_patch(worktree: Path, instance: dict) -> tuple[str, str | None]:
    """(model patch, reason it is invalid or None)."""
    exclude = paths_of_test_patch(instance.get("test_patch"))
    patch = extract_patch(worktree, instance["base_commit"], exclude)
    return patch, validate_patch(worktree, instance["base_commit"], patch)


class SandboxedAgent:
    """What the agents that run model commands share: their model entry, and no run without a sandbox."""

    mode = "shell"

    def __init__(self, model: Any):
        self.model = model

    def sandbox_missing(self) -> AttemptOutcome | None:
        try:
            require_bwrap()
        except SandboxUnavailable as exc:
            return AttemptOutcome(status="error", error=f"{self.mode} mode needs a sandbox: {exc}")
        return None


class ShellAgent(SandboxedAgent):
    mode = "shell"

    # -- entry point ----------------------------------------------------------------------------------
    def run(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        if missing := self.sandbox_missing():
            return missing
        from swelab.generate.providers import ProviderError, open_program

        cell_dir = Path(ctx.cell_dir)
        state = LoopState(text_mode=not bool(option(self.model, "tool_calling", True)))
        usage: dict = {}
        n_calls = 0
        patch = ""
        invalid: str | None = None
        with ctx.workspace.worktree(instance) as worktree:
            try:
                with open_program(self.model, cell_dir, instance["instance_id"], ctx.attempt) as client:
                    try:
                        self._loop(instance, ctx, client, Path(worktree), state)
                    finally:
                        totals = client.totals() if hasattr(client, "totals") else {}
                        usage = usage_from_totals(totals)
                        n_calls = int(totals.get("n_calls") or state.steps)
            except ProviderError as exc:  # e.g. an endpoint that cannot be resolved when the program opens
                state.exit_reason, state.error, state.error_kind = "provider_error", str(exc), exc.kind
            except Exception as exc:  # noqa: BLE001 - one attempt's crash is a cell's error, not the run's
                state.exit_reason = "error"
                state.error = one_line(f"{type(exc).__name__}: {exc}")
            try:
                patch, invalid = final_patch(Path(worktree), instance)
            except Exception as exc:  # noqa: BLE001
                invalid = one_line(f"could not take the diff: {type(exc).__name__}: {exc}")
        status = self._status(state, invalid)
        error = invalid if (invalid and status == "malformed" and not state.error) else state.error
        append_jsonl(cell_dir / "trajectory.jsonl", {
            "event": "end", "exit_reason": state.exit_reason, "status": status, "error": error,
            "steps": state.steps, "tool_calls": state.tool_calls, "patch_bytes": len(patch),
            "notes": state.notes, "time": time.time(),
        })
        return AttemptOutcome(status=status, model_patch=patch, error=error, error_kind=state.error_kind,
                              steps=state.steps, tool_calls=state.tool_calls, n_calls=n_calls, usage=usage)

    @staticmethod
    def _status(state: LoopState, invalid: str | None) -> str:
        reason = state.exit_reason
        if reason == "timeout":
            return "timeout"
        if reason == "provider_error":
            return "provider_error"
        if reason == "error":
            return "error"
        if invalid or reason == "malformed":
            return "malformed"
        return "ok"

    # -- the loop -------------------------------------------------------------------------------------
    def _loop(self, instance: dict, ctx: AttemptContext, client: Any, worktree: Path, state: LoopState) -> None:
        from swelab.generate.providers import ProviderError

        params = ctx.params
        command_timeout = float(getattr(params, "command_timeout_s", 25.0) or 25.0)
        max_output = int(option(self.model, "max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES))
        max_steps = int(getattr(self.model, "max_steps", 30) or 30)
        env, ro_paths, note = prepare_environment(instance, ctx, self.model)
        if note:
            state.notes.append(note)
        tools = option(self.model, "tools", None) or DEFAULT_TOOLS
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
        trajectory = Path(ctx.cell_dir) / "trajectory.jsonl"
        append_jsonl(trajectory, {"event": "start", "mode": "text" if state.text_mode else "tool",
                                  "messages": messages, "tools": list(tools), "time": time.time()})
        while True:
            if time.monotonic() >= ctx.deadline:
                state.exit_reason = "timeout"
                state.error = "attempt deadline reached"
                return
            if state.steps >= max_steps:
                state.exit_reason = "max_steps"
                state.notes.append(f"step limit ({max_steps}) reached without submit")
                return
            try:
                result = client.complete(messages, tools=None if state.text_mode else belt.schemas(),
                                         deadline=ctx.deadline)
            except ProviderError as exc:
                if exc.kind == "timeout" and time.monotonic() >= ctx.deadline - 1.0:
                    state.exit_reason, state.error = "timeout", "attempt deadline reached during a model call"
                elif exc.kind == "context_length" and state.steps > 0:
                    # The conversation outgrew the model's window: the agent's budget is spent, like
                    # max_steps (mini-swe-agent ends the same way); the work so far is the answer.
                    state.exit_reason, state.error_kind = "context_length", exc.kind
                    state.error = one_line(f"context window exhausted after {state.steps} steps: {exc.message}")
                else:
                    state.exit_reason, state.error, state.error_kind = "provider_error", str(exc), exc.kind
                return
            state.steps += 1
            message = _clean_message(result.message)
            messages.append(message)
            row: dict[str, Any] = {
                "event": "step", "step": state.steps, "mode": "text" if state.text_mode else "tool",
                "message": message, "reasoning": getattr(result, "reasoning", None),
                "finish_reason": result.finish_reason, "usage": result.usage, "actions": [],
                "time": time.time(),
            }
            done = self._act(message, belt, ctx, messages, state, row)
            append_jsonl(trajectory, row)
            if done:
                return

    def _act(self, message: dict, belt: Toolbelt, ctx: AttemptContext, messages: list[dict],
             state: LoopState, row: dict) -> bool:
        """Carry out the model's turn; True when the loop should end."""
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
            return self._submitted(belt, state)
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
            return self._submitted(belt, state)
        state.no_action_turns += 1
        reminder = FORMAT_REMINDER_TEXT.format(n=len(blocks)) if state.text_mode else FORMAT_REMINDER_TOOLS
        row["note"] = f"no usable action ({len(blocks)} bash blocks, no tool call)"
        if state.no_action_turns >= MAX_NO_ACTION_TURNS:
            # A model that stops acting after working is done; one that never acted is malformed.
            state.exit_reason = "stopped" if state.tool_calls else "malformed"
            if not state.tool_calls:
                state.error = f"no usable action in {MAX_NO_ACTION_TURNS} consecutive turns"
            return True
        messages.append({"role": "user", "content": reminder})
        return False


    @staticmethod
    def _submitted(belt: Toolbelt, state: LoopState) -> bool:
        if belt.submitted:
            state.exit_reason = "submitted"
        return belt.submitted


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
