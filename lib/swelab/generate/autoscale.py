"""CPU-aware generation workers (`workers: auto`): start at the configured count, give up workers while the
machine's CPU stays above 80 % (sandboxed shell commands and evaluations are the load), take them back while it
has headroom.

The runner's thread pool keeps its size; `WorkerScaler` is the gate each attempt passes before it starts, with a
capacity that the controller moves. Decisions are taken when an attempt starts or ends (the only moments a
capacity matters), at most once per `interval_s`; each reads the machine's CPU use since the previous reading:

    above `high` (80 %) for `sustain` readings in a row -> capacity - max(1, capacity // 4)   (down fast)
    below `low`  (60 %) for `sustain` readings in a row -> capacity + 1, up to the start count (up slowly)

Running attempts are never stopped; a lower capacity only holds back the next ones. Every change is kept in
`timeline` (time, CPU reading, workers), which the runner writes into the manifest.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HIGH_CPU = 80.0
LOW_CPU = 60.0
SUSTAIN = 3
SAMPLE_INTERVAL_S = 5.0
PROC_STAT = Path("/proc/stat")


class ProcStatCPU:
    """Machine-wide CPU use in percent since the previous call, from /proc/stat (Linux): busy / total jiffies.
    The first reading covers the time since construction."""

    def __init__(self, path: Path = PROC_STAT):
        self.path = path
        self._last = self._times()

    def _times(self) -> tuple[int, int]:
        fields = [int(v) for v in self.path.read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # guest time is already inside user time

    def __call__(self) -> float:
        total, idle = self._times()
        last_total, last_idle = self._last
        self._last = (total, idle)
        spent = total - last_total
        return 0.0 if spent <= 0 else 100.0 * (spent - (idle - last_idle)) / spent


def default_read_cpu() -> Callable[[], float]:
    """/proc/stat where there is one, else psutil.cpu_percent (same meaning: use since the previous call)."""
    if PROC_STAT.exists():
        return ProcStatCPU()
    import psutil  # optional: only where /proc/stat is missing (macOS)

    psutil.cpu_percent(interval=None)  # the first call only starts the measurement
    return lambda: psutil.cpu_percent(interval=None)


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class WorkerScaler:
    """An adjustable gate over attempt starts plus the controller that sets its capacity.

    `with scaler:` around an attempt: waits while `workers` attempts are running. `read_cpu` returns the CPU use
    in percent since its previous call; tests pass a synthetic one. `clock` (monotonic seconds) paces readings.
    """

    def __init__(self, start: int, *, read_cpu: Callable[[], float] | None = None, high: float = HIGH_CPU,
                 low: float = LOW_CPU, sustain: int = SUSTAIN, interval_s: float | None = None,
                 minimum: int = 1, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], str] = _now_iso):
        if start < 1 or minimum < 1 or minimum > start:
            raise ValueError(f"WorkerScaler needs 1 <= minimum <= start (got start={start}, minimum={minimum})")
        if not low < high:
            raise ValueError(f"WorkerScaler needs low < high (got low={low}, high={high})")
        self.maximum = start
        self.minimum = minimum
        self.high, self.low, self.sustain = high, low, max(1, sustain)
        self.interval_s = SAMPLE_INTERVAL_S if interval_s is None else interval_s
        self._read_cpu = read_cpu or default_read_cpu()
        self._clock, self._wall = clock, wall
        self._cond = threading.Condition()
        self._workers = start
        self._running = 0
        self._over = self._under = 0
        self._last_reading: float | None = None
        self.readings = 0
        self.timeline: list[dict[str, Any]] = [{"at": wall(), "cpu_percent": None, "workers": start,
                                                "reason": "start"}]

    @property
    def workers(self) -> int:
        with self._cond:
            return self._workers

    # -- the controller ----------------------------------------------------------------------------
    def sample(self) -> int:
        """Take one CPU reading now and move the capacity if the rule says so; returns the capacity."""
        cpu = float(self._read_cpu())
        with self._cond:
            self._last_reading = self._clock()
            self.readings += 1
            self._over = self._over + 1 if cpu > self.high else 0
            self._under = self._under + 1 if cpu < self.low else 0
            target = self._workers
            if self._over >= self.sustain:
                target = max(self.minimum, self._workers - max(1, self._workers // 4))
                self._over = 0
            elif self._under >= self.sustain:
                target = min(self.maximum, self._workers + 1)
                self._under = 0
            if target != self._workers:
                reason = "cpu_high" if target < self._workers else "headroom"
                self.timeline.append({"at": self._wall(), "cpu_percent": round(cpu, 1), "workers": target,
                                      "reason": reason})
                self._workers = target
                self._cond.notify_all()
            return self._workers

    def maybe_sample(self) -> None:
        """A reading when the last one is at least interval_s old."""
        with self._cond:
            due = self._last_reading is None or self._clock() - self._last_reading >= self.interval_s
        if due:
            self.sample()

    # -- the gate ----------------------------------------------------------------------------------
    def acquire(self, timeout: float | None = None) -> bool:
        self.maybe_sample()
        with self._cond:
            if not self._cond.wait_for(lambda: self._running < self._workers, timeout=timeout):
                return False
            self._running += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()
        self.maybe_sample()

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    def __enter__(self) -> WorkerScaler:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def finish(self) -> list[dict[str, Any]]:
        """The timeline with a closing entry: what the manifest records."""
        with self._cond:
            self.timeline.append({"at": self._wall(), "cpu_percent": None, "workers": self._workers,
                                  "reason": "end"})
            return list(self.timeline)


def workers_timeline(manifest: dict) -> list[dict[str, Any]]:
    """The generation workers over time from a run's manifest (`workers.timeline`): rows of at (ISO-8601 UTC),
    cpu_percent (the reading that caused a change, None at start and end), workers, reason. [] for a run with a
    fixed worker count (then `workers.count` is the count)."""
    return list(((manifest or {}).get("workers") or {}).get("timeline") or [])
