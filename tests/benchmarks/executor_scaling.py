"""Threads against a 2-process Dask LocalCluster on the same minibench run (gold + empty + a scripted model, K=2).

    .venv/bin/python tests/benchmarks/executor_scaling.py [--workers 2] [--noop-tasks 200]

Both executors run the same params (the executor is left out of the run_id, so it is the same run), each in its own
outputs folder with a cold cache of its own, and must give identical leaderboards (time columns aside). Reported:
wall time of generate and evaluate on each, their ratio, the cluster's start-up, and the scheduling overhead per
task (a no-op task's round trip through the scheduler, against a direct call). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lib"))

import pandas.testing  # noqa: E402
from fake_openai_server import FakeOpenAIServer, ok  # noqa: E402
from scaffold import write_params  # noqa: E402

from swelab import minibench  # noqa: E402
from swelab.analyze.artifacts import leaderboards  # noqa: E402
from swelab.analyze.report import load_run  # noqa: E402
from swelab.evaluate.backends import evaluate_run  # noqa: E402
from swelab.executor import close_executors, executor_for  # noqa: E402
from swelab.generate import runner  # noqa: E402
from swelab.params import load_params  # noqa: E402
from swelab.select.instances import resolve_instances, write_run_instances  # noqa: E402

TASKS = {t["instance_id"]: t for t in minibench.load_tasks()}
TIMING = re.compile(r"wall_clock|_s_p\d+$|_s$|per_hour|per_minute")


def reply_for(request: dict) -> dict:
    """The scripted model: the reference fix for the textkit tasks, prose (malformed) for the others."""
    prompt = "\n".join(str(m.get("content")) for m in request["body"]["messages"])
    for iid, task in TASKS.items():
        if iid.startswith("minibench__textkit") and task["problem_statement"].strip() in prompt:
            return ok(f"```diff\n{task['patch']}```")
    return ok("I would change the function, but I will not write a diff.")


def params_text(server_url: str, outputs: Path, executor: str | None) -> str:
    return ("name: scaling\ndataset: minibench\ninstances: all\nattempts: 2\nworkers: 4\neval_workers: 2\n"
            f"outputs_dir: {outputs}\n" + (f"executor: {executor}\n" if executor else "")
            + "models:\n  - {name: gold, kind: gold}\n  - {name: empty, kind: empty}\n"
            f"  - {{name: scripted, kind: patch, provider: vllm, model_id: scripted, base_url: '{server_url}'}}\n")


def run(root: Path, label: str, server_url: str, executor: str | None) -> dict:
    os.environ["SWELAB_CACHE"] = str(root / f"cache-{label}")  # a cold cache each; a LocalCluster inherits it
    params = load_params(write_params(root, params_text(server_url, root / f"outputs-{label}", executor),
                                      name=f"{label}.yaml"), environ={})
    rows = resolve_instances(params)
    write_run_instances(params.run_dir, rows)
    started = time.monotonic()
    startup = 0.0
    if executor:
        executor_for(params.executor)  # started here so that its start-up is measured apart
        startup = time.monotonic() - started
    t0 = time.monotonic()
    summary = runner.generate(params, rows, progress=False)
    t1 = time.monotonic()
    evaluate_run(params, progress=False)
    t2 = time.monotonic()
    boards = leaderboards(load_run(params.run_dir))
    return {"run_id": params.run_id, "cells": summary["ran"], "by_status": summary["by_status"],
            "startup_s": round(startup, 2), "generate_s": round(t1 - t0, 2), "evaluate_s": round(t2 - t1, 2),
            "boards": {k: b[[c for c in b.columns if not TIMING.search(c)]] for k, b in boards.items()},
            "params": params}


def noop(x: int) -> int:
    return x


def overhead_per_task(params, n: int) -> dict:
    """Median round trip of a no-op task through the executor, sequential and with the cluster's width in flight."""
    executor = executor_for(params.executor)
    rounds = []
    for i in range(n):
        t = time.perf_counter()
        executor.run(noop, i, key="noop")
        rounds.append(time.perf_counter() - t)
    t = time.perf_counter()
    list(executor.map_unordered(lambda i: executor.run(noop, i, key="noop"), range(n), 8))
    parallel = time.perf_counter() - t
    return {"sequential_ms_p50": round(1000 * statistics.median(rounds), 2),
            "sequential_ms_p90": round(1000 * sorted(rounds)[int(0.9 * n)], 2),
            "throughput_tasks_per_s": round(n / parallel, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (1 thread each)")
    parser.add_argument("--noop-tasks", type=int, default=200)
    args = parser.parse_args()
    dask = f"{{kind: dask, cluster: local, workers: {args.workers}, threads_per_worker: 1}}"
    with tempfile.TemporaryDirectory(prefix="swelab-scaling-") as tmp, \
            FakeOpenAIServer([], responder=reply_for) as server:
        root = Path(tmp)
        threads = run(root, "threads", server.base_url, None)
        cluster = run(root, "dask", server.base_url, dask)
        overhead = overhead_per_task(cluster["params"], args.noop_tasks)
        close_executors()
    assert threads["run_id"] == cluster["run_id"], "the executor must not change the run"
    for name, board in threads["boards"].items():
        pandas.testing.assert_frame_equal(board.reset_index(drop=True),
                                          cluster["boards"][name].reset_index(drop=True), obj=f"leaderboard {name}")
    report = {
        "run_id": threads["run_id"], "cells": threads["cells"], "by_status": threads["by_status"],
        "machine_cpus": os.cpu_count(), "dask_workers": args.workers,
        "threads": {k: threads[k] for k in ("generate_s", "evaluate_s")},
        "dask": {k: cluster[k] for k in ("startup_s", "generate_s", "evaluate_s")},
        "wall_ratio_dask_over_threads": round((cluster["generate_s"] + cluster["evaluate_s"])
                                              / (threads["generate_s"] + threads["evaluate_s"]), 2),
        "wall_ratio_with_startup": round((cluster["startup_s"] + cluster["generate_s"] + cluster["evaluate_s"])
                                         / (threads["generate_s"] + threads["evaluate_s"]), 2),
        "noop_task_overhead": overhead,
        "leaderboards_identical": True,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
