"""How an attempt ends: exceptions that carry their exit reason, and the one table from an ending to a cell status.

The shape is mini-swe-agent's (`minisweagent/exceptions.py` + `DefaultAgent.run`): an agent's loop raises
one `AgentExit` when it stops, a normal finish included (`Submitted`, `LimitsExceeded`); the agent's `run`
catches whatever ended the attempt and returns `outcome_for(exc, progress)`. The runner calls the same
function on anything that escapes an agent, so every status and error kind is decided here and nowhere else:

    Finished (Submitted, LimitsExceeded)      -> ok
    Malformed                                 -> malformed
    AttemptTimeout                            -> timeout
    ProviderFailed / a bare ProviderError     -> skipped for a model-gone kind (SKIP_KINDS), else provider_error
    ModelGone                                 -> skipped (the runner's: an earlier cell found the model gone)
    SandboxMissing, AgentBug, any other error -> error

`exit_reason` is the finer word the trajectory's `end` row records ("submitted", "max_steps",
"context_length", mini-swe-agent's "LimitsExceeded", ...); the status is the coarse word the cell record keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from swelab.generate.agents.base import AttemptOutcome
from swelab.generate.providers import SKIP_KINDS, ProviderError, redact
from swelab.generate.providers.client import USAGE_KEYS
from swelab.generate.providers.errors import one_line

ERROR_LIMIT = 500  # characters of a cell's one-line error


@dataclass
class Progress:
    """What an attempt has produced so far; kept whatever way it ends (a timeout keeps its partial diff)."""

    model_patch: str = ""
    steps: int = 0
    tool_calls: int = 0
    n_calls: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    probe_files: list[str] | None = None  # a contamination probe's answer: the files it would change

    def count_calls(self, client: Any) -> None:
        """n_calls and usage from the model client's totals (a client without totals counts nothing)."""
        totals = client.totals() if hasattr(client, "totals") else {}
        self.n_calls = int(totals.get("n_calls") or 0)
        self.usage = {key: totals.get(key) for key in USAGE_KEYS}


class AgentExit(Exception):
    """An attempt ended. `error` (one line) and `kind` go into the cell record, `exit_reason` into the
    trajectory; `progress`, when the raiser knows it, is the work kept."""

    exit_reason = "error"

    def __init__(self, error: str | None = None, *, kind: str | None = None, exit_reason: str | None = None,
                 progress: Progress | None = None):
        self.error = error
        self.kind = kind
        self.exit_reason = exit_reason or type(self).exit_reason
        self.progress = progress
        super().__init__(error or self.exit_reason)


class Finished(AgentExit):
    """The agent stopped with its work so far as the answer (status ok, unless that patch is unusable)."""

    exit_reason = "finished"


class Submitted(Finished):
    """The model said it is done (a submit call, the sentinel, or patch mode's applicable diff)."""

    exit_reason = "submitted"


class LimitsExceeded(Finished):
    """The agent's budget is spent (steps, the context window, a model that stopped acting): like a submit."""

    exit_reason = "max_steps"


class Malformed(AgentExit):
    """The model's answer cannot be used: no action, or a patch that is unsafe or does not apply."""

    exit_reason = "malformed"


class AttemptTimeout(AgentExit):
    """The attempt's deadline passed (during a command or a model call)."""

    exit_reason = "timeout"


class ProviderFailed(AgentExit):
    """A model call failed for good; `kind` is the ProviderError kind."""

    exit_reason = "provider_error"

    @classmethod
    def from_error(cls, exc: ProviderError, **kwargs: Any) -> ProviderFailed:
        return cls(exc.message, kind=exc.kind, **kwargs)


class ModelGone(AgentExit):
    """Not attempted: an earlier cell of this run found the model gone (the runner raises none; it maps this)."""

    exit_reason = "model_gone"

    def __init__(self, error: str | None = None, *, kind: str | None = "model_unavailable", **kwargs: Any):
        super().__init__(error, kind=kind, **kwargs)


class SandboxMissing(AgentExit):
    """A mode that runs model commands refuses to run without the bubblewrap sandbox."""

    exit_reason = "sandbox_missing"


class AgentBug(AgentExit):
    """Our side failed (a crash in the agent, a config that cannot load): one cell's error, not the run's."""

    exit_reason = "error"

    @classmethod
    def from_exception(cls, exc: BaseException, **kwargs: Any) -> AgentBug:
        return cls(redact(f"{type(exc).__name__}: {exc}"), **kwargs)  # a crash message may quote a key


def provider_exit(exc: ProviderError, deadline: float, **kwargs: Any) -> AgentExit:
    """The ending for a model call that failed: a timeout at the attempt's deadline is the attempt's timeout."""
    if exc.kind == "timeout" and time.monotonic() >= deadline - 1.0:
        return AttemptTimeout(f"attempt deadline reached during a model call: {exc.message}", kind=exc.kind,
                              **kwargs)
    return ProviderFailed.from_error(exc, **kwargs)


def call_exit(exc: ProviderError, steps: int, deadline: float) -> AgentExit:
    """The ending for a failed model call of a multi-step agent: a conversation that outgrew the model's window
    after some steps has spent its budget, like max_steps (mini-swe-agent ends the same way), and the work so far
    is the answer; anything else is provider_exit's."""
    if exc.kind == "context_length" and steps > 0:
        return LimitsExceeded(one_line(f"context window exhausted after {steps} steps: {exc.message}"),
                              kind=exc.kind, exit_reason="context_length")
    return provider_exit(exc, deadline)


def judge_patch(end: BaseException, invalid: str | None) -> BaseException:
    """A finished attempt whose patch is unusable (`invalid` says why) is malformed; other endings stand."""
    if invalid and isinstance(end, Finished):
        return Malformed(invalid, kind=end.kind, exit_reason=end.exit_reason, progress=end.progress)
    return end


def as_exit(exc: BaseException) -> AgentExit:
    """Any exception as an AgentExit: a bare ProviderError is a provider failure, anything else a bug."""
    if isinstance(exc, AgentExit):
        return exc
    if isinstance(exc, ProviderError):
        return ProviderFailed.from_error(exc)
    return AgentBug.from_exception(exc)


def status_of(end: AgentExit) -> str:
    """THE table from an ending to a cell status (base.STATUSES)."""
    if isinstance(end, Finished):
        return "ok"
    if isinstance(end, Malformed):
        return "malformed"
    if isinstance(end, AttemptTimeout):
        return "timeout"
    if isinstance(end, ProviderFailed):
        # a model that cannot be used now: recorded with its reason, the runner skips its other cells
        return "skipped" if end.kind in SKIP_KINDS else "provider_error"
    if isinstance(end, ModelGone):
        return "skipped"
    return "error"


def outcome_for(exc: BaseException, progress: Progress | None = None) -> AttemptOutcome:
    """The attempt's outcome for whatever ended it. `progress` (else the exception's own) is the work kept."""
    end = as_exit(exc)
    kept = progress or end.progress or Progress()
    return AttemptOutcome(
        status=status_of(end),
        model_patch=kept.model_patch,
        error=one_line(end.error, ERROR_LIMIT) if end.error else None,
        error_kind=end.kind,
        steps=kept.steps,
        tool_calls=kept.tool_calls,
        n_calls=kept.n_calls,
        usage=dict(kept.usage),
        probe_files=kept.probe_files,
    )
