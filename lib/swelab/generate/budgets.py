"""Request budgets: how many HTTP requests a provider allows per UTC day (Chutes: about 2,000, free), counted
across runs and processes in a ledger under `$SWELAB_CACHE/budgets/`.

    budget = RequestBudget({"chutes": 2000})
    with active(budget):          # generate() does this for the run
        budget.charge("chutes")   # the chat client, before every HTTP request (retries included)

The client refuses a request once the day's count has reached the limit (the call fails as `budget_exhausted`
without being sent), and the runner starts no attempt for a provider whose budget is spent; those cells end
`skipped` with error_kind `budget_exhausted`, and a rerun (on a later day) runs them.

The ledger is one JSON file, `{provider: {"YYYY-MM-DD": requests}}`, read and rewritten under an exclusive
`fcntl.flock` and replaced by an atomic rename, so concurrent runs on the machine never lose a count.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from swelab.io import read_json, write_json
from swelab.workspace.repos import default_cache_dir

log = logging.getLogger(__name__)

BUDGET_EXHAUSTED = "budget_exhausted"  # the cell error_kind (and call error_kind) of a refused request
DEFAULT_BUDGETS: dict[str, dict[str, Any]] = {"chutes": {"requests_per_day": 2000}}  # the research plan's
KEEP_DAYS = 31  # older days are dropped from the ledger


def utc_now() -> dt.datetime:
    """The clock of budgets (tests replace it to move to another day)."""
    return dt.datetime.now(dt.timezone.utc)


def utc_day(clock: Callable[[], dt.datetime] | None = None) -> str:
    return (clock or utc_now)().astimezone(dt.timezone.utc).date().isoformat()


class RequestLedger:
    """Requests per provider per UTC day, persisted in `<root>/requests.json`; safe across threads and
    processes (flock on `<root>/.lock` around every read-modify-write)."""

    def __init__(self, root: str | Path | None = None, clock: Callable[[], dt.datetime] | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "budgets"
        self.path = self.root / "requests.json"
        self._clock = clock
        self._thread_lock = threading.Lock()

    def day(self) -> str:
        return utc_day(self._clock)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict[str, int]]:
        if not self.path.exists():
            return {}
        try:
            data = read_json(self.path)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: request ledger is not valid JSON ({exc.msg}); fix or remove it") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: request ledger must map provider -> {{day: requests}}")
        return data

    def count(self, provider: str, day: str | None = None) -> int:
        """Requests recorded for the provider on the day (today, UTC, by default)."""
        with self._locked():
            return int(self._read().get(provider, {}).get(day or self.day(), 0))

    def add(self, provider: str, limit: int | None = None, n: int = 1) -> bool:
        """Record n requests for today, unless that would pass `limit` (then nothing is recorded): True when
        recorded. Check and count are one step under the lock, so N concurrent callers never pass a limit."""
        day = self.day()
        with self._locked():
            data = self._read()
            days = data.setdefault(provider, {})
            spent = int(days.get(day, 0))
            if limit is not None and spent + n > limit:
                return False
            days[day] = spent + n
            oldest = (dt.date.fromisoformat(day) - dt.timedelta(days=KEEP_DAYS)).isoformat()
            data[provider] = {d: c for d, c in days.items() if d >= oldest}
            write_json(self.path, data)  # a temp file and an atomic rename
            return True


class RequestBudget:
    """The run's daily request limits (provider -> requests per day, None: unlimited) over a shared ledger."""

    def __init__(self, limits: dict[str, int | None], ledger: RequestLedger | None = None):
        self.limits = {provider: limit for provider, limit in limits.items() if limit is not None}
        self.ledger = ledger or RequestLedger()

    def limit(self, provider: str | None) -> int | None:
        return self.limits.get(provider or "")

    def spent(self, provider: str) -> int:
        return self.ledger.count(provider)

    def remaining(self, provider: str | None) -> int | None:
        limit = self.limit(provider)
        return None if limit is None else max(0, limit - self.spent(provider or ""))

    def exhausted(self, provider: str | None) -> bool:
        remaining = self.remaining(provider)
        return remaining is not None and remaining <= 0

    def charge(self, provider: str | None) -> bool:
        """Count one HTTP request; False (and nothing counted) when the provider's day is spent. Providers
        without a limit are not counted."""
        limit = self.limit(provider)
        return True if limit is None else self.ledger.add(provider or "", limit)

    def why(self, provider: str | None) -> str:
        return (f"daily request budget of {provider} spent ({self.limit(provider)} requests on UTC "
                f"{self.ledger.day()}; ledger {self.ledger.path}); a rerun on a later day runs this cell")


def limits_of(budgets: dict[str, dict[str, Any]] | None) -> dict[str, int | None]:
    """provider -> requests per day from params' `budgets` (already validated by swelab.params)."""
    return {provider: (spec or {}).get("requests_per_day") for provider, spec in (budgets or {}).items()}


# -- the run's budget, as the chat clients see it ---------------------------------------------------------
# The agents build their chat clients themselves; the runner makes its budget visible to every client of the
# process for the run's duration (one run at a time per process: a nested run's budget replaces the outer).
_ACTIVE: list[RequestBudget] = []
_ACTIVE_LOCK = threading.Lock()


@contextmanager
def active(budget: RequestBudget) -> Iterator[RequestBudget]:
    with _ACTIVE_LOCK:
        _ACTIVE.append(budget)
    try:
        yield budget
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.remove(budget)


def current() -> RequestBudget | None:
    with _ACTIVE_LOCK:
        return _ACTIVE[-1] if _ACTIVE else None


# -- planning --------------------------------------------------------------------------------------------
def expected_requests(kind: str, max_steps: int) -> int:
    """Requests one attempt is planned to make: patch mode one, shell modes up to max_steps (an upper bound
    that retries can pass); kinds that call no model none."""
    if kind == "patch":
        return 1
    if kind in ("shell", "mini-swe-agent"):
        return max_steps
    return 0


def plan(attempts: Iterable[tuple[str | None, str, int]]) -> dict[str, int]:
    """provider -> expected requests, from one (provider, kind, max_steps) per attempt to run."""
    out: dict[str, int] = {}
    for provider, kind, max_steps in attempts:
        if provider:
            out[provider] = out.get(provider, 0) + expected_requests(kind, max_steps)
    return out


def shortfalls(budget: RequestBudget, planned: dict[str, int]) -> list[str]:
    """One warning per provider whose remaining budget today cannot cover the planned requests."""
    warnings = []
    for provider, expected in sorted(planned.items()):
        remaining = budget.remaining(provider)
        if remaining is not None and expected > remaining:
            warnings.append(
                f"budget: {provider} has {remaining} of {budget.limit(provider)} requests left today (UTC "
                f"{budget.ledger.day()}) and this run plans about {expected}; attempts past the budget end "
                f"skipped ({BUDGET_EXHAUSTED}) and run on a later rerun")
    return warnings
