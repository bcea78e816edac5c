"""`executor: {kind: dask}`: the demo-like run (minibench, gold + empty + a scripted model) on a real LocalCluster of
two worker processes gives the threaded run's leaderboard; a worker killed mid-attempt costs nothing; the
generation notebook runs with a Dask executor.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from multiprocessing import resource_tracker
from pathlib import Path

import pandas.testing
import pytest
from fake_openai_server import FakeOpenAIServer, ok
from scaffold import write_params

from swelab import minibench
from swelab.analyze.artifacts import leaderboards
from swelab.analyze.report import load_run
from swelab.evaluate.backends import evaluate_run
from swelab.executor import LOCAL, close_executors, executor_for
from swelab.generate import runner
from swelab.io import read_jsonl
from swelab.params import ParamsError, load_params
from swelab.rundir import RunLayout
from swelab.sandbox import bwrap_available
from swelab.select.instances import resolve_instances, write_run_instances

pytest.importorskip("distributed")
pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed (tests/ensure_bwrap.sh)")

PROJECT = Path(__file__).resolve().parents[1]
INSTANCES = ["minibench__ledger-1", "minibench__textkit-1", "minibench__textkit-2", "minibench__unitkit-1"]
DASK = "{kind: dask, cluster: local, workers: 2, threads_per_worker: 1}"
TIMING = re.compile(r"wall_clock|_s_p\d+$|_s$|per_hour|per_minute")  # columns that measure time, not results
TASKS = {t["instance_id"]: t for t in minibench.load_tasks()}


@pytest.fixture(autouse=True)
def _fresh_cluster():
    """Each test starts its own LocalCluster (its workers inherit the test's SWELAB_CACHE), closed afterwards."""
    yield
    close_executors()


@pytest.fixture(scope="module", autouse=True)
def _no_resource_tracker_left():
    """LocalCluster's worker processes start multiprocessing's resource tracker, which would outlive the module
    (and conftest's check that tests leave no process behind): stopped once the clusters are closed."""
    yield
    close_executors()
    resource_tracker._resource_tracker._stop()


def reply_for(request: dict) -> dict:
    """The scripted model: the reference fix for textkit-1, a diff that does not apply for textkit-2, prose else."""
    prompt = "\n".join(str(m.get("content")) for m in request["body"]["messages"])
    if TASKS["minibench__textkit-1"]["problem_statement"].strip() in prompt:
        return ok(f"```diff\n{TASKS['minibench__textkit-1']['patch']}```")
    if TASKS["minibench__textkit-2"]["problem_statement"].strip() in prompt:
        return ok("```diff\n--- a/nowhere.py\n+++ b/nowhere.py\n@@ -1 +1 @@\n-a\n+b\n```")
    return ok("I would change the function, but I will not write a diff.")


def demo_params(root: Path, name: str, server_url: str, executor: str | None = None):
    text = (f"name: {name}\ndataset: minibench\ninstances: [{', '.join(INSTANCES)}]\nattempts: 2\nworkers: 4\n"
            + (f"executor: {executor}\n" if executor else "")
            + "models:\n  - {name: gold, kind: gold}\n  - {name: empty, kind: empty}\n"
            f"  - {{name: scripted, kind: patch, provider: vllm, model_id: scripted, base_url: '{server_url}',"
            " options: {max_concurrency: 1}}\n")
    return load_params(write_params(root, text, name=f"{name}.yaml"), environ={})


def run_all(params) -> dict:
    rows = resolve_instances(params)
    write_run_instances(params.run_dir, rows)
    summary = runner.generate(params, rows, progress=False)
    evaluate_run(params, progress=False)
    return summary


def comparable(run_dir: Path) -> dict:
    """The run's leaderboards without the columns that measure time."""
    boards = leaderboards(load_run(run_dir))
    return {name: board[[c for c in board.columns if not TIMING.search(c)]].reset_index(drop=True)
            for name, board in boards.items()}


def assert_same_boards(left: dict, right: dict) -> None:
    assert sorted(left) == sorted(right) and left
    for name in left:
        pandas.testing.assert_frame_equal(left[name], right[name], obj=f"leaderboard {name}")


@pytest.fixture(scope="module")
def threaded(tmp_path_factory) -> dict:
    """The reference: the same run on threads, with a cache of its own."""
    root = tmp_path_factory.mktemp("threads")
    with pytest.MonkeyPatch.context() as patch, FakeOpenAIServer([], responder=reply_for) as server:
        patch.setenv("SWELAB_CACHE", str(root / "cache"))
        params = demo_params(root, "threads", server.base_url)
        summary = run_all(params)
    assert summary["by_status"] == {"malformed": 6, "ok": 18}  # 4 gold + 4 empty + 1 scripted ok, twice
    return comparable(params.run_dir)


def test_the_dask_executor_gives_the_threaded_leaderboard(tmp_path, cache_dir, threaded):
    with FakeOpenAIServer([], responder=reply_for) as server:
        params = demo_params(tmp_path, "dask", server.base_url, DASK)
        summary = run_all(params)
        executor = executor_for(params.executor)
        assert len(executor.worker_pids()) == 2 and len(set(executor.worker_pids().values())) == 2
    assert summary["ran"] == 24 and summary["by_status"] == {"malformed": 6, "ok": 18}
    assert_same_boards(comparable(params.run_dir), threaded)
    # the workers built what they used under their own SWELAB_CACHE, and nothing was written beside the run folder
    assert (cache_dir / "envs").is_dir() and (cache_dir / "verdicts").is_dir()
    layout = RunLayout(params.run_dir)
    calls = read_jsonl(layout.calls_path("scripted", "minibench__textkit-1", 1))
    assert len(calls) == 1 and calls[0]["prompt_tokens"] is not None  # the attempt's calls came back


def test_a_worker_killed_mid_attempt_costs_only_that_attempt_and_a_rerun_changes_nothing(tmp_path, cache_dir,
                                                                                         threaded):
    lock, held, killed = threading.Lock(), threading.Event(), threading.Event()
    seen = {"requests": 0, "in_flight": 0, "most_in_flight": 0, "victim": None}

    def responder(request: dict) -> dict:
        with lock:
            seen["requests"] += 1
            seen["in_flight"] += 1
            seen["most_in_flight"] = max(seen["most_in_flight"], seen["in_flight"])
            hold = seen["requests"] == 2
        try:
            if hold:  # the second scripted request waits (bounded) until its worker has been killed
                held.set()
                killed.wait(60)
            return reply_for(request)
        finally:
            with lock:
                seen["in_flight"] -= 1

    def kill_the_worker_holding_it(executor) -> None:
        if not held.wait(120):
            return
        executing = executor.client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
        victim = next(addr for addr, keys in executing.items() if any(k.startswith("attempt-scripted-") for k in keys))
        os.kill(executor.worker_pids()[victim], signal.SIGKILL)
        seen["victim"] = victim
        killed.set()

    with FakeOpenAIServer([], responder=responder) as server:
        params = demo_params(tmp_path, "killed", server.base_url, DASK)
        killer = threading.Thread(target=kill_the_worker_holding_it, args=(executor_for(params.executor),))
        killer.start()
        try:
            summary = run_all(params)
        finally:
            killed.set()
            killer.join(timeout=130)
        assert seen["victim"] is not None, "no scripted attempt was in flight to kill"
        assert seen["most_in_flight"] == 1  # max_concurrency 1 held across both worker processes
        assert summary["ran"] == 24 and summary["by_status"] == {"malformed": 6, "ok": 18}  # retried elsewhere
        again = run_all(params)
    assert again["ran"] == 0 and again["reused"] == 24
    layout = RunLayout(params.run_dir)
    cells = layout.cells()
    assert len(cells) == 24 and len({(c.model, c.instance_id, c.attempt) for c in cells}) == 24
    for cell in (c for c in cells if c.model == "scripted"):  # the killed attempt's call was lost with its worker
        assert len(read_jsonl(layout.calls_path(cell.model, cell.instance_id, cell.attempt))) == cell.n_calls == 1
    assert not list(layout.cells_dir.rglob("calls.prev-*.jsonl"))
    assert_same_boards(comparable(params.run_dir), threaded)


def test_the_generation_notebook_runs_with_a_dask_executor(tmp_path, cache_dir):
    path = write_params(tmp_path, f"name: nb\ndataset: minibench\ninstances: [{INSTANCES[1]}]\nattempts: 1\n"
                        f"executor: {DASK}\nmodels:\n  - {{name: gold, kind: gold}}\n"
                        "  - {name: empty, kind: empty}\n")
    out = tmp_path / "02.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", str(PROJECT / "notebooks" / "02_generate.ipynb"),
                           str(out), "-p", "params_file", str(path), "--cwd", str(PROJECT), "--no-progress-bar"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Dask dashboard" in out.read_text() and "http://127.0.0.1:" in out.read_text()
    params = load_params(path, environ={})
    assert sorted((c.model, c.status) for c in RunLayout(params.run_dir).cells()) == [("empty", "ok"), ("gold", "ok")]


@pytest.mark.parametrize("executor, problem", [
    ("{kind: dask}", "exactly one of address"),
    ("{kind: dask, cluster: local, address: 'tcp://h:8786'}", "exactly one of address"),
    ("{kind: dask, address: 'h:8786'}", "tcp://HOST:8786"),
    ("{kind: dask, address: 'tcp://h:8786', workers: 2}", "sizes a cluster: local"),
    ("{kind: dask, cluster: slurm}", "executor.cluster"),
    ("{kind: dask, cluster: local, workers: 0}", "executor.workers"),
    ("{kind: local, workers: 2}", "kind local takes no other field"),
    ("{kind: ray}", "executor.kind"),
    ("{kind: dask, cluster: local, memory: 4GB}", "executor.memory"),
])
def test_an_executor_entry_is_checked_and_named(tmp_path, executor, problem):
    path = write_params(tmp_path, f"name: x\nexecutor: {executor}\nmodels:\n  - {{name: gold, kind: gold}}\n")
    with pytest.raises(ParamsError, match=re.escape(problem)):
        load_params(path, environ={})


def test_the_executor_does_not_change_the_run_id(tmp_path):
    plain = write_params(tmp_path, "name: x\nmodels:\n  - {name: gold, kind: gold}\n", name="a.yaml")
    dask = write_params(tmp_path, f"name: x\nexecutor: {DASK}\nmodels:\n  - {{name: gold, kind: gold}}\n",
                        name="b.yaml")
    assert load_params(plain, environ={}).run_id == load_params(dask, environ={}).run_id
    assert load_params(dask, environ={}).executor.workers == 2


class LosingExecutor:
    """A remote executor whose workers keep dying: every task raises what Dask raises past its retries."""

    kind, remote = "dask", True

    def map_unordered(self, fn, items, width):
        return LOCAL.map_unordered(fn, items, width)

    def run(self, fn, *args, key, affinity=None):
        raise RuntimeError(f"KilledWorker: attempted to run task {key} on 3 different workers")

    def semaphore(self, name, limit):
        return LOCAL.semaphore(name, limit)


def test_a_task_lost_on_the_cluster_is_an_error_cell_with_its_reason_never_a_lost_one(tmp_path, cache_dir,
                                                                                      monkeypatch):
    monkeypatch.setattr(runner, "executor_for", lambda config: LosingExecutor())
    path = write_params(tmp_path, f"name: lost\ndataset: minibench\ninstances: [{INSTANCES[0]}]\nattempts: 2\n"
                        f"executor: {DASK}\nmodels:\n  - {{name: gold, kind: gold}}\n")
    params = load_params(path, environ={})
    summary = runner.generate(params, resolve_instances(params), progress=False)
    assert summary["by_status"] == {"error": 2}
    cells = RunLayout(params.run_dir).cells()
    assert len(cells) == 2 and all("KilledWorker" in c.error for c in cells)
