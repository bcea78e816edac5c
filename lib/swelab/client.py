"""A client of `swelab service`: `Client` for Python, `swelab submit PARAMS.yaml --url URL` for the shell.

    client = Client("http://127.0.0.1:8765")          # token from SWELAB_SERVICE_TOKEN
    job = client.submit("params/demo.yaml")
    final = client.wait(job["job_id"])                 # follows the server-sent events
    results = client.results(job["job_id"])            # the run's tidy frames, as swelab.analyze.results gives

`results` downloads the run's records (cells, calls, verdicts, manifest, leaderboard) into a local folder and
reads them with swelab.analyze.results, so the frames are the ones a notebook on the service's machine would get.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from tqdm.auto import tqdm

from swelab.analyze import results as tidy
from swelab.service.events import Progress, fold

TOKEN_ENV = "SWELAB_SERVICE_TOKEN"
RECONNECT_S = 120.0  # how long a follower waits for a restarting service before it gives up
TERMINAL = ("finished", "failed", "cancelled")
SUMMARY_COLUMNS = ("model", "attempted", "attempts", "resolved", "pass@1", "run_failure_rate", "note")


class ServiceError(RuntimeError):
    """The service refused a request or could not be reached; `status` is the HTTP status (0: unreachable)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]


@dataclass
class Results:
    """A run's tidy frames, read from a local copy of its records."""

    run_dir: Path
    cells: pd.DataFrame
    calls: pd.DataFrame
    verdicts: pd.DataFrame
    attempts: pd.DataFrame
    leaderboard: pd.DataFrame | None


def is_record(path: str) -> bool:
    """The files `results` needs: the records, not the trajectories, logs, notebooks or charts."""
    if path in ("manifest.json", "instances.jsonl", "leaderboard.csv") or path.startswith("predictions/"):
        return True
    if path.startswith("cells/"):
        return path.endswith(".json") or path.endswith("/calls.jsonl")
    if path.startswith("eval/"):
        return path.endswith("/meta.json") or path.endswith("/report.json") or path == "eval/discrimination.json"
    return False


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """Server-sent events from the lines of a stream (comments and keep-alives skipped)."""
    event_id, kind, data = 0, "message", []
    for line in lines:
        if line == "":
            if data:
                yield Event(event_id, kind, json.loads("\n".join(data)))
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id" and value.isdigit():
                event_id = int(value)
            elif name == "event":
                kind = value
            elif name == "data":
                data.append(value)


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        token = token or os.environ.get(TOKEN_ENV, "")
        if not token:
            raise ServiceError(0, f"no token: set {TOKEN_ENV} (the service's bearer token)")
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceError(0, f"{self.url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServiceError(response.status_code, str(detail))
        return response

    # -- jobs -------------------------------------------------------------------------------------------
    def submit(self, params: str | Path | dict[str, Any], file_name: str | None = None) -> dict[str, Any]:
        """A params file (path), a params document (text), or a mapping; returns {job_id, run_id, state,
        existing}. The file's name goes along: a params file without `name` is named after it, as locally."""
        if isinstance(params, dict):
            body, file_name = json.dumps(params).encode(), file_name or "params.json"
        elif isinstance(params, Path) or (isinstance(params, str) and "\n" not in params
                                           and params.endswith((".yaml", ".yml", ".json"))):
            path = Path(params)  # a missing file is an error here, never sent as a document
            body, file_name = path.read_bytes(), file_name or path.name
        else:
            body = str(params).encode()
        query = {"filename": file_name} if file_name else {}
        return self._request("POST", "/jobs", content=body, params=query,
                             headers={"Content-Type": "application/yaml"}).json()

    def submit_predictions(self, path: str | Path, model: str | None = None, dataset: str = "minibench",
                           split: str | None = None, name: str | None = None,
                           eval_backend: str | None = None) -> dict[str, Any]:
        """An evaluation-only job for a predictions file (SWE-bench JSONL, preds.json, OpenHands output.jsonl)."""
        path = Path(path)
        query = {k: v for k, v in {"predictions": path.name, "model": model, "dataset": dataset, "split": split,
                                   "name": name, "eval_backend": eval_backend}.items() if v is not None}
        return self._request("POST", "/jobs", content=path.read_bytes(), params=query,
                             headers={"Content-Type": "application/octet-stream"}).json()

    def jobs(self) -> list[dict[str, Any]]:
        return self._request("GET", "/jobs").json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/jobs/{job_id}").json()

    # -- following ----------------------------------------------------------------------------------------
    def events(self, job_id: str, after: int = 0, reconnect_s: float = RECONNECT_S) -> Iterator[Event]:
        """The job's events from `after` on, until it is done; a dropped stream (a restarting service) is
        resumed from the last event seen, for up to `reconnect_s` without news."""
        last, deadline = after, time.monotonic() + reconnect_s
        while True:
            try:
                with self._http.stream("GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(last)},
                                       timeout=httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise ServiceError(response.status_code, response.text)
                    for event in parse_sse(response.iter_lines()):
                        last, deadline = max(last, event.id), time.monotonic() + reconnect_s
                        yield event
                        if event.kind in ("done", "end"):
                            return
            except httpx.TransportError as exc:  # a restarting service drops the stream
                if time.monotonic() > deadline:
                    raise ServiceError(0, f"{self.url}: lost the event stream of job {job_id}: {exc}") from exc
            if time.monotonic() > deadline:
                raise ServiceError(0, f"{self.url}: the event stream of job {job_id} keeps ending early")
            time.sleep(0.5)

    def wait(self, job_id: str, on_event: Callable[[Event], None] | None = None,
             reconnect_s: float = RECONNECT_S) -> dict[str, Any]:
        """Follow the job's events to the end; returns the job (with its leaderboard when finished)."""
        for event in self.events(job_id, reconnect_s=reconnect_s):
            if on_event is not None:
                on_event(event)
        deadline = time.monotonic() + 30
        job = self.job(job_id)
        while job["state"] not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)  # the done event is written just before the store says so
            job = self.job(job_id)
        return job

    # -- artifacts ------------------------------------------------------------------------------------------
    def files(self, job_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/jobs/{job_id}/files").json()

    def artifact(self, job_id: str, path: str) -> bytes:
        return self._request("GET", f"/jobs/{job_id}/artifacts/{path}").content

    def download(self, job_id: str, dest: str | Path, select: Callable[[str], bool] = is_record) -> Path:
        """The run folder's files that `select` keeps, copied under `dest`."""
        dest = Path(dest)
        for entry in self.files(job_id):
            if select(entry["path"]):
                target = dest / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.artifact(job_id, entry["path"]))
        return dest

    def results(self, job_id: str, dest: str | Path | None = None) -> Results:
        """The run's frames (cells, calls, verdicts, attempts) and leaderboard, from a local copy of its
        records (a temporary folder unless `dest` is given)."""
        run_dir = self.download(job_id, dest or tempfile.mkdtemp(prefix=f"swelab-{job_id}-"))
        board = run_dir / "leaderboard.csv"
        return Results(run_dir=run_dir, cells=tidy.load_cells(run_dir), calls=tidy.load_calls(run_dir),
                       verdicts=tidy.load_verdicts(run_dir), attempts=tidy.attempt_table(run_dir),
                       leaderboard=pd.read_csv(board) if board.exists() else None)


# ---------------------------------------------------------------- swelab submit


def print_board(records: list[dict[str, Any]]) -> None:
    board = pd.DataFrame(records)
    columns = [c for c in SUMMARY_COLUMNS if c in board.columns]
    if columns:
        print(board[columns].to_string(index=False))


def follow(client: Client, job_id: str) -> dict[str, Any]:
    """Follow a job with a progress bar (cells generated + verdicts graded); returns the final job."""
    state = Progress()
    with tqdm(total=0, desc=job_id, unit="step", file=sys.stderr) as bar:
        def on_event(event: Event) -> None:
            fold(state, event.data)
            bar.total, bar.n = state.total, state.done
            bar.set_postfix_str(state.stage or event.kind)
            bar.refresh()

        return client.wait(job_id, on_event)


def submit_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swelab submit", description="Submit a job to a swelab service and "
                                     f"follow it (the token comes from {TOKEN_ENV}).")
    parser.add_argument("file", help="a params file, or with --predictions a predictions file")
    parser.add_argument("--url", default=os.environ.get("SWELAB_SERVICE_URL", "http://127.0.0.1:8765"))
    parser.add_argument("--predictions", action="store_true", help="FILE is predictions to evaluate")
    parser.add_argument("--model", help="with --predictions: the model name (default: from the file)")
    parser.add_argument("--dataset", default="minibench", help="with --predictions: the dataset they are for")
    parser.add_argument("--no-follow", action="store_true", help="print the job id and return")
    args = parser.parse_args(argv)
    try:
        with Client(args.url) as client:
            if args.predictions:
                job = client.submit_predictions(args.file, model=args.model, dataset=args.dataset)
            else:
                job = client.submit(Path(args.file))
            print(job["job_id"], flush=True)
            print(f"run {job['run_id']}" + (" (already active: following that job)" if job["existing"] else ""),
                  file=sys.stderr)
            if args.no_follow:
                return 0
            final = follow(client, job["job_id"])
    except ServiceError as exc:
        print(f"swelab submit: {exc}", file=sys.stderr)
        return 2
    print(f"{final['state']}" + (f": {final['error']}" if final.get("error") else ""))
    if final.get("leaderboard"):
        print_board(final["leaderboard"])
    if final.get("links", {}).get("report"):
        print(f"report: {args.url.rstrip('/')}{final['links']['report']}")
    return 0 if final["state"] == "finished" else 1
