"""Grouped vs naive local evaluation of the bundled tasks' gold patches, measured in one run.

grouped: one bare mirror per repo and one environment per (repo, version), reused across instances,
         a fresh worktree per (instance, patch) — what swelab does.
naive:   a fresh clone and a fresh environment for every instance.

Both run serially on the same machine in the same process, so the ratio isolates the grouping.
Usage: .venv/bin/python tests/benchmarks/eval_grouping.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from swelab import minibench
from swelab.evaluate.local import evaluate_local
from swelab.workspace.repos import Workspace


def run_grouped(tasks: list[dict], sources: dict, cache: Path) -> float:
    started = time.perf_counter()
    workspace = Workspace(cache, sources)
    for task in tasks:
        assert evaluate_local(task, task["patch"], workspace).resolved, task["instance_id"]
    return time.perf_counter() - started


def run_naive(tasks: list[dict], sources: dict, cache: Path) -> float:
    started = time.perf_counter()
    for i, task in enumerate(tasks):
        workspace = Workspace(cache / f"fresh-{i}", sources)  # fresh clone + fresh environment
        assert evaluate_local(task, task["patch"], workspace).resolved, task["instance_id"]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tasks = minibench.load_tasks()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # Source repos are built once up front: both strategies clone from the same place.
        sources = {t["repo"]: str(minibench.repo_source(t["repo"], tmp_path / "src")) for t in tasks}
        grouped, naive = [], []
        for round_ in range(args.rounds):
            grouped.append(run_grouped(tasks, sources, tmp_path / f"g{round_}"))
            naive.append(run_naive(tasks, sources, tmp_path / f"n{round_}"))
    g, n = statistics.median(grouped), statistics.median(naive)
    print(f"tasks: {len(tasks)}, rounds: {args.rounds}")
    print(f"grouped (mirror + env per repo/version): median {g:.2f} s  {[round(x, 2) for x in grouped]}")
    print(f"naive (fresh clone + env per instance):  median {n:.2f} s  {[round(x, 2) for x in naive]}")
    print(f"ratio naive/grouped: {n / g:.2f}x")


if __name__ == "__main__":
    main()
