"""What every agent receives and returns for one attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from swelab.params import RunParams
    from swelab.workspace.repos import Workspace

STATUSES = ("ok", "malformed", "timeout", "provider_error", "skipped", "error")


@dataclass
class AttemptContext:
    cell_dir: Path  # where calls.jsonl and trajectory.jsonl of this attempt go
    attempt: int  # 1-based
    deadline: float  # time.monotonic() value after which the attempt must stop
    params: RunParams
    workspace: Workspace


@dataclass
class AttemptOutcome:
    status: str
    model_patch: str = ""
    error: str | None = None
    error_kind: str | None = None
    steps: int = 0
    tool_calls: int = 0
    n_calls: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    probe_files: list[str] | None = None  # kind probe: the files the model named from the issue text alone


class Agent(Protocol):
    """`run` returns the outcome of every ending, built by `exceptions.outcome_for` (its loop raises an
    `exceptions.AgentExit` to stop); whatever escapes it is mapped by the runner with the same function."""

    mode: str

    def run(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome: ...
