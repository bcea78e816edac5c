"""Where the grid's work runs: threads in this process (`executor: {kind: local}`, the default) or a Dask cluster
(`{kind: dask, address: ...}` or `{kind: dask, cluster: local, workers: N}`).

Either way the client (a notebook, `swelab run`) drives every cell from its own threads (`map_unordered`) and stays
the only writer of the run folder. An executor decides where one task's work happens (`run`): here, or on a Dask
worker that gets a picklable task (dataclasses: the model entry, the instance row, the params) and sends back what
the client writes. No shared filesystem is needed, and resume is the run folder's, as with threads.
"""

from __future__ import annotations

import atexit
import html
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from swelab.params import ExecutorConfig
from swelab.workspace.repos import Workspace, default_cache_dir

T = TypeVar("T")
R = TypeVar("R")


class ExecutorError(RuntimeError):
    """An executor that cannot start (Dask missing, a scheduler that does not answer); the message says which."""


class Executor(Protocol):
    kind: str
    remote: bool
    """True when tasks run in other processes: they take picklable arguments and return what the client writes."""

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], width: int
                      ) -> Iterator[tuple[T, R | BaseException]]:
        """`fn` over `items` on the client, `width` at a time; each (item, result or the exception it raised) as
        it finishes. Closing the iterator early cancels what has not started."""

    def run(self, fn: Callable[..., R], *args: Any, key: str, affinity: str | None = None) -> R:
        """One task: `fn(*args)` here, or on a worker (preferring the one that last ran `affinity`)."""

    def semaphore(self, name: str, limit: int) -> AbstractContextManager:
        """A counting semaphore that holds wherever this executor's tasks run."""

    def dashboard_link(self) -> str | None:
        """Where to watch the tasks (Dask's dashboard), or None."""


def _map_threads(fn: Callable[[T], R], items: Iterable[T], width: int) -> Iterator[tuple[T, R | BaseException]]:
    pool = ThreadPoolExecutor(max_workers=max(1, width))
    try:
        futures = {pool.submit(fn, item): item for item in items}
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], (error if error is not None else future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an abandoned loop starts nothing more


class ThreadExecutor:
    """Today's behaviour: every task in a thread of this process."""

    kind = "local"
    remote = False

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], width: int
                      ) -> Iterator[tuple[T, R | BaseException]]:
        return _map_threads(fn, items, width)

    def run(self, fn: Callable[..., R], *args: Any, key: str, affinity: str | None = None) -> R:
        return fn(*args)

    def semaphore(self, name: str, limit: int) -> threading.Semaphore:
        return threading.Semaphore(limit)

    def dashboard_link(self) -> str | None:
        return None


LOCAL = ThreadExecutor()


def _distributed() -> Any:
    # Imported here, not at the top: dask and distributed are an optional extra (`pip install -e ".[cluster]"`)
    # that only `executor: {kind: dask}` needs; a plain install must not pay for (or lack) them.
    try:
        import distributed
    except ImportError as exc:
        raise ExecutorError('executor kind dask needs dask and distributed: pip install -e ".[cluster]"') from exc
    return distributed


def _located(fn: Callable[..., R], *args: Any) -> tuple[str, R]:
    """On a worker: the task's result and the worker that made it (for affinity)."""
    return _distributed().get_worker().address, fn(*args)


class DaskExecutor:
    """Tasks on a Dask cluster: a running scheduler (`address`) or a LocalCluster of processes started here.

    The client keeps one thread per task in flight (blocked on its future): the hooks of the grid (concurrency
    gates, budgets, cancel flags, the writes) stay on the client, unchanged. A worker that dies takes its tasks
    with it; the scheduler runs them again on another worker (Dask's `allowed-failures`)."""

    kind = "dask"
    remote = True

    def __init__(self, config: ExecutorConfig):
        distributed = _distributed()
        self.config = config
        self.cluster = None
        try:
            if config.address:
                self.client = distributed.Client(config.address, timeout="30s")
            else:
                self.cluster = distributed.LocalCluster(
                    n_workers=config.workers, threads_per_worker=config.threads_per_worker, processes=True,
                    dashboard_address="127.0.0.1:0")
                self.client = distributed.Client(self.cluster)
        except OSError as exc:
            raise ExecutorError(f"executor: cannot reach the Dask scheduler {config.address or 'LocalCluster'}: "
                                f"{exc}") from exc
        self._affinity: dict[str, str] = {}
        self._semaphores: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def slots(self) -> int:
        """Threads across the cluster's workers now."""
        return max(1, sum(self.client.nthreads().values()))

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], width: int
                      ) -> Iterator[tuple[T, R | BaseException]]:
        # one client thread per task in flight: enough to keep every worker thread busy
        return _map_threads(fn, items, max(width, self.slots()))

    def run(self, fn: Callable[..., R], *args: Any, key: str, affinity: str | None = None) -> R:
        placement: dict[str, Any] = {}
        with self._lock:
            preferred = self._affinity.get(affinity) if affinity else None
        if preferred:  # a preference, not a rule: when that worker is gone or busy, any other may run it
            placement = {"workers": [preferred], "allow_other_workers": True}
        future = self.client.submit(_located, fn, *args, key=f"{key}-{uuid.uuid4().hex[:8]}", pure=False,
                                    **placement)
        try:
            where, result = future.result()
        finally:
            future.release()
        if affinity and where != preferred and (preferred is None or preferred not in self.client.nthreads()):
            with self._lock:  # the first worker to run it, or the one that took over from a worker now gone
                self._affinity[affinity] = where
        return result

    def semaphore(self, name: str, limit: int) -> Any:
        """A distributed.Semaphore: every client of this scheduler shares it (the name holds the limit, since Dask
        refuses one name with two limits)."""
        with self._lock:
            key = (name, limit)
            if key not in self._semaphores:
                self._semaphores[key] = _distributed().Semaphore(
                    max_leases=limit, name=f"swelab:{name}:{limit}", scheduler_rpc=self.client.scheduler,
                    loop=self.client.loop)
            return self._semaphores[key]

    def dashboard_link(self) -> str | None:
        return self.client.dashboard_link

    def worker_pids(self) -> dict[str, int]:
        """Each worker's process id (tests and operators kill one to see the tasks move)."""
        return self.client.run(os.getpid)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# One Dask client per configuration in this process: a notebook's cells (the dashboard link, generate, evaluate)
# share one cluster, which closes when the process ends.
_OPEN: dict[ExecutorConfig, DaskExecutor] = {}
_OPEN_LOCK = threading.Lock()


def executor_for(config: ExecutorConfig) -> Executor:
    """The executor a params file's `executor:` names (a Dask one is started once per process and kept)."""
    if config.kind == "local":
        return LOCAL
    with _OPEN_LOCK:
        executor = _OPEN.get(config)
        if executor is None or executor.client.status in ("closing", "closed"):
            executor = _OPEN[config] = DaskExecutor(config)
        return executor


def close_executors() -> None:
    """Close every Dask client (and LocalCluster) this process started."""
    with _OPEN_LOCK:
        executors = list(_OPEN.values())
        _OPEN.clear()
    for executor in executors:
        executor.close()


atexit.register(close_executors)


def dashboard_link(config: ExecutorConfig) -> str | None:
    """The Dask dashboard of the run's executor (starting it if need be), or None for threads."""
    return None if config.kind == "local" else executor_for(config).dashboard_link()


@dataclass(frozen=True)
class Dashboard:
    """What a notebook shows of the executor: the Dask dashboard as a link, or one line saying threads run here."""

    url: str | None

    def _repr_html_(self) -> str | None:
        if self.url is None:
            return None  # Jupyter then shows the plain text
        link = html.escape(self.url)
        return f'Dask dashboard: <a href="{link}" target="_blank">{link}</a>'

    def __repr__(self) -> str:
        return f"Dask dashboard: {self.url}" if self.url else "executor: threads in this process (no dashboard)"


def dashboard(config: ExecutorConfig) -> Dashboard:
    """For a notebook cell: the run's Dask dashboard link (nothing to open with threads)."""
    return Dashboard(dashboard_link(config))


# -- on a worker ----------------------------------------------------------------------------------------
_PER_PROCESS: dict[Any, Any] = {}
_PER_PROCESS_LOCK = threading.Lock()


def per_process(key: Any, factory: Callable[[], T]) -> T:
    """One object per process and key (a worker's Workspace, its agents): built by the first task that asks."""
    with _PER_PROCESS_LOCK:
        if key not in _PER_PROCESS:
            _PER_PROCESS[key] = factory()
        return _PER_PROCESS[key]


def worker_workspace(repo_sources: dict) -> Workspace:
    """This process's Workspace, one per cache folder (the worker's SWELAB_CACHE) and repo sources: a worker
    clones each mirror and builds each environment once, however many tasks it runs."""
    key = ("workspace", str(default_cache_dir()), json.dumps(repo_sources, sort_keys=True, default=str))
    return per_process(key, lambda: Workspace(repo_sources=repo_sources))
