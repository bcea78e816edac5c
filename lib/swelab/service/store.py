"""Job state in a database: what was submitted, where it stands, which service replica runs it.

SQLite by default (WAL mode, one file beside the outputs: `sqlite:///relative.db`, `sqlite:////absolute/path.db`);
`postgresql://user:pass@host:port/db` for several replicas on one shared server (psycopg 3, the `service-pg`
extra). The SQL is written once with `?` placeholders; the dialects differ only in the placeholder, a column type
and the row lock of a claim. Results never live here: they are in the job's run folder.

Ownership: a running job carries its replica's id (`owner`) and a lease (`lease_expires`, seconds since the epoch)
that the replica renews while it runs the job. A replica resumes only jobs whose lease lapsed (their replica
died) or was released (their replica stopped cleanly), so replicas never take over each other's live jobs, and
every claim is one conditional UPDATE, so two replicas never start one job. The password of a URL is never
shown: errors and `location` carry the URL redacted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = ("queued", "running")
TERMINAL = ("finished", "failed", "cancelled")
LEASE_S = 60.0
"""How long a replica's claim on a running job lasts without renewal; a replica renews every LEASE_S / 4."""

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
    params_file TEXT NOT NULL,
    owner TEXT,
    lease_expires {real}
);
CREATE INDEX IF NOT EXISTS jobs_run_id ON jobs (run_id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""
# Columns added after the first release: an older SQLite file gains them when a service opens it.
ADDED_COLUMNS = (("owner", "TEXT"), ("lease_expires", "{real}"))

# A running job nobody holds: released by a replica that stopped, or its replica's lease lapsed.
STALE = "(owner IS NULL OR lease_expires IS NULL OR lease_expires < ?)"


@dataclass(frozen=True)
class Dialect:
    name: str
    placeholder: str
    real: str
    lock_one: str
    """After `SELECT ... LIMIT 1` in a claim: skip rows another replica is claiming right now (PostgreSQL);
    SQLite has one writer at a time, so it needs nothing."""


SQLITE = Dialect("sqlite", "?", "REAL", "")
POSTGRESQL = Dialect("postgresql", "%s", "DOUBLE PRECISION", " FOR UPDATE SKIP LOCKED")


class StoreError(ValueError):
    """A database URL this service cannot use; the message says what it would need (never the password)."""


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
    """How many workers have run this job; above 1 after a claim, the new worker resumes (never forces)."""
    owner: str | None = None
    """The id of the replica that runs it (while running; None once released)."""
    lease_expires: float | None = None
    """Seconds since the epoch when the owner's claim lapses unless renewed."""

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


def new_owner_id() -> str:
    """A replica's id: host and pid for the reader, a random tail so that two lives never share one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def redact(url: str) -> str:
    """The URL with its password (in the authority or a `password=` parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a database URL that does not parse>"
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def sqlite_path(url: str) -> Path:
    """The file of a sqlite:/// URL."""
    rest = url[len("sqlite:///"):]
    if not rest:
        raise StoreError(f"{url}: no database file after sqlite:///")
    return Path(rest if rest.startswith("/") else Path.cwd() / rest)


def dialect_of(url: str) -> Dialect:
    if url.startswith("sqlite:///"):
        return SQLITE
    if url.startswith(("postgresql://", "postgres://")):
        return POSTGRESQL
    raise StoreError(f"{redact(url)}: not a database URL this service knows "
                     "(use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB)")


class JobStore:
    """The jobs table. Every call opens its own connection, so threads never share one.

    `owner` is this replica's id (a fresh one by default; give a stable one, e.g. a pod name, so that a replica
    restarted after a crash takes its jobs back at once instead of after the lease). `clock` gives seconds since
    the epoch for leases (tests inject one)."""

    def __init__(self, url: str, owner: str | None = None, lease_s: float = LEASE_S,
                 clock: Callable[[], float] = time.time):
        self.dialect = dialect_of(url)
        self._url = url
        self.url = redact(url)
        self.owner = owner or new_owner_id()
        self.lease_s = lease_s
        self.clock = clock
        self.path: Path | None = None
        self._lock = threading.Lock()  # one writer at a time inside this process (SQLite allows one anyway)
        if self.dialect is SQLITE:
            self.path = sqlite_path(url)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._psycopg = _import_psycopg(self.url)
        try:
            self._create_schema()
        except (sqlite3.Error, *self._driver_errors()) as exc:
            raise StoreError(f"{self.location}: cannot set up the jobs table: {self._scrub(str(exc))}") from None

    @property
    def location(self) -> str:
        """Where the jobs are, for messages: the SQLite file, or the URL without its password."""
        return str(self.path) if self.path is not None else self.url

    def __repr__(self) -> str:
        return f"JobStore({self.location!r}, owner={self.owner!r})"

    # -- connections ------------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[Any]:
        """A connection in a transaction: committed at the end of the block, rolled back on an exception."""
        if self.dialect is SQLITE:
            db = sqlite3.connect(self.path, timeout=30)
            db.row_factory = sqlite3.Row
            try:
                with db:
                    yield db
            finally:
                db.close()
            return
        psycopg = self._psycopg
        try:
            db = psycopg.connect(self._url, connect_timeout=10, row_factory=psycopg.rows.dict_row)
        except psycopg.Error as exc:
            raise StoreError(f"{self.url}: cannot connect: {self._scrub(str(exc))}") from None
        with db:  # commits, or rolls back on an exception; closes
            yield db

    def _driver_errors(self) -> tuple[type[Exception], ...]:
        return (self._psycopg.Error,) if self.dialect is POSTGRESQL else ()

    def _scrub(self, text: str) -> str:
        password = urlsplit(self._url).password
        return text.replace(password, "***") if password else text

    def _sql(self, query: str) -> str:
        return query.replace("?", self.dialect.placeholder) if self.dialect is not SQLITE else query

    def _execute(self, db: Any, query: str, args: tuple | list = ()) -> Any:
        return db.execute(self._sql(query), tuple(args))

    def _create_schema(self) -> None:
        schema = SCHEMA.format(real=self.dialect.real)
        statements = [s.strip() for s in schema.split(";") if s.strip()]
        with self._lock, self._connect() as db:
            if self.dialect is SQLITE:
                db.execute("PRAGMA journal_mode=WAL")
            else:  # replicas starting together: one creates the table, the others wait for it
                db.execute("SELECT pg_advisory_xact_lock(hashtext('swelab.service.jobs'))")
            for statement in statements:
                db.execute(statement)
            for column, kind in ADDED_COLUMNS:
                kind = kind.format(real=self.dialect.real)
                if self.dialect is SQLITE:
                    present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
                    if column not in present:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
                else:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN IF NOT EXISTS {column} {kind}")

    @property
    def journal_mode(self) -> str | None:
        """SQLite's journal mode (wal); None on PostgreSQL."""
        if self.dialect is not SQLITE:
            return None
        with self._connect() as db:
            return db.execute("PRAGMA journal_mode").fetchone()[0]

    # -- rows -------------------------------------------------------------------------------------------
    def add(self, job: Job) -> Job:
        row = dataclasses.asdict(job)
        with self._lock, self._connect() as db:
            self._execute(db, f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                          [_value(v) for v in row.values()])
        return job

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = self._execute(db, "SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, states: tuple[str, ...] | None = None) -> list[Job]:
        query, args = "SELECT * FROM jobs", ()
        if states:
            query += f" WHERE state IN ({', '.join('?' for _ in states)})"
            args = states
        with self._connect() as db:
            rows = self._execute(db, query + " ORDER BY created_at, id", args).fetchall()
        return [_job(row) for row in rows]

    def active_for_run(self, run_id: str) -> Job | None:
        """The queued or running job of this run, if any: a run folder has one writer at a time."""
        with self._connect() as db:
            row = self._execute(db, "SELECT * FROM jobs WHERE run_id = ? AND state IN ('queued', 'running') "
                                "ORDER BY created_at LIMIT 1", (run_id,)).fetchone()
        return _job(row) if row else None

    def update(self, job_id: str, **fields: Any) -> Job:
        unknown = set(fields) - {f.name for f in dataclasses.fields(Job)}
        if unknown:
            raise KeyError(f"jobs table: no column {sorted(unknown)[0]}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"job {job_id}: unknown state {fields['state']!r}")
        with self._lock, self._connect() as db:
            self._execute(db, f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                          [*(_value(v) for v in fields.values()), job_id])
        job = self.get(job_id)
        if job is None:
            raise KeyError(f"job {job_id}: not in the store")
        return job

    # -- claims and leases ------------------------------------------------------------------------------
    _CLAIM = ("UPDATE jobs SET state = 'running', owner = ?, lease_expires = ?, started_at = ?, worker_pid = NULL, "
              "error = NULL, worker_starts = worker_starts + 1 ")

    def claim(self, job_id: str) -> bool:
        """This queued job -> running for this replica, only when still queued (one UPDATE: one winner)."""
        with self._lock, self._connect() as db:
            done = self._execute(db, self._CLAIM + "WHERE id = ? AND state = 'queued'",
                                 (self.owner, self.clock() + self.lease_s, now_iso(), job_id))
            return done.rowcount == 1

    def claim_next(self) -> Job | None:
        """The oldest queued job (not one being cancelled) -> running for this replica, or None. Atomic: on
        PostgreSQL the row is locked and others skip it; SQLite serialises writers."""
        pick = ("SELECT id FROM jobs WHERE state = 'queued' AND cancel_requested = 0 ORDER BY created_at, id "
                f"LIMIT 1{self.dialect.lock_one}")
        with self._lock, self._connect() as db:
            rows = self._execute(db, self._CLAIM + f"WHERE id = ({pick}) AND state = 'queued' RETURNING *",
                                 (self.owner, self.clock() + self.lease_s, now_iso())).fetchall()
        return _job(rows[0]) if rows else None

    def renew(self) -> set[str]:
        """Extend this replica's lease on its running jobs; the ids it still holds (a job missing from them was
        taken over after the lease lapsed, and its worker here must stop)."""
        with self._lock, self._connect() as db:
            rows = self._execute(db, "UPDATE jobs SET lease_expires = ? WHERE owner = ? AND state = 'running' "
                                 "RETURNING id", (self.clock() + self.lease_s, self.owner)).fetchall()
        return {row["id"] for row in rows}

    def release(self) -> int:
        """This replica stops: its running jobs stay running but unowned, so the next replica to look resumes
        them at once. Call it after their workers have ended. The number released."""
        with self._lock, self._connect() as db:
            done = self._execute(db, "UPDATE jobs SET owner = NULL, lease_expires = NULL "
                                 "WHERE owner = ? AND state = 'running'", (self.owner,))
            return done.rowcount

    def requeue_stale(self, include_own: bool = False) -> list[Job]:
        """Running jobs nobody holds -> queued, to be resumed by whoever claims them; each one is returned to
        exactly one replica (the one whose UPDATE moved it). `include_own`: also this replica's id (a replica
        started again with the same id; never while it runs workers)."""
        where = f"state = 'running' AND ({STALE}{' OR owner = ?' if include_own else ''})"
        args = (self.clock(), *((self.owner,) if include_own else ()))
        with self._lock, self._connect() as db:
            rows = self._execute(db, f"UPDATE jobs SET state = 'queued', owner = NULL, lease_expires = NULL "
                                 f"WHERE {where} RETURNING *", args).fetchall()
        return sorted((_job(row) for row in rows), key=lambda job: (job.created_at, job.id))


def _value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _job(row: Any) -> Job:
    data = dict(row)
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)


def _import_psycopg(where: str) -> Any:
    # An optional dependency (the service-pg extra): imported only when a PostgreSQL URL is given.
    try:
        import psycopg
        import psycopg.rows
    except ImportError:
        raise StoreError(f"{where}: a PostgreSQL store needs psycopg 3: pip install 'swelab[service-pg]'") from None
    return psycopg
