"""The models × instances × attempts grid: concurrency, per-attempt deadlines, resume, run manifest."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import platform
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from swelab.generate.agents import AttemptContext, AttemptOutcome, build_agent
from swelab.io import read_json, write_json, write_jsonl
from swelab.params import ModelConfig, RunParams
from swelab.select import dataset
from swelab.workspace.repos import Workspace

# A model that answers this way will not answer the next attempt either: skip the rest, say why.
MODEL_GONE = ("model_not_found", "unavailable", "auth")
PACKAGES = ("swelab", "swebench", "openai", "datasets", "papermill", "pandas", "plotly", "unidiff", "nbval")


@dataclass(frozen=True)
class Cell:
    model: ModelConfig
    instance: dict
    attempt: int

    def path(self, run_dir: Path) -> Path:
        return run_dir / "cells" / self.model.dirname / self.instance["instance_id"] / f"{self.attempt}.json"

    def artifacts_dir(self, run_dir: Path) -> Path:
        return run_dir / "cells" / self.model.dirname / self.instance["instance_id"] / str(self.attempt)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def is_finished(path: Path) -> bool:
    """A cell is finished once written; skipped ones are retried, since the reason may have gone away."""
    if not path.exists():
        return False
    return read_json(path).get("status") != "skipped"


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


def concurrency_limits(models: dict[str, ModelConfig]) -> dict[str, threading.Semaphore]:
    """A model served with limited concurrency (the CPU model answers one request at a time) gets a
    semaphore taken before its attempt's clock starts, so queued attempts never time out waiting.
    Entries that reach the same endpoint and model share one semaphore."""
    shared: dict[tuple, threading.Semaphore] = {}
    limits = {}
    for name, model in models.items():
        if model.options.get("max_concurrency"):
            key = (model.provider, model.model_id, model.base_url)
            limits[name] = shared.setdefault(key, threading.Semaphore(int(model.options["max_concurrency"])))
    return limits


def generate(
    params: RunParams,
    instances: list[dict],
    run_dir: Path | None = None,
    workspace: Workspace | None = None,
    progress: bool = True,
) -> dict:
    """Run every unfinished cell; returns counts (planned, skipped as finished, run, by status)."""
    run_dir = Path(run_dir or params.run_dir)
    workspace = workspace or Workspace(repo_sources=params.repo_sources)
    cells = plan_cells(params, instances)
    todo = [c for c in cells if params.force or not is_finished(c.path(run_dir))]
    reused = len(cells) - len(todo)
    if progress:
        print(f"generate: {len(cells)} cells, {reused} already finished (reused), {len(todo)} to run")
    gone: dict[str, str] = {}
    lock = threading.Lock()
    with ExitStack() as stack:
        models = {m.name: m for m in params.models}
        if any(_needs_local_server(models[c.model.name]) for c in todo):
            models = stack.enter_context(local_model_servers(params.models))
        agents = {name: build_agent(model) for name, model in models.items() if model.kind != "import"}
        limits = concurrency_limits(models)

        def run_one(cell: Cell) -> str:
            model = models[cell.model.name]
            with limits.get(model.name) or nullcontext():
                with lock:
                    reason = gone.get(model.name)
                if reason:
                    outcome = AttemptOutcome(status="skipped", error=reason, error_kind="model_unavailable")
                    result = _cell_record(cell, model, outcome, "skipped", now_iso(), 0.0)
                else:
                    result = run_cell(cell, model, agents[model.name], run_dir, params, workspace)
                    if result["status"] == "skipped" and result.get("error_kind") in MODEL_GONE:
                        with lock:
                            gone.setdefault(model.name, f"{result['error_kind']}: {result.get('error')}")
            write_json(cell.path(run_dir), result)
            return result["status"]

        with ThreadPoolExecutor(max_workers=params.workers) as pool:
            iterator = pool.map(run_one, todo)
            if progress:
                from tqdm.auto import tqdm

                iterator = tqdm(iterator, total=len(todo), desc="generate")
            statuses = list(iterator)
    save_router_state(params.models, run_dir)
    if any(m.kind == "import" for m in params.models):
        from swelab.generate.imports import import_for_params

        import_for_params(params, instances, run_dir)
    write_predictions(params, instances, run_dir)
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    return {"planned": len(cells), "reused": reused, "ran": len(todo), "by_status": counts, "skipped_models": gone}


def run_cell(
    cell: Cell, model: ModelConfig, agent, run_dir: Path, params: RunParams, workspace: Workspace
) -> dict:
    """One attempt; whatever goes wrong inside becomes a recorded status, never a lost run."""
    artifacts = cell.artifacts_dir(run_dir)
    artifacts.mkdir(parents=True, exist_ok=True)
    for stale in ("calls.jsonl", "trajectory.jsonl"):  # a redone attempt starts a fresh record
        (artifacts / stale).unlink(missing_ok=True)
    started_at, started = now_iso(), time.monotonic()
    ctx = AttemptContext(
        cell_dir=artifacts,
        attempt=cell.attempt,
        deadline=started + params.attempt_timeout_s,
        params=params,
        workspace=workspace,
    )
    try:
        outcome = agent.run(cell.instance, ctx)
    except Exception as exc:  # an agent bug must cost one cell, not the run
        outcome = AttemptOutcome(status="error", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
    mode = getattr(agent, "mode", model.kind)
    return _cell_record(cell, model, outcome, mode, started_at, time.monotonic() - started)


def _cell_record(cell: Cell, model: ModelConfig, outcome: AttemptOutcome, mode: str, started_at: str, seconds: float):
    usage = {k: outcome.usage.get(k) for k in ("prompt_tokens", "completion_tokens", "cached_tokens",
                                                "reasoning_tokens", "cost_usd")}
    return {
        "model": model.name,
        "instance_id": cell.instance["instance_id"],
        "repo": cell.instance["repo"],
        "attempt": cell.attempt,
        "mode": mode,
        "status": outcome.status,
        "error_kind": outcome.error_kind,
        "error": outcome.error,
        "model_patch": outcome.model_patch or "",
        "oracle": model.oracle,
        "started_at": started_at,
        "finished_at": now_iso(),
        "duration_s": round(seconds, 3),
        "steps": outcome.steps,
        "tool_calls": outcome.tool_calls,
        "n_calls": outcome.n_calls,
        "usage": usage,
    }


def write_predictions(params: RunParams, instances: list[dict], run_dir: Path) -> list[Path]:
    """Official predictions files, one per (model, attempt), from the finished cells."""
    written = []
    for model in params.models:
        if model.kind == "import":
            continue  # swelab.generate.imports writes those predictions files itself
        for attempt in range(1, params.attempts + 1):
            rows = []
            for instance in model_instances(model, instances):
                path = Cell(model, instance, attempt).path(run_dir)
                if path.exists():
                    cell = read_json(path)
                    rows.append(
                        {
                            "instance_id": cell["instance_id"],
                            "model_name_or_path": model.name,
                            "model_patch": cell["model_patch"],
                        }
                    )
            if rows:
                written.append(write_jsonl(run_dir / "predictions" / f"{model.dirname}__a{attempt}.jsonl", rows))
    return written


def save_router_state(models: tuple[ModelConfig, ...], run_dir: Path) -> None:
    """Through ThunderAgent, keep its per-program view (GET /programs, /profiles) next to the run."""
    urls = {m.base_url for m in models if m.provider == "thunderagent" and m.base_url}
    if urls:
        from swelab.generate.serve import save_thunderagent_state

        for url in sorted(urls):
            save_thunderagent_state(url, run_dir)


def _needs_local_server(model: ModelConfig) -> bool:
    return model.provider == "local" and not model.base_url


@contextmanager
def local_model_servers(models: tuple[ModelConfig, ...]) -> Iterator[dict[str, ModelConfig]]:
    """Start the embedded model once per model id, and point every local model entry at it."""
    from swelab.generate.local_model import serve_local_model

    resolved = {m.name: m for m in models}
    urls: dict[str, str] = {}
    with ExitStack() as stack:
        for model in models:
            if _needs_local_server(model):
                if model.model_id not in urls:
                    urls[model.model_id] = stack.enter_context(serve_local_model(model))
                resolved[model.name] = dataclasses.replace(model, base_url=urls[model.model_id])
        yield resolved


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
    write_json(run_dir / "manifest.json", manifest)
    return manifest
