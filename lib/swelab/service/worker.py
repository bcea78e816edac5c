"""One job in its own process (`python -m swelab.service.worker JOB_DIR --params FILE --outputs DIR`): the stages
through `jobs.execute`, events into the job's log, the outcome into outcome.json.

It stops on its own when the service that started it is gone (a restarted service resumes the run, and two
writers must never share a run folder), and on the cancel file: before the next cell while generating, at once
in the other stages (verdicts and analysis files are written atomically, so nothing is left half-done).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from swelab.io import write_json
from swelab.params import load_params
from swelab.service.events import EventLog
from swelab.service.jobs import execute

EXIT_FAILED, EXIT_CANCELLED, EXIT_ORPHANED = 1, 3, 70
OUTCOME = "outcome.json"
CANCEL = "cancel"
EVENTS = "events.jsonl"
WATCH_S = 0.2


class Control:
    """The worker's stop conditions, and the watch that acts on them outside of generation."""

    def __init__(self, job_dir: Path, parent: int):
        self.job_dir = job_dir
        self.parent = parent
        self.stage = "start"

    def cancelled(self) -> bool:
        return (self.job_dir / CANCEL).exists()

    def orphaned(self) -> bool:
        return os.getppid() != self.parent

    def should_stop(self) -> bool:
        return self.cancelled() or self.orphaned()

    def watch(self) -> None:
        while True:
            if self.orphaned():
                os._exit(EXIT_ORPHANED)
            if self.cancelled() and self.stage != "generate":
                finish(self.job_dir, {"state": "cancelled"})
                os._exit(EXIT_CANCELLED)
            time.sleep(WATCH_S)


def finish(job_dir: Path, outcome: dict[str, Any]) -> None:
    write_json(job_dir / OUTCOME, outcome)


def run(job_dir: Path, params_file: Path, outputs: Path, resume: bool) -> int:
    control = Control(job_dir, os.getppid())
    threading.Thread(target=control.watch, name="job-watch", daemon=True).start()
    events = EventLog(job_dir / EVENTS)

    def emit(kind: str, **data: Any) -> None:
        if kind == "stage":
            control.stage = data["stage"]
        events.append(kind, **data)

    try:
        # A resumed job never redoes finished cells, even when its params say force: the first worker did.
        overrides: dict[str, Any] = {"outputs_dir": str(outputs), **({"force": False} if resume else {})}
        params = load_params(params_file, overrides=overrides)
        result = execute(params, emit, control.should_stop)
    except Exception as exc:  # the job fails with the reason; the traceback goes to worker.log
        traceback.print_exc()
        finish(job_dir, {"state": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]})
        return EXIT_FAILED
    if control.orphaned():
        return EXIT_ORPHANED
    finish(job_dir, {"state": result["state"]})
    return EXIT_CANCELLED if result["state"] == "cancelled" else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swelab.service.worker", description=__doc__)
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--resume", action="store_true", help="a later worker of the same job: never force")
    args = parser.parse_args(argv)
    return run(args.job_dir, args.params, args.outputs, args.resume)


if __name__ == "__main__":
    sys.exit(main())
