"""The models × instances × attempts grid: concurrency, per-attempt deadlines, resume, run manifest."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import logging
import platform
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swelab.executor import LOCAL, Executor, executor_for, per_process, worker_workspace
from swelab.generate import autoscale, budgets
from swelab.generate.agents import Agent, AttemptContext, AttemptOutcome, build_agent
from swelab.generate.agents.exceptions import ModelGone, outcome_for
from swelab.generate.agents.trajectory import MINI_TRAJECTORY, REFUSED_PATCH, TRAJECTORY
from swelab.generate.imports import import_for_params
from swelab.generate.local_model import serve_local_model
from swelab.generate.providers import SKIP_KINDS
from swelab.generate.serve import ServerProcess, save_thunderagent_state
from swelab.io import atomic_write_bytes, read_json, write_json
from swelab.params import ModelConfig, RunParams
from swelab.progress import tqdm
from swelab.registry import AGENTS
from swelab.rundir import CellRecord, RunLayout, Usage
from swelab.select import dataset
from swelab.workspace.repos import Workspace

# A model that answers this way will not answer the next attempt either: skip the rest, say why -- once
# GONE_CONFIRMATIONS attempts in a row have said so (a transient 404 must not cost a model its other cells).
MODEL_GONE = SKIP_KINDS
GONE_CONFIRMATIONS = 2
CRASH_WAIT_S = 5.0  # how long a failed attempt waits for a dying server to finish exiting
log = logging.getLogger(__name__)
PACKAGES = ("swelab", "swebench", "openai", "datasets", "papermill", "pandas", "plotly", "unidiff", "nbval")


@dataclass(frozen=True)
class Cell:
    model: ModelConfig
    instance: dict
    attempt: int

    @property
    def instance_id(self) -> str:
        return self.instance["instance_id"]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def is_finished(layout: RunLayout, cell: Cell) -> bool:
    """A cell is finished once written; skipped ones, and attempts cut short by a crashed embedded server,
    are retried, since the reason may have gone away."""
    record = layout.read_cell(cell.model.name, cell.instance_id, cell.attempt)
    return record is not None and record.status != "skipped" and record.error_kind != "server_crashed"


def model_instances(model: ModelConfig, instances: list[dict]) -> list[dict]:
    """The run's instances this model attempts: all, or the subset its entry names."""
    if model.instances is None:
        return instances
    known = {row["instance_id"] for row in instances}
    missing = [iid for iid in model.instances if iid not in known]
    if missing:
        raise ValueError(f"model {model.name}: instance {missing[0]} is not part of this run")
    return [row for row in instances if row["instance_id"] in set(model.instances)]


def plan_cells(params: RunParams, instances: list[dict]) -> list[Cell]:
    return [
        Cell(model, instance, attempt)
        for model in params.models
        if model.kind != "import"
        for instance in model_instances(model, instances)
        for attempt in range(1, params.attempts + 1)
    ]


def concurrency_limits(
    models: dict[str, ModelConfig], semaphore: Callable[[str, int], Any] = LOCAL.semaphore
) -> dict[str, Any]:
    """A model served with limited concurrency (the CPU model answers one request at a time) gets a
    semaphore taken before its attempt's clock starts, so queued attempts never time out waiting.
    Entries that reach the same endpoint and model share one semaphore. `semaphore(name, limit)` makes it: a
    threading.Semaphore here, a distributed.Semaphore (one for the whole cluster) under a Dask executor."""
    shared: dict[tuple, Any] = {}
    limits = {}
    for name, model in models.items():
        if model.options.max_concurrency:
            key = (model.provider, model.model_id, model.base_url)
            if key not in shared:
                shared[key] = semaphore("|".join(map(str, key)), model.options.max_concurrency)
            limits[name] = shared[key]
    return limits


def generate(
    params: RunParams,
    instances: list[dict],
    run_dir: Path | None = None,
    workspace: Workspace | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
) -> dict:
    """Run every unfinished cell, then write the predictions files and the manifest; returns counts
    (planned, reused as finished, run, by status, models skipped and why).

    `should_stop` is asked before each cell starts: once it says yes, the cells not yet started are left
    unwritten (counted as `cancelled`; a rerun resumes them) and cells in flight finish. `on_cell` gets each
    cell record once it is written (from the worker threads)."""
    layout = RunLayout(run_dir or params.run_dir)
    workspace = workspace or Workspace(repo_sources=params.repo_sources)
    write_manifest(params, instances, layout.root)
    cells = plan_cells(params, instances)
    todo = [c for c in cells if params.force or not is_finished(layout, c)]
    reused = len(cells) - len(todo)
    if progress:
        print(f"generate: {len(cells)} cells, {reused} already finished (reused), {len(todo)} to run")
    gone: dict[str, str] = {}
    gone_kind: dict[str, str] = {}  # the error_kind a gone model's skipped cells carry
    streaks: dict[str, int] = {}
    lock = threading.Lock()
    executor = executor_for(params.executor) if todo else LOCAL
    budget, planned = budget_plan(params, todo, progress)
    # the CPU gate reads this machine's CPU: it means nothing for attempts that run on a cluster's workers
    scaler = autoscale.WorkerScaler(params.workers) if params.workers_auto and not executor.remote else None
    with ExitStack() as stack:
        stack.enter_context(budgets.active(budget))  # every chat client of the run charges it
        models = {m.name: m for m in params.models}
        servers: dict[str, ServerProcess] = {}
        if any(_needs_local_server(models[c.model.name]) for c in todo):
            models, servers = stack.enter_context(local_model_servers(params.models, layout))
        agents = {name: build_agent(model) for name, model in models.items() if model.kind != "import"}
        limits = concurrency_limits(models, executor.semaphore)

        def attempt(cell: Cell, model: ModelConfig) -> CellRecord:
            """With threads the attempt writes into the run folder as it goes; on a cluster its files come back."""
            if executor.remote:
                return run_remote_attempt(executor, layout, cell, model, params)
            cell_dir = open_attempt_dir(layout, model, cell)
            return run_cell(cell, model, agents[model.name], cell_dir, params, workspace)

        def run_one(cell: Cell) -> str:
            if should_stop is not None and should_stop():
                return "cancelled"
            model = models[cell.model.name]
            with limits.get(model.name) or nullcontext(), scaler or nullcontext():
                with lock:
                    reason = gone.get(model.name)
                if reason:
                    outcome = outcome_for(ModelGone(reason, kind=gone_kind.get(model.name, "model_unavailable")))
                    record = cell_record(cell, model, outcome, "skipped", now_iso(), 0.0)
                elif budget.exhausted(model.provider):
                    outcome = AttemptOutcome("skipped", error_kind=budgets.BUDGET_EXHAUSTED,
                                             error=budget.why(model.provider))
                    record = cell_record(cell, model, outcome, "skipped", now_iso(), 0.0)
                else:
                    record = attempt(cell, model)
                    crash = server_crash(servers.get(model.name), record)
                    with lock:
                        if crash:
                            record.status, record.error_kind, record.error = "error", "server_crashed", crash
                            gone.setdefault(model.name, f"server_crashed: {crash}")
                            gone_kind.setdefault(model.name, "server_crashed")
                        else:
                            note_gone(record, streaks, gone)
                    if record.error_kind == budgets.BUDGET_EXHAUSTED:  # spent mid-attempt: redo it later
                        record.status = "skipped"
            layout.write_cell(record)
            if on_cell is not None:
                on_cell(record)
            return record.status

        statuses = []
        finished = executor.map_unordered(run_one, todo, params.workers)
        for cell, status in tqdm(finished, total=len(todo), desc="generate", disable=not progress):
            if isinstance(status, BaseException):  # a cell whose own handling failed is recorded, never lost
                status = record_failure(layout, cell, status)
            statuses.append(status)
    add_to_manifest(layout, workers=workers_record(params, scaler), budgets=budget_record(budget, planned))
    save_router_state(params.models, layout.root)
    if any(m.kind == "import" for m in params.models):
        import_for_params(params, instances, layout.root)
    write_predictions(params, instances, layout.root)
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    return {"planned": len(cells), "reused": reused, "ran": len(todo), "by_status": counts, "skipped_models": gone}


def budget_plan(params: RunParams, todo: list[Cell], progress: bool) -> tuple[budgets.RequestBudget, dict]:
    """The run's request budget, and the requests its cells are expected to make per provider; warns before
    the run starts where today's budget cannot cover them."""
    budget = budgets.RequestBudget(budgets.limits_of(params.budgets))
    planned = budgets.plan((c.model.provider, c.model.kind, c.model.max_steps) for c in todo)
    for warning in budgets.shortfalls(budget, planned):
        log.warning(warning)
        if progress:
            print(f"generate: {warning}")
    return budget, planned


def budget_record(budget: budgets.RequestBudget, planned: dict) -> dict:
    """What the manifest keeps of the budgets: limits, this run's plan, the day's count when it ended."""
    return {"day": budget.ledger.day(), "limits": budget.limits, "planned": planned,
            "spent_today": {p: budget.spent(p) for p in sorted(planned) if budget.limit(p) is not None}}


def workers_record(params: RunParams, scaler: autoscale.WorkerScaler | None) -> dict:
    """The generation workers: a fixed count, or `workers: auto`'s counts over time."""
    if scaler is None:
        return {"auto": False, "count": params.workers}
    return {"auto": True, "start": params.workers, "timeline": scaler.finish()}


def add_to_manifest(layout: RunLayout, **entries: object) -> None:
    """Entries known only once the cells ran, added to the manifest written at the start."""
    manifest = read_json(layout.manifest) if layout.manifest.exists() else {}
    manifest.update(entries)
    write_json(layout.manifest, manifest)


def server_crash(server: ServerProcess | None, record: CellRecord) -> str | None:
    """How the model's embedded server died, when it did: checked after every attempt, and given a moment
    after a failed one (a process whose connections just dropped may still be exiting)."""
    if server is None:
        return None
    return server.crashed(wait_s=0.0 if record.status == "ok" else CRASH_WAIT_S)


def note_gone(record: CellRecord, streaks: dict[str, int], gone: dict[str, str]) -> None:
    """One rule for every mode: an attempt that ended because the model is gone is `skipped` (a rerun tries it
    again), and the model's remaining cells are skipped once GONE_CONFIRMATIONS attempts in a row said so."""
    if record.error_kind not in MODEL_GONE:
        streaks[record.model] = 0
        return
    record.status = "skipped"
    streaks[record.model] = streaks.get(record.model, 0) + 1
    if streaks[record.model] >= GONE_CONFIRMATIONS:
        gone.setdefault(record.model, f"{record.error_kind}: {record.error}")


def record_failure(layout: RunLayout, cell: Cell, error: BaseException) -> str:
    """The `error` cell of an attempt whose handling raised (outside the agent, which maps its own failures)."""
    record = cell_record(cell, cell.model, outcome_for(error), cell.model.kind, now_iso(), 0.0)
    layout.write_cell(record)
    return record.status


def open_attempt_dir(layout: RunLayout, model: ModelConfig, cell: Cell) -> Path:
    """The attempt's folder in the run, ready for a fresh attempt."""
    artifacts = layout.attempt_dir(model.name, cell.instance_id, cell.attempt)
    artifacts.mkdir(parents=True, exist_ok=True)
    # A redone attempt starts fresh records; the calls of the run it replaces are kept beside them.
    layout.keep_previous_calls(model.name, cell.instance_id, cell.attempt)
    (artifacts / TRAJECTORY).unlink(missing_ok=True)
    (artifacts / REFUSED_PATCH).unlink(missing_ok=True)  # a previous execution's oversized patch
    return artifacts


def run_cell(
    cell: Cell, model: ModelConfig, agent: Agent, cell_dir: Path, params: RunParams, workspace: Workspace
) -> CellRecord:
    """One attempt, its calls and trajectory written to `cell_dir`; whatever goes wrong inside becomes a
    recorded status, never a lost run."""
    started_at, started = now_iso(), time.monotonic()
    ctx = AttemptContext(
        cell_dir=cell_dir,
        attempt=cell.attempt,
        deadline=started + params.attempt_timeout_s,
        params=params,
        workspace=workspace,
    )
    try:
        outcome = agent.run(cell.instance, ctx)
    except Exception as exc:  # an agent bug must cost one cell, not the run
        outcome = outcome_for(exc)
    mode = getattr(agent, "mode", model.kind)
    return cell_record(cell, model, outcome, mode, started_at, time.monotonic() - started)


# -- attempts on a cluster ------------------------------------------------------------------------------
ATTEMPT_FILES = ("calls.jsonl", TRAJECTORY, MINI_TRAJECTORY, REFUSED_PATCH)  # what an attempt writes


@dataclass(frozen=True)
class AttemptTask:
    """What a worker needs for one attempt (all picklable): the cell, the model entry as resolved on the client
    (an embedded server's URL), the params. The worker builds its Workspace and agent itself."""

    cell: Cell
    model: ModelConfig
    params: RunParams


@dataclass
class AttemptResult:
    """What comes back: the cell record and the attempt's files by name, for the client to write."""

    record: CellRecord
    files: dict[str, bytes]


def attempt_task(task: AttemptTask) -> AttemptResult:
    """On a worker: one attempt in a scratch folder of its own, charged to the worker's request ledger (shared
    when the workers share SWELAB_CACHE); nothing is written to the run folder here."""
    workspace = worker_workspace(task.params.repo_sources)
    agent = per_process(("agent", repr(task.model)), lambda: build_agent(task.model))
    budget = budgets.RequestBudget(budgets.limits_of(task.params.budgets))
    with tempfile.TemporaryDirectory(prefix="swelab-attempt-") as scratch, budgets.active(budget):
        record = run_cell(task.cell, task.model, agent, Path(scratch), task.params, workspace)
        files = {name: (Path(scratch) / name).read_bytes() for name in ATTEMPT_FILES
                 if (Path(scratch) / name).is_file()}
    return AttemptResult(record, files)


def run_remote_attempt(executor: Executor, layout: RunLayout, cell: Cell, model: ModelConfig,
                       params: RunParams) -> CellRecord:
    """Send one attempt to the cluster and write what comes back: its files, then (by the caller) its record, so
    a client killed in between leaves the cell unfinished, to be redone. A task lost past Dask's retries (its
    workers kept dying) or one that raised is an `error` cell with the reason."""
    key = f"attempt-{model.dirname}-{cell.instance_id}-a{cell.attempt}"
    try:
        result = executor.run(attempt_task, AttemptTask(cell, model, params), key=key)
    except Exception as exc:  # a lost worker, an unpicklable result: one cell, never the run
        open_attempt_dir(layout, model, cell)
        return cell_record(cell, model, outcome_for(exc), model.kind, now_iso(), 0.0)
    cell_dir = open_attempt_dir(layout, model, cell)
    for name, data in result.files.items():
        atomic_write_bytes(cell_dir / name, data)
    return result.record


def cell_record(
    cell: Cell, model: ModelConfig, outcome: AttemptOutcome, mode: str, started_at: str, seconds: float
) -> CellRecord:
    """The one place an attempt's outcome becomes the run folder's cell record."""
    return CellRecord(
        model=model.name,
        instance_id=cell.instance_id,
        repo=cell.instance["repo"],
        attempt=cell.attempt,
        mode=mode,
        status=outcome.status,
        error_kind=outcome.error_kind,
        error=outcome.error,
        model_patch=outcome.model_patch or "",
        oracle=model.oracle,
        started_at=started_at,
        finished_at=now_iso(),
        duration_s=round(seconds, 3),
        steps=outcome.steps,
        tool_calls=outcome.tool_calls,
        n_calls=outcome.n_calls,
        usage=Usage.from_mapping(outcome.usage),
        probe_files=outcome.probe_files,
    )


def write_predictions(params: RunParams, instances: list[dict], run_dir: Path) -> list[Path]:
    """Official predictions files, one per (model, attempt), from the finished cells."""
    layout = RunLayout(run_dir)
    written = []
    for model in params.models:
        if model.kind == "import":
            continue  # swelab.generate.imports writes those predictions files itself
        if not AGENTS[model.kind].produces_patch:
            continue  # the contamination probe names files, it submits nothing to grade
        for attempt in range(1, params.attempts + 1):
            rows = []
            for instance in model_instances(model, instances):
                record = layout.read_cell(model.name, instance["instance_id"], attempt)
                if record is not None:
                    rows.append({"instance_id": record.instance_id, "model_name_or_path": model.name,
                                 "model_patch": record.model_patch})
            if rows:
                written.append(layout.write_predictions(model.name, attempt, rows))
    return written


def save_router_state(models: tuple[ModelConfig, ...], run_dir: Path) -> None:
    """Through ThunderAgent, keep its per-program view (GET /programs, /profiles) next to the run."""
    urls = {m.base_url for m in models if m.provider == "thunderagent" and m.base_url}
    if urls:
        for url in sorted(urls):
            save_thunderagent_state(url, run_dir)


def _needs_local_server(model: ModelConfig) -> bool:
    return model.provider == "local" and not model.base_url


@contextmanager
def local_model_servers(
    models: tuple[ModelConfig, ...], layout: RunLayout
) -> Iterator[tuple[dict[str, ModelConfig], dict[str, ServerProcess]]]:
    """Start the embedded model once per model id (its output in logs/<model>-server.log, kept), point every
    local model entry at it, and hand back each such entry's server so the run can watch it."""
    resolved = {m.name: m for m in models}
    started: dict[str, ServerProcess] = {}
    servers: dict[str, ServerProcess] = {}
    with ExitStack() as stack:
        for model in models:
            if _needs_local_server(model):
                if model.model_id not in started:
                    started[model.model_id] = stack.enter_context(
                        serve_local_model(model, log_path=layout.server_log(model.name)))
                servers[model.name] = started[model.model_id]
                resolved[model.name] = dataclasses.replace(model, base_url=servers[model.name].base_url)
        yield resolved, servers


# -- manifest ---------------------------------------------------------------------------------------
def project_commit(root: Path) -> dict:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "lib", "notebooks", "params"], cwd=root,
                           capture_output=True, text=True)
    return {
        "commit": head.stdout.strip() or None,
        "dirty": bool(dirty.stdout.strip()) if head.returncode == 0 else None,
    }


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_manifest(params: RunParams, instances: list[dict], run_dir: Path | None = None) -> dict:
    run_dir = Path(run_dir or params.run_dir)
    manifest = {
        "run_id": params.run_id,
        "params_file": params.source_file,
        "params": params.resolved(),
        "instance_ids": [row["instance_id"] for row in instances],
        "dataset": dataset.dataset_info(params.dataset.source, params.dataset.revision, instances,
                                        params.dataset.split),
        "seeds": {"selection_seed": params.selection_seed, "models": {m.name: m.seed for m in params.models}},
        "packages": package_versions(),
        "project": project_commit(Path(params.project_root)),
        "written_at": now_iso(),
    }
    write_json(RunLayout(run_dir).manifest, manifest)
    return manifest
