"""Job lifecycle: register submissions (one active job per run folder), start one worker process per running job
(at most `max_jobs` at once), reap them into finished / failed / cancelled, cancel, and resume the jobs a stopped
or dead service left running (the runner's resume keeps their finished cells). Several replicas may share one
store: each renews the lease on the jobs it runs and resumes only jobs whose lease was released or lapsed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from swelab.io import read_json
from swelab.service import worker
from swelab.service.events import EventLog
from swelab.service.jobs import Settings, Submission
from swelab.service.store import Job, JobStore, now_iso

TOKEN_ENV = "SWELAB_SERVICE_TOKEN"
POLL_S = 0.2
STOP_GRACE_S = 5.0
LOG_TAIL_LINES = 5


def events_of(job: Job) -> EventLog:
    return EventLog(Path(job.job_dir) / worker.EVENTS)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the job's worker died (killed by {name})"
    return f"the job's worker died (exit code {returncode})"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


class Supervisor:
    def __init__(self, store: JobStore, settings: Settings, max_jobs: int = 1):
        self.store = store
        self.settings = settings
        self.max_jobs = max_jobs
        self._workers: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_lease_check = 0.0  # time.monotonic() of the next renewal and look for lapsed leases

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="job-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising and end the workers; their jobs stay `running` in the store, so the next service
        resumes them."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for proc in workers:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in workers:
            _end(proc, deadline)
        try:
            self.store.release()  # only now: no worker of ours writes to those run folders any more
        except Exception as exc:  # the store is down: the lease lapses instead, and the jobs resume after it
            print(f"swelab service: releasing jobs: {type(exc).__name__}: {exc}", file=sys.stderr)


    def recover(self, include_own: bool = True) -> None:
        """Running jobs no live replica holds (their service stopped, or died and its lease lapsed): queued again
        to resume (cancelled if that was asked). At start `include_own` also takes back the jobs of an earlier
        life of this replica's id."""
        for job in self.store.requeue_stale(include_own=include_own):
            if job.worker_pid and _is_our_worker(job.worker_pid, job.job_dir):  # a worker of a service here
                _signal_group(job.worker_pid, signal.SIGTERM)
                _wait_gone(job.worker_pid, STOP_GRACE_S)
            if job.cancel_requested:
                self._close(job, "cancelled", None)
                continue
            events_of(job).append("resumed", reason="the service that ran it stopped; finished cells are kept")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # a bad row must not stop supervision of the others
                print(f"swelab service: supervisor: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._stopping.wait(POLL_S)

    def tick(self) -> None:
        with self._lock:
            self._reap()
            if time.monotonic() >= self._next_lease_check:
                self._next_lease_check = time.monotonic() + self.store.lease_s / 4
                self._renew()
                self.recover(include_own=False)
            self._launch()

    def _renew(self) -> None:
        """Extend our leases; a job taken over by another replica (our lease lapsed) loses its worker here."""
        held = self.store.renew()
        for job_id in [job_id for job_id in self._workers if job_id not in held]:
            proc = self._workers.pop(job_id)
            print(f"swelab service: job {job_id}: another replica took it over (this one's lease lapsed); "
                  "stopping its worker here", file=sys.stderr)
            _signal_group(proc.pid, signal.SIGTERM)
            _end(proc, time.monotonic() + STOP_GRACE_S)

    # -- submissions and cancellation -------------------------------------------------------------------
    def submit(self, submission: Submission) -> tuple[Job, bool]:
        """The job for this submission, and whether it already existed: a run folder gets one active job, so
        resubmitting while it runs returns that job; afterwards a new job resumes the run."""
        params = submission.params
        with self._lock:
            active = self.store.active_for_run(params.run_id)
            if active is not None:
                return active, True
            job = Job(id=submission.job_id, run_id=params.run_id, name=params.name, kind=submission.kind,
                      state="queued", created_at=now_iso(), job_dir=str(submission.job_dir),
                      run_dir=str(params.run_dir), params_file=str(submission.params_file))
            self.store.add(job)
        return job, False

    def cancel(self, job_id: str) -> Job | None:
        """Queued: cancelled now. Running: the worker stops before its next cell (finished cells stay)."""
        with self._lock:
            job = self.store.get(job_id)
            if job is None or job.terminal:
                return job
            self.store.update(job_id, cancel_requested=True)
            job = self.store.get(job_id)
            assert job is not None
            if job.state == "queued":
                return self._close(job, "cancelled", None)
            (Path(job.job_dir) / worker.CANCEL).touch()
            return job

    # -- workers ---------------------------------------------------------------------------------------
    def _launch(self) -> None:
        while len(self._workers) < self.max_jobs:
            job = self.store.claim_next()
            if job is None:
                return
            self._spawn(job)

    def _spawn(self, job: Job) -> None:
        job_dir = Path(job.job_dir)
        (job_dir / worker.OUTCOME).unlink(missing_ok=True)
        if not job.cancel_requested:
            (job_dir / worker.CANCEL).unlink(missing_ok=True)
        command = [sys.executable, "-m", "swelab.service.worker", str(job_dir), "--params", job.params_file,
                   "--outputs", str(self.settings.outputs_dir)]
        if job.worker_starts > 1:  # claimed before this claim: this worker resumes
            command.append("--resume")
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}  # the worker never needs the token
        env["PYTHONUNBUFFERED"] = "1"
        try:
            with (job_dir / "worker.log").open("ab") as log:
                proc = subprocess.Popen(command, cwd=self.settings.project_root, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self._close(job, "failed", f"the job's worker could not start: {exc}")
            return
        self._workers[job.id] = proc
        self.store.update(job.id, worker_pid=proc.pid)

    def _reap(self) -> None:
        for job_id, proc in list(self._workers.items()):
            returncode = proc.poll()
            if returncode is None:
                continue
            del self._workers[job_id]
            job = self.store.get(job_id)
            if job is None or job.owner not in (None, self.store.owner):
                continue  # another replica took it over: its state is that replica's to write
            outcome_path = Path(job.job_dir) / worker.OUTCOME
            outcome = read_json(outcome_path) if outcome_path.exists() else None
            if outcome is not None:
                self._close(job, outcome.get("state", "failed"), outcome.get("error"))
            elif job.cancel_requested:
                self._close(job, "cancelled", None)
            else:
                tail = log_tail(Path(job.job_dir) / "worker.log")
                self._close(job, "failed", describe_exit(returncode) + (f"; worker.log ends:\n{tail}" if tail else ""))

    def _close(self, job: Job, state: str, error: str | None) -> Job:
        # The event first: a client that sees the store say "done" finds the event in the log already.
        events_of(job).append("done", state=state, error=error)
        return self.store.update(job.id, state=state, error=error, finished_at=now_iso(), worker_pid=None)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the worker leads its own session: its children go too
    except (ProcessLookupError, PermissionError):
        pass


def _end(proc: subprocess.Popen, deadline: float) -> None:
    """Wait for a signalled worker until the deadline, then kill its group."""
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _is_our_worker(pid: int, job_dir: str) -> bool:
    """The pid still runs this job's worker (a pid may have been reused since)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"swelab.service.worker" in cmdline and job_dir.encode() in cmdline


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
