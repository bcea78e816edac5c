"""The service's job store on SQLite and on a real PostgreSQL server (a throwaway cluster started in a temporary
folder, stopped at teardown): the same operations on both; two replicas claiming at once never both claim a job;
a replica takes over a job only when its owner's lease lapsed or was released (the clock is injected); the
password of a URL never shows.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swelab.service.events import EventLog
from swelab.service.store import LEASE_S, Job, JobStore, StoreError, redact
from swelab.service.supervisor import Supervisor

TESTS = Path(__file__).parent
BOUND_S = 120  # the longest a barrier or a server start may wait on a loaded machine; never asserted


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------- a throwaway PostgreSQL cluster


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        return f"postgresql://{self.user}:{password or self.password}@{self.host}:{self.port}/{database}"


def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install -e '.[service-pg]')")
    bindir = _pg_bindir()
    if bindir is None and os.geteuid() == 0:
        subprocess.run(["bash", str(TESTS / "apt_install.sh"), "postgresql"], capture_output=True, timeout=900)
        bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed and cannot be here (make system-deps installs it as root)")
    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="swelab-pg-"))
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no postgres user to own a PostgreSQL cluster")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    server = PgServer("127.0.0.1", _free_port(), "swelab", secrets.token_hex(12))
    data = root / "data"
    pwfile = root / "pwfile"
    pwfile.write_text(server.password + "\n")
    if run_as:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)

    def pg(*args: str, timeout: float = BOUND_S) -> subprocess.CompletedProcess:
        return subprocess.run([*run_as, *args], cwd=root, capture_output=True, text=True, timeout=timeout)

    started = False
    try:
        done = pg(str(bindir / "initdb"), "-D", str(data), f"--username={server.user}", f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync")
        if done.returncode != 0:
            pytest.skip(f"initdb failed: {done.stderr.strip()[-500:]}")
        done = pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", str(BOUND_S),
                  "-o", f"-k {root} -p {server.port} -c listen_addresses={server.host} -c fsync=off", "start")
        started = True
        if done.returncode != 0:
            log = (root / "server.log").read_text(errors="replace")[-800:] if (root / "server.log").exists() else ""
            pytest.skip(f"PostgreSQL did not start: {done.stderr.strip()[-300:]} {log}")
        yield server
    finally:
        if started:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_database(postgres: PgServer) -> Iterator[str]:
    """A fresh database on the throwaway server: its URL (with the password)."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return request.getfixturevalue("pg_database")


# ---------------------------------------------------------------- helpers


def make_job(index: int, tmp_path: Path | None = None) -> Job:
    job_dir = str(tmp_path / f"job{index}") if tmp_path else f"/nowhere/job{index}"
    return Job(id=f"job{index:03d}", run_id=f"run-{index}", name="demo", kind="params", state="queued",
               created_at=f"2024-01-01T00:00:{index:02d}.000+00:00", job_dir=job_dir,
               run_dir=f"/nowhere/run-{index}", params_file=f"{job_dir}/params.yaml")


def together(workers: list[Callable[[], object]]) -> list[object]:
    """Run the callables in threads released at once by a barrier; their results in order."""
    barrier = threading.Barrier(len(workers), timeout=BOUND_S)
    results: list[object] = [None] * len(workers)
    errors: list[BaseException] = []

    def run(index: int, work: Callable[[], object]) -> None:
        try:
            barrier.wait()
            results[index] = work()
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND_S)
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish"
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------- the operations, on both databases


def test_the_operations_round_trip(url: str) -> None:
    clock = Clock()
    store = JobStore(url, owner="replica-a", clock=clock)
    for index in range(3):
        store.add(make_job(index))
    assert [job.id for job in store.list()] == ["job000", "job001", "job002"]
    assert store.get("job001") == make_job(1) and store.get("nope") is None
    assert store.active_for_run("run-2").id == "job002"

    assert store.claim("job001") and not store.claim("job001")
    claimed = store.get("job001")
    assert claimed.state == "running" and claimed.owner == "replica-a" and claimed.worker_starts == 1
    assert claimed.lease_expires == clock.now + LEASE_S
    assert [job.id for job in store.list(("running",))] == ["job001"]

    updated = store.update("job000", cancel_requested=True, worker_pid=4242)
    assert updated.cancel_requested is True and updated.worker_pid == 4242
    assert store.claim_next().id == "job002"  # job000 is being cancelled: never started
    assert store.claim_next() is None
    store.update("job002", state="finished", error="none")
    assert store.active_for_run("run-2") is None
    with pytest.raises(KeyError, match="no column"):
        store.update("job000", colour="red")
    with pytest.raises(ValueError, match="unknown state"):
        store.update("job000", state="exploded")
    with pytest.raises(KeyError, match="job nope"):
        store.update("nope", state="failed")
    # a second store on the same database sees the same rows (the table is created once)
    assert [job.id for job in JobStore(url).list(("queued",))] == ["job000"]


def test_two_replicas_claiming_at_once_claim_each_job_exactly_once(url: str) -> None:
    replicas = [JobStore(url, owner="replica-a"), JobStore(url, owner="replica-b")]
    for index in range(24):
        replicas[0].add(make_job(index))

    def drain(store: JobStore) -> Callable[[], list[str]]:
        def work() -> list[str]:
            mine = []
            while (job := store.claim_next()) is not None:
                assert job.owner == store.owner and job.state == "running"
                mine.append(job.id)
            return mine
        return work

    results = together([drain(store) for store in replicas for _ in range(2)])
    claims = Counter(job_id for got in results for job_id in got)
    assert claims == Counter(f"job{i:03d}" for i in range(24))  # every job, none twice
    rows = {job.id: job for job in replicas[0].list()}
    for position, got in enumerate(results):
        assert all(rows[job_id].owner == replicas[position // 2].owner for job_id in got)
        assert all(rows[job_id].worker_starts == 1 for job_id in got)

    # claim by id, all four threads on every job: one winner each
    for index in range(24, 32):
        replicas[0].add(make_job(index))
    ids = [f"job{i:03d}" for i in range(24, 32)]
    won = together([lambda s=store: [job_id for job_id in ids if s.claim(job_id)] for store in replicas * 2])
    assert Counter(job_id for got in won for job_id in got) == Counter(ids)


def test_a_live_owners_job_stays_and_a_lapsed_lease_lets_another_replica_resume_it(url: str) -> None:
    clock = Clock()
    a = JobStore(url, owner="replica-a", clock=clock)
    b = JobStore(url, owner="replica-b", clock=clock)
    a.add(make_job(1))
    assert a.claim_next().id == "job001"
    assert b.requeue_stale() == [] and b.claim_next() is None  # a is alive: its job is not taken

    clock.advance(LEASE_S * 0.75)
    assert a.renew() == {"job001"}
    clock.advance(LEASE_S * 0.75)  # past the first lease, within the renewed one
    assert b.requeue_stale() == [] and b.get("job001").owner == "replica-a"

    clock.advance(LEASE_S * 0.5)  # a stopped renewing: dead
    resumed = b.requeue_stale()
    assert [job.id for job in resumed] == ["job001"] and resumed[0].state == "queued" and resumed[0].owner is None
    assert b.requeue_stale() == []
    job = b.claim_next()
    assert job.id == "job001" and job.owner == "replica-b" and job.worker_starts == 2  # the new worker resumes
    assert job.lease_expires == clock.now + LEASE_S
    assert a.renew() == set()  # a, alive again, learns it lost the job
    assert b.renew() == {"job001"}


def test_a_released_job_is_resumed_at_once_and_a_replica_id_takes_back_its_own(url: str) -> None:
    clock = Clock()
    a = JobStore(url, owner="replica-a", clock=clock)
    b = JobStore(url, owner="replica-b", clock=clock)
    for index in (1, 2):
        a.add(make_job(index))
        a.claim_next()
    assert a.release() == 2  # a stopped cleanly: no need to wait for the lease
    assert [job.id for job in b.requeue_stale()] == ["job001", "job002"]

    b.claim_next()
    again = JobStore(url, owner="replica-b", clock=clock)  # replica-b restarted after a crash, same id
    assert JobStore(url, owner="replica-c", clock=clock).requeue_stale(include_own=True) == []
    assert [job.id for job in again.requeue_stale(include_own=True)] == ["job001"]


def test_replicas_looking_for_lapsed_leases_at_once_requeue_each_job_once(url: str) -> None:
    clock = Clock()
    dead = JobStore(url, owner="replica-dead", clock=clock)
    for index in range(12):
        dead.add(make_job(index))
        dead.claim_next()
    clock.advance(LEASE_S + 1)
    replicas = [JobStore(url, owner=f"replica-{n}", clock=clock) for n in range(4)]
    results = together([store.requeue_stale for store in replicas])
    requeued = Counter(job.id for got in results for job in got)
    assert requeued == Counter(f"job{i:03d}" for i in range(12))


def test_the_supervisor_resumes_only_jobs_no_live_replica_holds(url: str, tmp_path: Path) -> None:
    clock = Clock()
    live = JobStore(url, owner="replica-live", clock=clock)
    dying = JobStore(url, owner="replica-dying", clock=clock)
    for index, store in ((1, live), (2, dying)):
        store.add(make_job(index, tmp_path))
        assert store.claim_next().id == f"job{index:03d}"
    clock.advance(LEASE_S * 0.75)
    live.renew()
    clock.advance(LEASE_S * 0.5)  # replica-dying's lease lapsed; replica-live's holds

    starting = JobStore(url, owner="replica-new", clock=clock)
    Supervisor(starting, settings=None).recover()  # type: ignore[arg-type]  # recover reads no settings
    assert starting.get("job001").state == "running" and starting.get("job001").owner == "replica-live"
    assert not (tmp_path / "job1" / "events.jsonl").exists()
    assert starting.get("job002").state == "queued"
    assert [e["event"] for e in EventLog(tmp_path / "job2" / "events.jsonl").read_all()] == ["resumed"]


# ---------------------------------------------------------------- URLs, passwords, older files


def test_a_password_is_never_shown(postgres: PgServer) -> None:
    assert redact("postgresql://u:s3cret@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("postgresql://u@h/db?password=s3cret&sslmode=require") == \
        "postgresql://u@h/db?password=***&sslmode=require"
    wrong = "wrong-" + secrets.token_hex(6)
    with pytest.raises(StoreError) as refused:
        JobStore(postgres.url(password=wrong))
    message = str(refused.value)
    assert wrong not in message and postgres.password not in message and "***" in message
    assert "cannot connect" in message
    store = JobStore(postgres.url())
    for shown in (store.location, store.url, repr(store)):
        assert postgres.password not in shown and f":***@{postgres.host}:{postgres.port}/postgres" in shown
    assert store.journal_mode is None


def test_urls_the_store_cannot_use_are_refused_with_what_it_needs(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="sqlite:///PATH or postgresql://") as refused:
        JobStore("mysql://u:hunter2@db.example/jobs")
    assert "hunter2" not in str(refused.value)
    with pytest.raises(StoreError, match="no database file"):
        JobStore("sqlite:///")


def test_an_older_sqlite_file_gains_the_owner_columns(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:  # the schema before owners and leases
        db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, name TEXT NOT NULL, kind TEXT "
                   "NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, "
                   "error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, worker_pid INTEGER, worker_starts "
                   "INTEGER NOT NULL DEFAULT 0, job_dir TEXT NOT NULL, run_dir TEXT NOT NULL, params_file TEXT "
                   "NOT NULL)")
        db.execute("INSERT INTO jobs VALUES ('old', 'r', 'n', 'params', 'running', 't', NULL, NULL, NULL, 0, NULL, "
                   "1, '/j', '/r', '/p')")
    db.close()
    store = JobStore(f"sqlite:///{path}", owner="replica-a")
    assert store.journal_mode == "wal"
    assert store.get("old").owner is None
    assert [job.id for job in store.requeue_stale()] == ["old"]  # a job of the old, single-service era resumes
    assert store.claim_next().owner == "replica-a"
