"""`kind: mini-swe-agent`: mini-swe-agent's own `DefaultAgent` and prompts, on our model client and sandbox.

mini-swe-agent (PyPI `mini-swe-agent`) is driven through its Python API. Two classes plug it into swelab:
- `ChatClientModel`: its Model protocol over our `ChatClient`, so every call goes through our retries,
  calls.jsonl, usage capture and ThunderAgent program_id (never through litellm);
- `SandboxEnvironment`: its Environment protocol over `run_sandboxed`, in the instance's worktree.

Prompts and observation templates come from the installed package's SWE-bench configs
(`swebench.yaml` with tool calling, `swebench_backticks.yaml` for models without it), with /testbed
replaced by the worktree path. The model patch is the agent's submission (mini-swe-agent's own rule)
when it is a valid patch, else the worktree diff; the task's test files are left out either way.

Endings: mini's own exit statuses (Submitted, LimitsExceeded, TimeExceeded, RepeatedFormatError) become
our `exceptions` endings with mini's word as the exit reason; a failed model call raises our ending from
`ChatClientModel.query` through mini's loop. `exceptions.outcome_for` decides the status.

Both trajectories (ours, trajectory.jsonl, and mini's own, mini_trajectory.json) are written redacted, through
`trajectory`; the patch is checked with grading's rules and the size cap, as in shell mode.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import unidiff
import yaml

from swelab.generate.agents.base import AttemptContext, AttemptOutcome
from swelab.generate.agents.exceptions import (
    AgentBug,
    AgentExit,
    AttemptTimeout,
    Finished,
    LimitsExceeded,
    Malformed,
    Progress,
    Submitted,
    call_exit,
    judge_patch,
)
from swelab.generate.agents.shell import SandboxedAgent, prepare_environment, record_end
from swelab.generate.agents.tools import (
    SUBMIT_SENTINEL,
    extract_patch,
    graded_away,
    paths_of_test_patch,
    validate_patch,
)
from swelab.generate.agents.trajectory import MINI_TRAJECTORY, TRAJECTORY, append_row, stored_patch, write_document
from swelab.generate.providers import ProviderError, open_program
from swelab.generate.providers.errors import one_line
from swelab.sandbox import run_sandboxed

# Files the mini-swe-agent prompt asks the model to create; never part of a worktree-diff patch.
MINI_SCRATCH_FILES = frozenset({"patch.txt"})
DEFAULT_CONFIGS = {True: "swebench.yaml", False: "swebench_backticks.yaml"}


def _import_minisweagent():
    """Import lazily and quietly: the package prints a banner and creates a config dir at import time."""
    os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")
    import minisweagent  # noqa: F401

    return minisweagent


def load_mini_config(tool_calling: bool, override: str | None, root: Path) -> dict:
    """The mini-swe-agent config (agent + model sections): a packaged SWE-bench config, or a YAML path."""
    minisweagent = _import_minisweagent()
    if override:
        path = Path(override)
        if not path.is_file():
            path = Path(minisweagent.package_dir) / "config" / "benchmarks" / override
    else:
        path = Path(minisweagent.package_dir) / "config" / "benchmarks" / DEFAULT_CONFIGS[tool_calling]
    if not path.is_file():
        raise FileNotFoundError(f"mini-swe-agent config {override or path} not found (option mini_config)")
    # The packaged prompts name the Docker image's checkout; ours is the worktree.
    config = _replace_strings(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, "/testbed", str(root))
    for section in ("agent", "model"):
        if not isinstance(config.get(section), dict):
            raise ValueError(f"mini-swe-agent config {path}: missing section {section!r}")
    return config


def _replace_strings(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {key: _replace_strings(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_strings(item, old, new) for item in value]
    return value


class ChatClientModel:
    """mini-swe-agent's Model protocol on a swelab ChatClient."""

    def __init__(self, client: Any, *, deadline: float, tool_calling: bool, model_config: dict):
        self.client = client
        self.deadline = deadline
        self.tool_calling = tool_calling
        self.observation_template = model_config["observation_template"]
        self.format_error_template = model_config.get("format_error_template", "{{ error }}")
        self.action_regex = model_config.get("action_regex", r"```mswea_bash_command\s*\n(.*?)\n```")
        self.config = SimpleNamespace(tool_calling=tool_calling)
        self.replies = 0  # model calls answered so far

    def query(self, messages: list[dict], **kwargs: Any) -> dict:
        from minisweagent.exceptions import FormatError
        from minisweagent.models.utils.actions_text import parse_regex_actions
        from minisweagent.models.utils.actions_toolcall import BASH_TOOL, parse_toolcall_actions

        prepared = [{k: v for k, v in message.items() if k != "extra"} for message in messages]
        try:
            result = self.client.complete(prepared, tools=[BASH_TOOL] if self.tool_calling else None,
                                          deadline=self.deadline)
        except ProviderError as exc:  # our ending, raised through mini's loop (not one of its flow exceptions)
            raise call_exit(exc, self.replies, self.deadline) from exc
        self.replies += 1
        message: dict[str, Any] = {"role": "assistant", "content": result.message.get("content")}
        if result.message.get("tool_calls"):
            message["tool_calls"] = result.message["tool_calls"]
        extra = {"cost": float(result.usage.get("cost_usd") or 0.0), "usage": result.usage,
                 "finish_reason": result.finish_reason, "timestamp": time.time()}
        try:
            if self.tool_calling:
                calls = [_as_object(call) for call in message.get("tool_calls") or []]
                actions = parse_toolcall_actions(calls, format_error_template=self.format_error_template,
                                                 template_kwargs={"finish_reason": result.finish_reason})
            else:
                actions = parse_regex_actions(message.get("content") or "", action_regex=self.action_regex,
                                              format_error_template=self.format_error_template,
                                              template_kwargs={"finish_reason": result.finish_reason})
        except FormatError as exc:
            exc.messages[0].setdefault("extra", {}).update(extra, response=message)
            raise
        message["extra"] = {"actions": actions, **extra}
        return message

    def format_message(self, **kwargs: Any) -> dict:
        return dict(kwargs)

    def format_observation_messages(self, message: dict, outputs: list[dict],
                                    template_vars: dict | None = None) -> list[dict]:
        from minisweagent.models.utils.actions_text import format_observation_messages
        from minisweagent.models.utils.actions_toolcall import format_toolcall_observation_messages

        if self.tool_calling:
            return format_toolcall_observation_messages(
                actions=message.get("extra", {}).get("actions", []), outputs=outputs,
                observation_template=self.observation_template, template_vars=template_vars)
        return format_observation_messages(outputs, observation_template=self.observation_template,
                                           template_vars=template_vars)

    def get_template_vars(self, **kwargs: Any) -> dict:
        return {"tool_calling": self.tool_calling, **kwargs}

    def serialize(self) -> dict:
        return {"info": {"config": {"model": {"tool_calling": self.tool_calling},
                                    "model_type": f"{__name__}.{type(self).__name__}"}}}


class SandboxEnvironment:
    """mini-swe-agent's Environment protocol on run_sandboxed. Template vars hold no environment
    variables (mini's LocalEnvironment merges os.environ into them; ours must never see a key)."""

    def __init__(self, worktree: Path, *, command_timeout_s: float, max_output_bytes: int, deadline: float,
                 env: dict | None = None, ro_paths: list[Path] | None = None):
        self.worktree = Path(worktree)
        self.command_timeout_s = float(command_timeout_s)
        self.max_output_bytes = int(max_output_bytes)
        self.deadline = deadline
        self.env = dict(env or {})
        self.ro_paths = list(ro_paths or [])
        self.records: list[dict] = []  # one per executed action, for trajectory.jsonl
        self.config = SimpleNamespace(cwd=str(self.worktree), timeout=self.command_timeout_s)

    def execute(self, action: dict, cwd: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        from minisweagent.exceptions import Submitted

        command = action.get("command", "")
        limit = max(0.1, min(timeout or self.command_timeout_s, self.deadline - time.monotonic()))
        result = run_sandboxed(command, self.worktree, limit, self.max_output_bytes, self.env,
                               ro_paths=self.ro_paths)
        output: dict[str, Any] = {
            "output": result.output,
            "returncode": -1 if result.timed_out else result.exit_code,
            "exception_info": f"the command ran past the {limit:g} s limit and was killed"
            if result.timed_out else "",
        }
        self.records.append({"tool": "bash", "arguments": {"command": command},
                             "tool_call_id": action.get("tool_call_id"), "output": result.output,
                             "exit_code": result.exit_code, "duration_s": result.duration_s,
                             "error": False, "timed_out": result.timed_out, "submitted": False})
        lines = result.output.lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == SUBMIT_SENTINEL and result.exit_code == 0:
            submission = "".join(lines[1:])
            self.records[-1]["submitted"] = True
            raise Submitted({"role": "exit", "content": submission,
                             "extra": {"exit_status": "Submitted", "submission": submission}})
        return output

    def get_template_vars(self, **kwargs: Any) -> dict[str, Any]:
        return {"cwd": str(self.worktree), "timeout": self.command_timeout_s, **kwargs}

    def serialize(self) -> dict:
        return {"info": {"config": {"environment": {"cwd": str(self.worktree),
                                                    "timeout": self.command_timeout_s},
                                    "environment_type": f"{__name__}.{type(self).__name__}"}}}


def _as_object(call: dict) -> SimpleNamespace:
    function = call.get("function") or {}
    return SimpleNamespace(id=call.get("id"), function=SimpleNamespace(
        name=function.get("name"), arguments=function.get("arguments") or ""))


def _make_agent_class():
    from minisweagent.agents.default import DefaultAgent
    from minisweagent.exceptions import FormatError, TimeExceeded

    class DeadlineAgent(DefaultAgent):
        """DefaultAgent that stops at our monotonic deadline and writes one trajectory line per step."""

        def __init__(self, model: Any, env: SandboxEnvironment, *, deadline: float, trajectory: Path,
                     **kwargs: Any):
            super().__init__(model, env, **kwargs)
            self.deadline = deadline
            self.trajectory = trajectory

        def query(self) -> dict:
            if time.monotonic() >= self.deadline:
                raise TimeExceeded({"role": "exit", "content": "TimeExceeded",
                                    "extra": {"exit_status": "TimeExceeded", "submission": ""}})
            return super().query()

        def step(self) -> list[dict]:
            first_record = len(self.env.records)
            row: dict[str, Any] = {"event": "step", "step": self.n_calls + 1, "mode": "mini-swe-agent",
                                   "message": None, "actions": [], "time": time.time()}
            calls_before = self.n_calls
            try:
                message = self.query()
                row["message"] = {k: v for k, v in message.items() if k != "extra"}
                row["finish_reason"] = message.get("extra", {}).get("finish_reason")
                row["usage"] = message.get("extra", {}).get("usage")
                return self.execute_actions(message)
            except FormatError as exc:
                row["note"] = "format error: " + str(exc.messages[0].get("content", ""))[:300]
                response = exc.messages[0].get("extra", {}).get("response")
                row["message"] = response
                raise
            finally:
                row["actions"] = self.env.records[first_record:]
                if self.n_calls > calls_before:  # a model call happened (not the deadline check)
                    append_row(self.trajectory, row)

    return DeadlineAgent


def _submission_patch(submission: str, exclude: set[str]) -> str:
    """The submitted patch without the task's test files (unidiff round trip); "" when unparseable."""
    if not submission.strip():
        return ""
    try:
        parsed = unidiff.PatchSet(submission)
    except unidiff.UnidiffParseError:
        return ""
    kept = [str(patched) for patched in parsed if patched.path not in exclude and not graded_away(patched.path)]
    return "".join(kept)


def mini_ending(exit_status: str) -> AgentExit:
    """mini-swe-agent's exit status as our ending; its word stays the exit reason."""
    if exit_status == "Submitted":
        return Submitted(exit_reason=exit_status)
    if exit_status == "LimitsExceeded":
        return LimitsExceeded(exit_reason=exit_status)
    if exit_status == "TimeExceeded":
        return AttemptTimeout("attempt deadline reached", exit_reason=exit_status)
    if exit_status == "RepeatedFormatError":
        return Malformed("repeated format errors (no usable action)", exit_reason=exit_status)
    return Finished(exit_reason=exit_status or None)  # another way mini stops by itself: its work is the answer


class MiniSweAgent(SandboxedAgent):
    mode = "mini-swe-agent"

    def _attempt(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        _import_minisweagent()
        from minisweagent.exceptions import FormatError  # noqa: F401 - fail early if the API moved

        cell_dir = Path(ctx.cell_dir)
        tool_calling = self.model.options.tool_calling
        command_timeout = float(getattr(ctx.params, "command_timeout_s", 25.0) or 25.0)
        max_output = self.model.options.max_output_bytes
        exclude = paths_of_test_patch(instance.get("test_patch"))
        progress = Progress()
        end: BaseException = AgentBug("mini-swe-agent returned without an ending")  # replaced below
        submission = ""
        # a repository of the base commit alone: the agent's commands cannot reach the upstream fix
        with ctx.workspace.worktree(instance, history=False) as worktree:
            worktree = Path(worktree)
            env_vars, ro_paths, note = prepare_environment(instance, ctx, self.model)
            environment = SandboxEnvironment(worktree, command_timeout_s=command_timeout,
                                             max_output_bytes=max_output, deadline=ctx.deadline,
                                             env=env_vars, ro_paths=ro_paths)
            agent = None
            try:
                config = load_mini_config(tool_calling, self.model.options.mini_config, worktree)
                with open_program(self.model, cell_dir, instance["instance_id"], ctx.attempt) as client:
                    model = ChatClientModel(client, deadline=ctx.deadline, tool_calling=tool_calling,
                                            model_config=config["model"])
                    agent_config = {k: v for k, v in config["agent"].items()
                                    if k in ("system_template", "instance_template",
                                             "max_consecutive_format_errors")}
                    agent = _make_agent_class()(
                        model, environment, deadline=ctx.deadline, trajectory=cell_dir / TRAJECTORY,
                        step_limit=int(getattr(self.model, "max_steps", 30) or 30),
                        cost_limit=float(self.model.options.cost_limit), **agent_config)
                    try:
                        exit_info = agent.run(task=instance.get("problem_statement", "")) or {}
                    finally:
                        progress.count_calls(client)
                submission = exit_info.get("submission", "")
                end = mini_ending(exit_info.get("exit_status", ""))
            except Exception as exc:  # noqa: BLE001 - our endings raised through mini's loop, or a crash
                end = exc
            if agent is not None:
                progress.steps = agent.n_calls
                write_document(cell_dir / MINI_TRAJECTORY, agent.serialize())
            progress.tool_calls = len(environment.records)
            cap = self.model.options.max_patch_bytes
            patch, invalid = self._patch(worktree, instance, submission, exclude, cap)
            progress.model_patch = stored_patch(cell_dir, patch, cap)  # over the cap: kept once, aside
        return record_end(cell_dir / TRAJECTORY, judge_patch(end, invalid), progress, [note] if note else [])

    @staticmethod
    def _patch(worktree: Path, instance: dict, submission: str, exclude: set[str],
               max_bytes: int) -> tuple[str, str | None]:
        """The submission when grading would apply it, else the worktree diff (without mini's patch.txt)."""
        base = instance["base_commit"]
        submitted = _submission_patch(submission, exclude)
        if submitted and validate_patch(worktree, base, submitted, instance, max_bytes) is None:
            return submitted, None
        try:
            patch = extract_patch(worktree, base, exclude | MINI_SCRATCH_FILES)
        except Exception as exc:  # noqa: BLE001
            return "", one_line(f"could not take the diff: {type(exc).__name__}: {exc}")
        return patch, validate_patch(worktree, base, patch, instance, max_bytes)
