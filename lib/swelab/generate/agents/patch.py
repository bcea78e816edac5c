"""Patch mode: one prompt with the issue and retrieved code, one unified diff back.

The reply must be a diff only; diff_extract pulls it out, repairs what models commonly get wrong
(hunk counts, a/ b/ prefixes) and tries it in the worktree with grading's own rules and the size cap. A reply
that still does not apply is `malformed`: a run failure, kept apart from a patch that applies but does not fix
the issue. The trajectory is written redacted (`trajectory.append_row`).
Optional repair rounds (options.repair_rounds) feed the apply error back to the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from swelab.generate.agents.base import AttemptContext, AttemptOutcome
from swelab.generate.agents.context import build_context
from swelab.generate.agents.diff_extract import prepare_patch
from swelab.generate.agents.exceptions import AgentBug, Malformed, Progress, Submitted, outcome_for, provider_exit
from swelab.generate.agents.trajectory import TRAJECTORY, append_row
from swelab.generate.providers import ProviderError, open_program

SYSTEM_PROMPT = (
    "You are an expert software engineer. You resolve GitHub issues by writing a patch for the repository. "
    "Reply with a single unified diff in the format of `git diff`, inside one ```diff fenced block, "
    "and nothing else."
)

USER_TEMPLATE = """<issue>
{issue}
</issue>

<code>
{code}
</code>

Write a unified diff that resolves the issue.
- File paths are relative to the repository root, with a/ and b/ prefixes.
- Each hunk starts with @@ -start,count +start,count @@ and keeps about 3 unchanged context lines,
  copied exactly (including indentation) from the code above.
- Answer with the diff only. Example of the format:

```diff
--- a/pkg/module.py
+++ b/pkg/module.py
@@ -10,3 +10,3 @@ def example():
     value = compute()
-    return value - 1
+    return value + 1
```
"""

REPAIR_TEMPLATE = (
    "Your patch cannot be used: {reason}\n"
    "Reply with a corrected unified diff only, inside one ```diff fenced block."
)


def build_messages(issue: str, code: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(issue=issue.strip(), code=code or "(no code retrieved)")},
    ]


class PatchAgent:
    mode = "patch"

    def __init__(self, model: Any):
        self.model = model
        self.repair_rounds = model.options.repair_rounds
        # a prompt over the model's window is retried with half the code context, this many times
        self.shrink_retries = model.options.context_shrink_retries

    def run(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        """`_attempt` always ends by raising (Submitted, Malformed, a provider ending); the status is
        outcome_for's."""
        progress = Progress()
        try:
            with ctx.workspace.worktree(instance) as worktree:
                with open_program(self.model, ctx.cell_dir, instance["instance_id"], ctx.attempt) as client:
                    try:
                        self._attempt(instance, ctx, worktree, client, progress)
                    finally:
                        progress.count_calls(client)
        except Exception as end:  # noqa: BLE001 - every ending, a crash included, becomes this cell's outcome
            return outcome_for(end, progress)
        return outcome_for(AgentBug("the patch loop returned without an ending"), progress)  # a guard: it raises

    def _prompt(self, instance: dict, worktree: Path, budget: int, trajectory: Path) -> list[dict]:
        code = build_context(
            worktree,
            instance.get("problem_statement", ""),
            mode=getattr(self.model, "context", "bm25") or "bm25",
            budget_tokens=budget,
            gold_patch=instance.get("patch"),
        )
        messages = build_messages(instance.get("problem_statement", ""), code.text)
        append_row(trajectory, {"step": 0, "role": "prompt", "messages": messages, "context_files": code.files,
                                "context_tokens": code.tokens, "context_budget_tokens": budget})
        return messages

    def _attempt(self, instance: dict, ctx: AttemptContext, worktree: Path, client: Any,
                 progress: Progress) -> NoReturn:
        trajectory = Path(ctx.cell_dir) / TRAJECTORY
        budget = int(getattr(self.model, "context_budget_tokens", 6000) or 6000)
        messages = self._prompt(instance, worktree, budget, trajectory)
        shrinks = 0
        rounds = 0
        while True:
            try:
                result = client.complete(messages, deadline=ctx.deadline)
            except ProviderError as exc:
                if exc.kind != "context_length" or rounds > 0 or shrinks >= self.shrink_retries:
                    progress.steps = int(client.totals().get("n_calls") or 0)  # every call, the failed ones too
                    raise provider_exit(exc, ctx.deadline) from exc
                shrinks += 1
                budget //= 2
                messages = self._prompt(instance, worktree, budget, trajectory)
                continue
            rounds += 1
            progress.steps = rounds
            reply = result.message.get("content") or ""
            extracted = prepare_patch(reply, worktree, row=instance, max_bytes=self.model.options.max_patch_bytes)
            # redacted: a reply echoing a secret (a misbehaving gateway) must not carry it into a file
            append_row(trajectory, {"step": rounds, "role": "assistant", "content": reply,
                                    "reasoning": result.reasoning, "finish_reason": result.finish_reason,
                                    "patch_ok": extracted.ok, "reason": extracted.reason,
                                    "apply_method": extracted.method})
            if extracted.ok:
                progress.model_patch = extracted.patch
                raise Submitted()
            if rounds > self.repair_rounds:
                reason = extracted.reason or "unusable reply"
                if result.finish_reason == "length":
                    reason += " (the reply was cut at max_output)"
                raise Malformed(reason)
            messages = [*messages, {"role": "assistant", "content": reply},
                        {"role": "user", "content": REPAIR_TEMPLATE.format(reason=extracted.reason)}]
