"""Job state in SQLite (WAL mode, one file beside the outputs): what was submitted, where it stands, who runs it.

Results never live here: they are in the job's run folder. A database URL picks the file
(`sqlite:///relative.db`, `sqlite:////absolute/path.db`); other URLs are refused with what they would need.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = ("queued", "running")
TERMINAL = ("finished", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    worker_starts INTEGER NOT NULL DEFAULT 0,
    job_dir TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    params_file TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_run_id ON jobs (run_id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""


class StoreError(ValueError):
    """A database URL this service cannot use; the message says what it would need."""


@dataclass
class Job:
    """One row of the store."""

    id: str
    run_id: str
    name: str
    kind: str
    """params (generation + evaluation) | predictions (evaluation of an upload)."""
    state: str
    """queued | running | finished | failed | cancelled."""
    created_at: str
    job_dir: str
    """The service's folder for this job: the submitted params, events.jsonl, worker.log."""
    run_dir: str
    """The run folder (outputs/<run_id>): the source of truth for results."""
    params_file: str
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    cancel_requested: bool = False
    worker_pid: int | None = None
    worker_starts: int = 0
    """How many workers have run this job; above 0 a new worker resumes (never forces)."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["job_id"] = data.pop("id")
        data.pop("job_dir")
        data.pop("params_file")
        return data


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def sqlite_path(url: str) -> Path:
    """The file of a sqlite:/// URL; any other scheme is refused with what it would take."""
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        if not rest:
            raise StoreError(f"{url}: no database file after sqlite:///")
        return Path(rest if rest.startswith("/") else Path.cwd() / rest)
    scheme = url.split("://", 1)[0] if "://" in url else url
    if scheme.startswith("postgres"):
        raise StoreError(f"{scheme}://...: this build keeps jobs in SQLite only; a shared PostgreSQL needs the "
                         "store ported to a PostgreSQL driver (docs/SERVICE.md, 'Several replicas')")
    raise StoreError(f"{url}: not a database URL this service knows (use sqlite:///PATH)")


class JobStore:
    """The jobs table; every call opens its own connection, so threads never share one."""

    def __init__(self, url: str):
        self.url = url
        self.path = sqlite_path(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer at a time inside this process (SQLite allows one anyway)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:  # commits, or rolls back on an exception
                yield db
        finally:
            db.close()

    @property
    def journal_mode(self) -> str:
        with self._connect() as db:
            return db.execute("PRAGMA journal_mode").fetchone()[0]

    def add(self, job: Job) -> Job:
        row = dataclasses.asdict(job)
        with self._lock, self._connect() as db:
            db.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                       [int(v) if isinstance(v, bool) else v for v in row.values()])
        return job

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, states: tuple[str, ...] | None = None) -> list[Job]:
        query, args = "SELECT * FROM jobs", ()
        if states:
            query += f" WHERE state IN ({', '.join('?' for _ in states)})"
            args = states
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created_at, id", args).fetchall()
        return [_job(row) for row in rows]

    def active_for_run(self, run_id: str) -> Job | None:
        """The queued or running job of this run, if any: a run folder has one writer at a time."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE run_id = ? AND state IN ('queued', 'running') "
                             "ORDER BY created_at LIMIT 1", (run_id,)).fetchone()
        return _job(row) if row else None

    def update(self, job_id: str, **fields: Any) -> Job:
        unknown = set(fields) - {f.name for f in dataclasses.fields(Job)}
        if unknown:
            raise KeyError(f"jobs table: no column {sorted(unknown)[0]}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"job {job_id}: unknown state {fields['state']!r}")
        with self._lock, self._connect() as db:
            db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                       [*(int(v) if isinstance(v, bool) else v for v in fields.values()), job_id])
        job = self.get(job_id)
        if job is None:
            raise KeyError(f"job {job_id}: not in the store")
        return job

    def claim(self, job_id: str) -> bool:
        """queued -> running, only when still queued (several supervisors may look at one table)."""
        with self._lock, self._connect() as db:
            done = db.execute("UPDATE jobs SET state = 'running', started_at = ?, worker_pid = NULL, error = NULL, "
                              "worker_starts = worker_starts + 1 WHERE id = ? AND state = 'queued'",
                              (now_iso(), job_id))
            return done.rowcount == 1


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)
