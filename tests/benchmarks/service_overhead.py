"""The service's overhead per cell against the library in process and against `swelab run`, on the same params.

    .venv/bin/python tests/benchmarks/service_overhead.py [--instances 10] [--attempts 2] [--no-cli]

One params file (gold + empty on bundled tasks), one run id, three executions into fresh run folders after a
warm-up run has built the environments and filled a private verdict cache, so each execution does the same work:
  library   swelab.service.jobs.execute in this process (select -> generate -> evaluate -> analyze);
  service   POST /jobs to a `swelab service` subprocess, then its server-sent events to `done` (submit to done:
            a worker process, its imports, the event log, HTTP); the service's own start is reported apart;
  swelab run  the four notebooks through papermill (`--no-cli` leaves it out).
Their leaderboards are compared without the columns that measure time. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "lib"))

import httpx  # noqa: E402
import pandas as pd  # noqa: E402

from swelab import minibench  # noqa: E402
from swelab.client import Client  # noqa: E402
from swelab.params import load_params  # noqa: E402
from swelab.service.jobs import execute  # noqa: E402

TOKEN = "benchmark-token"
TIMING = re.compile(r"^(wall_clock_|attempt_s_|call_s_|ttft)|per_(hour|minute|second)$")


def params_text(instances: list[str], attempts: int, outputs: Path | None = None) -> str:
    text = (f"name: overhead\ndataset: minibench\ninstances: [{', '.join(instances)}]\nattempts: {attempts}\n"
            "models:\n  - {name: gold, kind: gold}\n  - {name: empty, kind: empty}\n")
    return text + (f"outputs_dir: {outputs}\n" if outputs else "")


def board(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "leaderboard.csv")
    return frame.drop(columns=[c for c in frame.columns if TIMING.search(c)])


def timed_library(params_file: Path, outputs: Path) -> tuple[float, Path]:
    params = load_params(params_file, overrides={"outputs_dir": str(outputs)})
    start = time.perf_counter()
    result = execute(params)
    assert result["state"] == "finished", result
    return time.perf_counter() - start, params.run_dir


def timed_cli(params_file: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "swelab.cli", "run", str(params_file)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - start


def timed_service(params_file: Path, outputs: Path, log: Path) -> tuple[float, float, float, str]:
    """Seconds from start to /health answering, from submit to the job's done event, and from submit to its
    first event (the worker process started and imported the library: a cost per job, not per cell); the run
    id the service gave."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SWELAB_SERVICE_TOKEN": TOKEN}
    start = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "swelab.cli", "service", "--port", str(port), "--outputs",
                                 str(outputs)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise SystemExit(f"the service exited: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        started = time.perf_counter() - start
        with Client(url, token=TOKEN) as client:
            first: list[float] = []
            submitted = time.perf_counter()
            job = client.submit(params_file)
            final = client.wait(job["job_id"], on_event=lambda _: first.append(time.perf_counter()))
            seconds = time.perf_counter() - submitted
            assert final["state"] == "finished", final
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return started, seconds, first[0] - submitted, job["run_id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10, help="bundled tasks (at most 10)")
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--no-cli", action="store_true", help="leave out `swelab run` (papermill)")
    args = parser.parse_args(argv)
    ids = sorted(t["instance_id"] for t in minibench.load_tasks())[: args.instances]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        os.environ["SWELAB_CACHE"] = str(tmp / "cache")  # private and shared by all three (and the service)
        params_file = tmp / "overhead.yaml"
        params_file.write_text(params_text(ids, args.attempts))
        cells = len(ids) * args.attempts * 2
        timed_library(params_file, tmp / "warm")  # environments and verdicts, once for all
        library_s, library_dir = timed_library(params_file, tmp / "library")
        started_s, service_s, first_s, run_id = timed_service(params_file, tmp / "service", tmp / "service.log")
        if run_id != library_dir.name:
            print(f"note: the service named the run {run_id}, this process {library_dir.name} (code changed?)")
        boards = {"library": board(library_dir), "service": board(tmp / "service" / run_id)}
        cli_s = None
        if not args.no_cli:
            cli_file = tmp / "cli" / "overhead.yaml"
            cli_file.parent.mkdir()
            cli_file.write_text(params_text(ids, args.attempts, tmp / "cli-outputs"))
            cli_s = timed_cli(cli_file)
            boards["swelab run"] = board(next((tmp / "cli-outputs").iterdir()))
    same = all(frame.equals(boards["library"]) for frame in boards.values())
    print(f"params: gold + empty, {len(ids)} bundled tasks, {args.attempts} attempts: {cells} cells, run {run_id}")
    print(f"{'execution':<12} {'wall s':>7} {'ms/cell':>8} {'overhead ms/cell':>17} {'ratio':>6}")
    rows = [("library", library_s), ("service", service_s)] + ([("swelab run", cli_s)] if cli_s else [])
    for name, seconds in rows:
        print(f"{name:<12} {seconds:>7.2f} {1000 * seconds / cells:>8.1f} "
              f"{1000 * (seconds - library_s) / cells:>17.1f} {seconds / library_s:>6.2f}")
    print(f"service, from submit to its first event (worker start, once per job): {first_s:.2f} s; "
          f"after it: {1000 * (service_s - first_s - library_s) / cells:.1f} ms/cell over the library")
    if cli_s:
        print(f"service / swelab run: {service_s / cli_s:.2f}")
    print(f"service start (to /health): {started_s:.2f} s, not in the service's row")
    print(f"leaderboards identical (timing columns aside): {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
