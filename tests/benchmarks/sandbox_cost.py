"""The sandbox's cost per evaluation: the 10 bundled gold patches graded sandboxed and not, in the same run.

    .venv/bin/python tests/benchmarks/sandbox_cost.py [--rounds N]

"Not sandboxed" runs the same eval script with plain bash in the worktree (trusted gold patches only: this is
a measurement, never a grading path). Every verdict must be resolved either way. Prints one line per mode and
the ratio (docs/BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from swelab import minibench, sandbox
from swelab.evaluate import local
from swelab.workspace.repos import Workspace


def unsandboxed(worktree: Path, script: str, env: dict, timeout_s: float, limits=None) -> tuple[str, bool]:
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as handle:
        handle.write(script)
    try:
        done = subprocess.run(["bash", handle.name], cwd=worktree, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout_s)
        return done.stdout.decode(errors="replace"), False
    finally:
        Path(handle.name).unlink()


def grade_all(tasks: list[dict], workspace: Workspace) -> list[float]:
    seconds = []
    for task in tasks:
        started = time.perf_counter()
        verdict = local.evaluate_local(task, task["patch"], workspace, timeout_s=300)
        seconds.append(time.perf_counter() - started)
        if not verdict.resolved:
            sys.exit(f"{task['instance_id']}: the gold patch did not resolve:\n{verdict.log[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 10 tasks per mode, alternated")
    args = parser.parse_args()
    problem = sandbox.sandbox_problem(evaluation=True)
    if problem:
        sys.exit(f"no evaluation sandbox here: {problem}")
    tasks = minibench.load_tasks()
    workspace = Workspace(Path(tempfile.mkdtemp(prefix="swelab-bench-")))
    for task in tasks:  # mirrors and environments first: not part of either measurement
        workspace.environment(task)
        workspace.ensure_commit(task["repo"], task["base_commit"])
    sandboxed_run = local.run_eval_script
    times: dict[str, list[float]] = {"sandboxed": [], "not sandboxed": []}
    for _ in range(args.rounds):
        for mode in times:
            local.run_eval_script = sandboxed_run if mode == "sandboxed" else unsandboxed
            times[mode] += grade_all(tasks, workspace)
    local.run_eval_script = sandboxed_run
    print(f"limits in force: {sandbox.limits_in_force()}")
    for mode, values in times.items():
        print(f"{mode:>14}: {len(values)} gradings, median {statistics.median(values):.3f} s, "
              f"mean {statistics.mean(values):.3f} s per evaluation (all resolved)")
    ratio = statistics.median(times["sandboxed"]) / statistics.median(times["not sandboxed"])
    extra = statistics.median(times["sandboxed"]) - statistics.median(times["not sandboxed"])
    print(f"ratio sandboxed / not sandboxed (medians): {ratio:.2f}x, +{extra:.3f} s per evaluation")


if __name__ == "__main__":
    main()
