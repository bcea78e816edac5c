"""The contamination probe (`kind: probe`): from the issue text alone, name the file(s) to change.

The model sees the repository's name and the problem statement, never its code nor a file list. A model that
names the gold patch's files far more often on SWE-bench than on minibench (written for this project, so in no
training set) remembers the benchmark rather than reasoning about the code (the published probe: 76 % on
SWE-bench Verified against 53 % on repositories outside it). Analysis scores the named files against the gold
patch's (swelab.analyze.metrics.probe_scores); this agent only asks and records.

The named files go into the trajectory's last row (`role: probe`, `probe_files`) and, through the runner, into
the cell's `probe_files`; the cell submits no patch, so evaluation never grades it (AgentSpec.produces_patch).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NoReturn

from swelab.diffs import unsafe_reason
from swelab.generate.agents.base import AttemptContext, AttemptOutcome
from swelab.generate.agents.exceptions import AgentBug, Malformed, Progress, Submitted, outcome_for, provider_exit
from swelab.generate.agents.trajectory import TRAJECTORY, append_row
from swelab.generate.providers import ProviderError, open_program

MAX_FILES = 10  # more than this is a list of guesses, not an answer: the rest are dropped
SYSTEM_PROMPT = (
    "You are an expert software engineer. Given only a GitHub issue of a repository, name the file(s) of that "
    "repository you would change to resolve it. You cannot see the code."
)
USER_TEMPLATE = """Repository: {repo}

<issue>
{issue}
</issue>

Which files would you change to resolve this issue? Answer with their paths relative to the repository root,
one per line, inside one ```text fenced block, and nothing else. Example:

```text
pkg/module.py
```
"""
_FENCE = re.compile(r"```[A-Za-z]*\n(.*?)```", re.DOTALL)
# a path-like token: at least one name with an extension, or a/b style folders (no spaces)
_PATH = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-][\w.-]*\.[A-Za-z0-9]+)(?![\w/])")


def build_messages(repo: str, issue: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_TEMPLATE.format(repo=repo or "(unknown)", issue=issue.strip())}]


def _clean(path: str) -> str:
    path = re.sub(r"^(?:[-*+]|\d+[.)])\s+", "", path.strip())  # list markers
    path = path.strip("`'\"*,;:()[]<> ")
    path = path.removeprefix("./")
    if path[:2] in ("a/", "b/") and "/" in path[2:]:
        path = path[2:]
    return path


def parse_files(reply: str) -> list[str]:
    """The file paths a reply names, in order, without duplicates: the lines of its first fenced block when
    it has one, else every path-like token of the reply; anything that would leave a repository is dropped."""
    fenced = _FENCE.search(reply or "")
    if fenced:
        candidates = [_clean(line) for line in fenced.group(1).splitlines()]
        candidates = [c for c in candidates if c and " " not in c]
    else:
        candidates = [_clean(m.group(1)) for m in _PATH.finditer(reply or "")]
    files = [c for c in dict.fromkeys(candidates) if c and unsafe_reason(c) is None]
    return files[:MAX_FILES]


class ProbeAgent:
    """One call, one answer: the files named, or `malformed` when the reply names none."""

    mode = "probe"

    def __init__(self, model: Any):
        self.model = model

    def run(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        progress = Progress()
        try:
            with open_program(self.model, ctx.cell_dir, instance["instance_id"], ctx.attempt) as client:
                try:
                    self._ask(instance, ctx, client, progress)
                finally:
                    progress.count_calls(client)
        except Exception as end:  # noqa: BLE001 - every ending, a crash included, becomes this cell's outcome
            return outcome_for(end, progress)
        return outcome_for(AgentBug("the probe returned without an ending"), progress)  # a guard: it raises

    def _ask(self, instance: dict, ctx: AttemptContext, client: Any, progress: Progress) -> NoReturn:
        trajectory = Path(ctx.cell_dir) / TRAJECTORY
        messages = build_messages(instance.get("repo", ""), instance.get("problem_statement", ""))
        append_row(trajectory, {"step": 0, "role": "prompt", "messages": messages})
        try:
            result = client.complete(messages, deadline=ctx.deadline)
        except ProviderError as exc:
            raise provider_exit(exc, ctx.deadline) from exc
        progress.steps = 1
        reply = result.message.get("content") or ""
        files = parse_files(reply)
        append_row(trajectory, {"step": 1, "role": "assistant", "content": reply,
                                  "finish_reason": result.finish_reason})
        append_row(trajectory, {"step": 1, "role": "probe", "probe_files": files})
        if not files:
            raise Malformed("the reply names no file path")
        progress.probe_files = files
        raise Submitted()
