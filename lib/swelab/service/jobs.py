"""Submissions and execution: a params document or a predictions upload becomes a params file in the job's
folder (validated by swelab.params like any other), and `execute` runs the stages `swelab run` runs -- select,
generate, evaluate, analyze -- in process, through the library, reporting each cell and verdict."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swelab.analyze.artifacts import write_analysis
from swelab.evaluate.backends import evaluate_run
from swelab.generate.imports import ImportFormatError, detect_format, read_predictions
from swelab.generate.runner import generate, is_finished, plan_cells
from swelab.io import atomic_write_bytes, read_jsonl
from swelab.params import ParamsError, RunParams, find_project_root, load_params
from swelab.rundir import CellRecord, PredictionSet, RunLayout
from swelab.select import selection
from swelab.select.instances import write_run_instances
from swelab.service.policy import Limits, Refused, check_document, check_paths, included_paths, local_paths

Emit = Callable[..., None]  # emit(kind, **data): one event of the job's log
_FILE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
_MODEL_PART_RE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Settings:
    """Where the service keeps things and what it allows."""

    outputs_dir: Path
    """Run folders: <outputs_dir>/<run_id>."""
    state_dir: Path
    """jobs/<job_id>/ (params, events, worker log) and uploads/."""
    allowed_roots: tuple[Path, ...]
    """Local paths a params document may name lie under one of these (the uploads folder always counts)."""
    project_root: Path
    """The swelab project the workers run in (relative paths of a params document resolve here)."""
    limits: Limits = field(default_factory=Limits)

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.state_dir / "uploads"


@dataclass(frozen=True)
class Submission:
    """A validated submission, its params file written into its job folder."""

    job_id: str
    kind: str
    """params | predictions."""
    params: RunParams
    job_dir: Path
    params_file: Path


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def safe_file_name(name: str | None, default: str) -> str:
    """A file name with no folder in it and only plain characters."""
    base = _FILE_NAME_RE.sub("-", Path(name or default).name).strip(".-") or default
    return base[:100]


def _check_size(data: bytes, cap: int, what: str) -> None:
    if len(data) > cap:
        raise Refused(413, f"{what} is {len(data)} bytes; this service takes at most {cap}")


def _parse_document(data: bytes, where: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise Refused(422, f"{where}: not a YAML or JSON document ({' '.join(str(exc).split())[:300]})") from None
    if not isinstance(raw, dict):
        raise Refused(422, f"{where}: the top level must be a mapping of params fields")
    return raw


def _load(settings: Settings, job_dir: Path, file_name: str, data: bytes, raw: dict) -> tuple[RunParams, Path]:
    """Write the document into the job folder and load it exactly as `swelab run` loads a params file."""
    allowed = (*settings.allowed_roots, settings.uploads_dir)
    path = atomic_write_bytes(job_dir / file_name, data)
    check_paths(included_paths(raw, find_project_root(path.parent)), allowed)
    try:
        params = load_params(path, overrides={"outputs_dir": str(settings.outputs_dir)})
    except ParamsError as exc:
        raise Refused(422, str(exc).replace(str(path), file_name)) from None
    check_paths(local_paths(params), allowed)
    return params, path


def prepare_params(settings: Settings, data: bytes, file_name: str | None = None) -> Submission:
    """A params document (YAML or JSON, the params-file schema) as a job; Refused names the problem."""
    _check_size(data, settings.limits.max_params_bytes, "the params document")
    name = safe_file_name(file_name, "params.yaml")
    if not name.endswith((".yaml", ".yml", ".json")):
        name += ".yaml"
    raw = _parse_document(data, name)
    check_document(raw)
    job_id = new_job_id()
    job_dir = settings.jobs_dir / job_id
    try:
        params, path = _load(settings, job_dir, name, data, raw)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return Submission(job_id, "params", params, job_dir, path)


def prepare_predictions(
    settings: Settings,
    data: bytes,
    file_name: str,
    model: str | None = None,
    dataset: str = "minibench",
    split: str | None = None,
    name: str | None = None,
    eval_backend: str | None = None,
) -> Submission:
    """A predictions file (SWE-bench JSONL, mini-swe-agent preds.json, OpenHands output.jsonl) as an
    evaluation-only job: one `kind: import` model over the instances the file names. The upload is kept by
    content, so the same file with the same options is the same run."""
    _check_size(data, settings.limits.max_upload_bytes, "the predictions file")
    upload_name = safe_file_name(file_name, "predictions.jsonl")
    if not upload_name.endswith((".json", ".jsonl")):
        raise Refused(422, f"{upload_name}: a predictions file ends in .json or .jsonl")
    digest = hashlib.sha256(data).hexdigest()[:16]
    upload = settings.uploads_dir / digest / upload_name
    if not upload.exists():
        atomic_write_bytes(upload, data)
    try:
        fmt = detect_format(upload)
        items = read_predictions(upload, fmt)
    except ImportFormatError as exc:
        raise Refused(422, str(exc).replace(str(upload), upload_name)) from None
    if not items:
        raise Refused(422, f"{upload_name}: no predictions in the file")
    model_name = model or _model_in_file(upload, fmt) or Path(upload_name).stem
    dataset_doc: Any = dataset if split is None else {"source": dataset, "split": split}
    document: dict[str, Any] = {
        "name": name or "predictions",
        "dataset": dataset_doc,
        "instances": sorted(item.instance_id for item in items),
        "attempts": 1,
        "models": [{"name": model_safe(model_name), "kind": "import",
                    "options": {"path": str(upload), "format": fmt}}],
    }
    if eval_backend:
        document["eval_backend"] = eval_backend
    data_out = json.dumps(document, indent=2).encode()
    job_id = new_job_id()
    job_dir = settings.jobs_dir / job_id
    try:
        params, path = _load(settings, job_dir, safe_file_name(document["name"], "predictions") + ".yaml",
                             data_out, document)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return Submission(job_id, "predictions", params, job_dir, path)


def _model_in_file(path: Path, fmt: str) -> str | None:
    """The model_name_or_path the predictions carry (SWE-bench and mini-swe-agent formats), if any."""
    try:
        if fmt == "mini-swe-agent":
            entries = list(json.loads(path.read_text(encoding="utf-8")).values())
        elif path.suffix == ".json":
            entries = json.loads(path.read_text(encoding="utf-8"))
        else:
            entries = read_jsonl(path)
    except (ValueError, AttributeError):
        return None
    first = entries[0] if entries and isinstance(entries[0], dict) else {}
    value = first.get("model_name_or_path")
    return value if isinstance(value, str) and value.strip() else None


def model_safe(name: str) -> str:
    """A model name the params accept (parts of letters, digits, '.', '_', '-' separated by '/')."""
    parts = [_MODEL_PART_RE.sub("-", part).strip(".-_") for part in name.split("/")]
    return "/".join(p for p in parts if p) or "predictions"


# ---------------------------------------------------------------- execution


def select_rows(params: RunParams) -> list[dict]:
    """01_select's work without its displays: the params' instance set (redrawn when they give a selection),
    written into the run folder."""
    rows, info = selection.load_for_params(params)
    drawn = None
    if params.selection:
        drawn, _ = selection.recompute_selection(params, rows, info, selection.instance_stats(rows),
                                                 params.run_dir)
    run_rows = selection.run_rows_for(params, rows, drawn)
    write_run_instances(params.run_dir, run_rows)
    return run_rows


def _quiet(kind: str, **data: Any) -> None:
    return None


def execute(params: RunParams, emit: Emit = _quiet, should_stop: Callable[[], bool] | None = None) -> dict:
    """select -> generate -> evaluate -> analyze, as `swelab run` does, in this process. `emit` gets every
    stage, the plan, each cell and verdict; `should_stop` is asked before each cell and between stages.
    Returns {"state": "finished" | "cancelled", ...}."""
    stop = should_stop or (lambda: False)
    layout = RunLayout(params.run_dir)
    emit("stage", stage="select")
    rows = select_rows(params)
    cells = plan_cells(params, rows)
    reused = 0 if params.force else sum(is_finished(layout, cell) for cell in cells)
    emit("plan", cells=len(cells), reused=reused, instances=len(rows), run_id=params.run_id)
    if stop():
        return {"state": "cancelled"}
    emit("stage", stage="generate")

    def on_cell(record: CellRecord) -> None:
        emit("cell", model=record.model, instance_id=record.instance_id, attempt=record.attempt,
             status=record.status)

    generated = generate(params, rows, progress=False, should_stop=stop, on_cell=on_cell)
    if stop():
        return {"state": "cancelled", "generate": generated}
    emit("stage", stage="evaluate")
    sets = layout.prediction_sets()
    emit("eval_plan", predictions=sum(len(read_jsonl(s.path)) for s in sets),
         graded=0 if params.force else _graded(layout, sets))

    def on_verdict(pset: PredictionSet, instance_id: str, resolved: bool) -> None:
        emit("verdict", model=pset.model, attempt=pset.attempt, instance_id=instance_id, resolved=resolved)

    evaluated = evaluate_run(params, progress=False, on_verdict=on_verdict)
    if stop():
        return {"state": "cancelled", "generate": generated, "evaluate": evaluated}
    emit("stage", stage="analyze")
    analysis = write_analysis(params.run_dir)
    return {"state": "finished", "generate": generated, "evaluate": evaluated,
            "written": [str(p) for p in analysis.written]}


def _graded(layout: RunLayout, sets: list[PredictionSet]) -> int:
    return sum(layout.has_verdict(s.model, s.attempt, row["instance_id"]) for s in sets for row in read_jsonl(s.path))
