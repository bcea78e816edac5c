"""The official SWE-bench harness (`python -m swebench.harness.run_evaluation`, swebench 5.0.2): its
command line for Docker and Modal, the traps it has, and collecting its reports into our run directory.

Known traps of 5.0.2, handled here rather than discovered late:
- Modal cannot run 5.x test specs: `run_evaluation_modal.get_instance_image` reads
  `test_spec.setup_env_script` / `install_repo_script`, which the 5.x `TestSpec` no longer has, so every
  instance fails with AttributeError after the sandbox is requested. `modal_supported()` says so up front.
- A predictions file with 0 lines crashes the harness (`make_run_report` indexes the first prediction):
  `check_predictions` refuses it before any process starts.
- Entries with an empty `model_patch` are dropped before any container starts and counted as
  "empty_patch", never tested. The no-patch baseline must really run the tests unpatched, so those
  entries are split off (`split_predictions`) and routed to the local backend, or, with Docker,
  to `run_evaluation.run_instances(..., skip_patch=True)` (`no_patch_baseline_docker`).
- Logs go to `logs/run_evaluation/<run_id>/<model>/<instance>/` under the working directory, and an
  instance with a report there is skipped on the next run with the same run id: every predictions file
  (one per model and attempt) gets its own harness run id, `<run_id>.<model>__a<k>`.
- 5.0.2 has no `--cache_level` flag (4.x had one); `harness_command` only passes flags the installed
  harness declares (`harness_flags()`), so a cache level is dropped with a note instead of crashing argparse.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swelab import io
from swelab.evaluate.local import evaluate_local
from swelab.select.dataset import has_grading_fields
from swelab.workspace import recipes
from swelab.workspace.repos import Workspace

EVAL_MODULE = "swebench.harness.run_evaluation"
DEFAULT_EVAL_WORKERS = 4
LOG_ROOT = Path("logs") / "run_evaluation"  # swebench.harness.constants.RUN_EVALUATION_LOG_DIR
INSTANCE_LOG_FILES = ("report.json", "test_output.txt", "run_instance.log", "patch.diff", "eval.sh")
# Keys of the harness's run report (make_run_report, schema_version 2) that a parse must find.
RUN_REPORT_KEYS = (
    "total_instances",
    "submitted_instances",
    "completed_instances",
    "resolved_instances",
    "unresolved_instances",
    "empty_patch_instances",
    "error_instances",
    "completed_ids",
    "resolved_ids",
    "unresolved_ids",
    "empty_patch_ids",
    "error_ids",
    "schema_version",
)


class HarnessError(RuntimeError):
    """The official harness cannot be run as asked; the message says why in one line."""


# ---------------------------------------------------------------- availability


def docker_available(timeout_s: float = 5.0) -> tuple[bool, str]:
    """(True, "docker engine <version>") or (False, one line saying why not)."""
    host = os.environ.get("DOCKER_HOST")
    if not host and not Path("/var/run/docker.sock").exists():
        return False, "no Docker engine (no /var/run/docker.sock and DOCKER_HOST is unset)"
    try:
        import docker
    except ImportError:
        return False, "no Docker engine client (the docker package is not installed)"
    try:
        client = docker.from_env(timeout=int(timeout_s))
        version = client.version().get("Version", "?")
    except Exception as exc:  # the client raises many types; one line is what the user needs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return False, f"no Docker engine reachable ({first[:200]})"
    return True, f"docker engine {version}"


def modal_supported() -> tuple[bool, str]:
    """Whether the installed harness can evaluate on Modal; the reason names the blocking defect."""
    from swebench.types import TestSpec

    missing = [name for name in ("setup_env_script", "install_repo_script") if not _has_field(TestSpec, name)]
    if missing:
        return False, (
            "Modal evaluation is broken in this swebench: its Modal image builder reads TestSpec."
            f"{' and '.join(missing)}, which swebench 5.x's TestSpec lacks (every instance would fail)"
        )
    if importlib.util.find_spec("modal") is None:
        return False, "Modal evaluation needs the modal package (pip install modal)"
    if not (Path.home() / ".modal.toml").exists():
        return False, "Modal credentials missing (~/.modal.toml); run `modal token new`"
    return True, "modal ready"


def _has_field(cls: type, name: str) -> bool:
    fields = getattr(cls, "__dataclass_fields__", {})
    return name in fields or hasattr(cls, name)


# ---------------------------------------------------------------- command line


def harness_flags() -> set[str]:
    """The long flags the installed `run_evaluation` declares, read from its source (importing it would
    pull in docker and modal)."""
    spec = importlib.util.find_spec(EVAL_MODULE)
    if spec is None or spec.origin is None:
        raise HarnessError(f"{EVAL_MODULE} is not installed (pip install 'swebench>=5.0.2,<6')")
    source = Path(spec.origin).read_text(encoding="utf-8")
    return set(re.findall(r"\"--([a-z_]+)\"", source))


def eval_workers(params: Any = None, environ: dict | None = None) -> int:
    """`--max_workers`: the params' eval_workers (which already honour EVAL_WORKERS), else EVAL_WORKERS, else 4."""
    if params is not None and getattr(params, "eval_workers", None):
        return int(params.eval_workers)
    value = (os.environ if environ is None else environ).get("EVAL_WORKERS")
    if not value:
        return DEFAULT_EVAL_WORKERS
    try:
        workers = int(value)
    except ValueError:
        raise HarnessError(f"EVAL_WORKERS must be a whole number, got {value!r}") from None
    if workers < 1:
        raise HarnessError(f"EVAL_WORKERS must be at least 1, got {workers}")
    return workers


@dataclass
class PredictionsCheck:
    path: Path
    ids: list[str]
    empty_ids: list[str]  # empty model_patch: the harness would skip these untested
    model_names: list[str]

    @property
    def patched_ids(self) -> list[str]:
        return [iid for iid in self.ids if iid not in set(self.empty_ids)]


def check_predictions(path: str | Path) -> PredictionsCheck:
    """Read a predictions JSONL and refuse what the harness mishandles: no lines, missing fields, repeats."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"{path}: predictions file not found")
    if path.suffix != ".jsonl":
        raise HarnessError(f"{path}: the harness reads .json or .jsonl; swelab writes .jsonl")
    try:
        rows = io.read_jsonl(path)
    except ValueError as exc:
        raise HarnessError(str(exc)) from exc
    if not rows:
        raise HarnessError(f"{path}: 0 predictions; swebench 5.0.2 crashes on an empty predictions file")
    ids, empty, names = [], [], set()
    for number, row in enumerate(rows, start=1):
        missing = [k for k in ("instance_id", "model_name_or_path", "model_patch") if k not in row]
        if missing:
            raise HarnessError(f"{path}:{number}: lacks {', '.join(missing)}")
        if row["instance_id"] in ids:
            raise HarnessError(f"{path}:{number}: instance {row['instance_id']} predicted twice")
        ids.append(row["instance_id"])
        names.add(row["model_name_or_path"])
        if not (row["model_patch"] or "").strip():
            empty.append(row["instance_id"])
    return PredictionsCheck(path, ids, empty, sorted(names))


def split_predictions(path: str | Path, out_dir: str | Path) -> tuple[Path | None, list[str]]:
    """(a predictions file of the non-empty patches for the harness, or None; the empty-patch ids)."""
    check = check_predictions(path)
    patched = [row for row in io.read_jsonl(path) if row["instance_id"] not in set(check.empty_ids)]
    if not patched:
        return None, check.empty_ids
    return io.write_jsonl(Path(out_dir) / Path(path).name, patched), check.empty_ids


def harness_command(
    dataset_name: str,
    predictions_path: str | Path,
    run_id: str,
    instance_ids: list[str] | None = None,
    max_workers: int | None = None,
    timeout_s: float | None = None,
    split: str = "test",
    report_dir: str | Path | None = None,
    modal: bool = False,
    cache_level: str | None = None,
    python: str = sys.executable,
    flags: set[str] | None = None,
) -> list[str]:
    """The argv of `python -m swebench.harness.run_evaluation` for these predictions.

    Refuses a predictions file with no non-empty patch (nothing the harness would test) and Modal when
    `modal_supported()` says no; drops flags the installed harness does not declare.
    """
    check = check_predictions(predictions_path)
    if not check.patched_ids:
        raise HarnessError(
            f"{predictions_path}: every model_patch is empty; the harness would test nothing "
            "(route the no-patch baseline to the local backend or run_instances(skip_patch=True))"
        )
    if modal:
        ok, reason = modal_supported()
        if not ok:
            raise HarnessError(reason)
    flags = harness_flags() if flags is None else flags
    argv = [python, "-m", EVAL_MODULE, "--dataset_name", str(dataset_name), "--split", split]
    argv += ["--predictions_path", str(predictions_path), "--run_id", run_id]
    argv += ["--max_workers", str(max_workers or eval_workers())]
    if timeout_s is not None:
        argv += ["--timeout", str(int(timeout_s))]
    if report_dir is not None:
        argv += ["--report_dir", str(report_dir)]
    if cache_level is not None and "cache_level" in flags:
        argv += ["--cache_level", cache_level]
    if modal:
        argv += ["--modal", "true"]
    if instance_ids:
        argv += ["--instance_ids", *instance_ids]
    unknown = sorted({a[2:] for a in argv if a.startswith("--")} - flags)
    if unknown:
        raise HarnessError(f"the installed harness lacks --{unknown[0]}; is swebench 5.0.2 installed?")
    return argv


def harness_run_id(run_id: str, predictions_stem: str) -> str:
    """One harness run id per predictions file: the harness skips instances a run id already reported.
    It names containers too, so only [A-Za-z0-9_.-] survive."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{run_id}.{predictions_stem}")


def report_file_name(model_name: str, harness_id: str) -> str:
    """The run report the harness writes into --report_dir (make_run_report)."""
    return f"{model_name.replace('/', '__')}.{harness_id}.json"


def instance_log_dir(workdir: str | Path, harness_id: str, model_name: str, instance_id: str) -> Path:
    return Path(workdir) / LOG_ROOT / harness_id / model_name.replace("/", "__") / instance_id


# ---------------------------------------------------------------- reports


def parse_run_report(path: str | Path) -> dict:
    """The harness's run report, checked for the schema_version 2 keys; errors name the file and key."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"{path}: harness run report not found")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: not valid JSON ({exc.msg})") from exc
    missing = [key for key in RUN_REPORT_KEYS if key not in report]
    if missing:
        raise HarnessError(f"{path}: not a swebench run report (lacks {', '.join(missing)})")
    if report["schema_version"] != 2:
        raise HarnessError(f"{path}: schema_version {report['schema_version']}, expected 2")
    for key in ("resolved", "unresolved", "completed", "empty_patch", "error"):
        if len(report[f"{key}_ids"]) != report[f"{key}_instances"]:
            raise HarnessError(f"{path}: {key}_instances disagrees with {key}_ids")
    return report


def parse_instance_report(path: str | Path, instance_id: str) -> dict:
    """One instance's `get_eval_report` entry from the harness's per-instance report.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path}: unreadable instance report ({exc})") from exc
    if instance_id not in data or "resolved" not in data[instance_id]:
        raise HarnessError(f"{path}: no verdict for {instance_id}")
    return data[instance_id]


@dataclass
class Collected:
    report: dict
    eval_dir: Path
    instances: dict[str, dict] = field(default_factory=dict)  # instance_id -> get_eval_report entry


def collect_outputs(
    workdir: str | Path, harness_id: str, model_name: str, eval_dir: str | Path, report_dir: str | Path | None = None
) -> Collected:
    """Copy the harness's run report to `<eval_dir>/report.json` and each instance's logs and report to
    `<eval_dir>/<instance_id>/` (outputs/<run_id>/eval/<model>__a<k>/)."""
    workdir, eval_dir = Path(workdir), Path(eval_dir)
    report_path = Path(report_dir or workdir) / report_file_name(model_name, harness_id)
    report = parse_run_report(report_path)
    io.write_json(eval_dir / "report.json", report)
    collected = Collected(report=report, eval_dir=eval_dir)
    for iid in report["submitted_ids"]:
        source = instance_log_dir(workdir, harness_id, model_name, iid)
        if not source.is_dir():
            continue
        for name in INSTANCE_LOG_FILES:
            if (source / name).exists():
                io.atomic_write_bytes(eval_dir / iid / name, (source / name).read_bytes())
        if (source / "report.json").exists():
            collected.instances[iid] = parse_instance_report(source / "report.json", iid)
    return collected


# ---------------------------------------------------------------- whole runs


def harness_dataset(run_dir: Path, rows: list[dict]) -> Path:
    """The run's rows as the harness's dataset (a local JSONL: pinned content, no hub revision needed);
    old-schema rows get official-shaped Docker eval scripts from swelab.workspace.recipes."""
    out = []
    for row in rows:
        if not has_grading_fields(row):
            row = recipes.with_grading_fields(row, target="docker")
        out.append(row)
    return io.write_jsonl(run_dir / "eval" / "_harness" / "dataset.jsonl", out)


def run_harness(argv: list[str], workdir: Path, log_path: Path, timeout_s: float | None = None) -> int:
    """Run the harness with its logs under `workdir`; stdout+stderr to `log_path`."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
    return proc.returncode


def no_patch_baseline_docker(
    dataset_path: Path, predictions: list[dict], harness_id: str, workdir: Path, max_workers: int, timeout_s: int
) -> None:
    """Run the tests unpatched in the official containers (the harness's own skip_patch mode)."""
    from swebench.harness import run_evaluation

    rows = {row["instance_id"]: row for row in io.read_jsonl(dataset_path)}
    wanted = [rows[p["instance_id"]] for p in predictions]
    cwd = Path.cwd()
    os.chdir(workdir)  # the harness writes logs/ relative to the working directory
    try:
        run_evaluation.run_instances(
            {p["instance_id"]: p for p in predictions},
            wanted,
            max_workers,
            harness_id,
            timeout_s,
            skip_patch=True,
        )
    finally:
        os.chdir(cwd)


def check_backend(backend: str) -> None:
    """Refuse a backend the official harness cannot run here, with the reason in one line."""
    if backend == "modal":
        ok, reason = modal_supported()
    elif backend == "docker":
        ok, reason = docker_available()
    else:
        ok, reason = False, f"backend {backend!r}: the official harness runs on docker or modal"
    if not ok:
        raise HarnessError(reason)


def evaluate_predictions(
    params: Any, run_dir: Path, predictions: Path, rows: list[dict], backend: str, eval_dir: Path
) -> dict[str, dict]:
    """Grade one predictions file with the official harness; returns get_eval_report entries by instance.

    Empty patches never go to the harness: on Docker they run unpatched through its skip_patch mode,
    otherwise through swelab's local backend (its sandbox)."""
    dataset_path = harness_dataset(run_dir, rows)
    workdir = run_dir / "eval" / "_harness"
    harness_id = harness_run_id(run_dir.name, eval_dir.name)
    check = check_predictions(predictions)
    patched_path, empty_ids = split_predictions(predictions, workdir / "predictions")
    reports: dict[str, dict] = {}
    if patched_path is not None:
        argv = harness_command(dataset_path, patched_path, harness_id, max_workers=eval_workers(params),
                               timeout_s=params.eval_timeout_s, report_dir=workdir, modal=backend == "modal")
        run_harness(argv, workdir, eval_dir / "harness.log")
        reports.update(collect_outputs(workdir, harness_id, check.model_names[0], eval_dir).instances)
    if empty_ids:
        empties = [p for p in io.read_jsonl(predictions) if p["instance_id"] in set(empty_ids)]
        reports.update(_no_patch(params, run_dir, rows, empties, backend, harness_id + ".nopatch", eval_dir))
    return reports


def no_patch_reports(params: Any, run_dir: Path, rows: list[dict], backend: str) -> dict[str, dict]:
    """Every instance run unpatched (the discrimination check), by the same backend as the verdicts."""
    predictions = [{"instance_id": r["instance_id"], "model_name_or_path": "no-patch", "model_patch": ""}
                   for r in rows]
    harness_id = harness_run_id(run_dir.name, "no-patch")
    return _no_patch(params, run_dir, rows, predictions, backend, harness_id, run_dir / "eval" / "_no_patch")


def _no_patch(params: Any, run_dir: Path, rows: list[dict], empties: list[dict], backend: str, harness_id: str,
              eval_dir: Path) -> dict[str, dict]:
    by_id = {row["instance_id"]: row for row in rows}
    reports: dict[str, dict] = {}
    if backend == "docker":
        workdir = run_dir / "eval" / "_harness"
        dataset_path = harness_dataset(run_dir, rows)
        no_patch_baseline_docker(dataset_path, empties, harness_id, workdir, eval_workers(params),
                                 int(params.eval_timeout_s))
        for p in empties:
            source = instance_log_dir(workdir, harness_id, p["model_name_or_path"], p["instance_id"])
            for name in INSTANCE_LOG_FILES:
                if (source / name).exists():
                    io.atomic_write_bytes(eval_dir / p["instance_id"] / name, (source / name).read_bytes())
            if (source / "report.json").exists():
                reports[p["instance_id"]] = parse_instance_report(source / "report.json", p["instance_id"])
        return reports
    workspace = Workspace(repo_sources=params.repo_sources)
    for prediction in empties:
        graded = evaluate_local(by_id[prediction["instance_id"]], "", workspace, params.eval_timeout_s,
                                prediction["model_name_or_path"], params.eval_limits)
        io.atomic_write_text(eval_dir / graded.instance_id / "test_output.txt", graded.log)
        reports[graded.instance_id] = graded.report
    return reports
