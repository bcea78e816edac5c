"""A job's event log: one JSON object a line in <job_dir>/events.jsonl, appended by the worker (stages, cells,
verdicts) and by the supervisor (resumed, done). Line numbers are the server-sent events' ids, so a client that
reconnects with Last-Event-ID misses nothing, across service restarts too.

Events: stage {stage} · plan {cells, reused} · cell {model, instance_id, attempt, status} · eval_plan
{predictions, graded} · verdict {model, attempt, instance_id, resolved} · resumed {reason} · done {state, error}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swelab.io import append_jsonl
from swelab.service.store import now_iso


class EventLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, kind: str, **data: Any) -> None:
        append_jsonl(self.path, {"event": kind, "time": now_iso(), **data})

    def read_from(self, offset: int) -> tuple[list[dict], int]:
        """Complete lines from byte `offset` on, and the offset after the last complete line (a line being
        written is left for the next read)."""
        if not self.path.exists():
            return [], offset
        with self.path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        events = []
        for line in data[:end].splitlines():
            if line.strip():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    events.append({"event": "unreadable", "line": line[:200].decode("utf-8", "replace")})
        return events, offset + end

    def read_all(self) -> list[dict]:
        return self.read_from(0)[0]


@dataclass
class Progress:
    """Where a job stands, from its events since the latest worker started."""

    stage: str | None = None
    cells_planned: int = 0
    cells_done: int = 0
    predictions: int | None = None
    """Predictions to grade: known once evaluation starts."""
    verdicts_done: int = 0

    @property
    def total(self) -> int:
        return self.cells_planned + (self.predictions if self.predictions is not None else self.cells_planned)

    @property
    def done(self) -> int:
        return min(self.cells_done + self.verdicts_done, self.total)

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "cells_planned": self.cells_planned, "cells_done": self.cells_done,
                "predictions": self.predictions, "verdicts_done": self.verdicts_done, "done": self.done,
                "total": self.total}


def fold(state: Progress, event: dict) -> Progress:
    """One event into the counts; a `plan` or `eval_plan` event restarts its counter (a resumed worker reports
    what it reused)."""
    kind = event.get("event")
    if kind == "stage":
        state.stage = event.get("stage")
    elif kind == "plan":
        state.cells_planned = int(event.get("cells") or 0)
        state.cells_done = int(event.get("reused") or 0)
        state.predictions, state.verdicts_done = None, 0
    elif kind == "cell":
        state.cells_done += 1
    elif kind == "eval_plan":
        state.predictions = int(event.get("predictions") or 0)
        state.verdicts_done = int(event.get("graded") or 0)
    elif kind == "verdict":
        state.verdicts_done += 1
    return state


def progress(events: list[dict]) -> Progress:
    state = Progress()
    for event in events:
        fold(state, event)
    return state
