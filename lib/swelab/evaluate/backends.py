"""Evaluate a whole run behind one `Backend` protocol: the local sandboxed backend and the official harness
(Docker, Modal) take the run's prediction sets, write verdicts through `RunLayout`, both write
`eval/discrimination.json`, and both return the same `EvalSummary` per predictions file.

Adding a backend = a class with `name`, `label` and `evaluate_set(...)`, plus one entry in `BACKENDS`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from swelab.evaluate import harness
from swelab.evaluate.local import LOCAL_LABEL, EvaluationError, Graded, VerdictCache, evaluate_local, grading_row
from swelab.executor import LOCAL, Executor, executor_for, worker_workspace
from swelab.io import read_jsonl, write_json
from swelab.params import RunParams
from swelab.progress import tqdm
from swelab.rundir import PredictionSet, RunLayout
from swelab.workspace import recipes
from swelab.workspace.environments import one_line, uses_pytest_venv
from swelab.workspace.errors import WorkspaceError
from swelab.workspace.repos import Workspace

OnVerdict = Callable[[PredictionSet, str, bool], None]  # (set, instance_id, resolved)
# What stops one instance (or one environment) and not the run: it becomes that instance's `error` verdict.
INSTANCE_ERRORS = (EvaluationError, recipes.RecipeError, WorkspaceError)


@dataclass
class EvalSummary:
    """What grading one predictions file gave, in the same shape for every backend."""

    model: str
    """The model whose predictions were graded."""
    attempt: int
    """Their attempt number."""
    backend: str
    """local | docker | modal."""
    label: str
    """How the verdicts were made, shown beside them in every table."""
    submitted: int = 0
    """Predictions in the file."""
    completed: int = 0
    """Predictions with a verdict."""
    resolved: int = 0
    """Verdicts that say resolved."""
    empty_patch: int = 0
    """Predictions with no patch (still run: the no-patch baseline)."""
    errors: int = 0
    """Verdicts whose patch did not apply."""
    resolved_ids: list[str] = field(default_factory=list)
    """Which instances resolved."""
    missing_ids: list[str] = field(default_factory=list)
    """Run instances this predictions file has no prediction for."""
    unsupported: dict[str, str] = field(default_factory=dict)
    """Instances this backend cannot grade, with the reason."""
    seconds: float = 0.0
    """Wall-clock seconds of the whole evaluation stage."""

    def as_dict(self) -> dict:
        return asdict(self)


class Backend(Protocol):
    name: str
    label: str

    def evaluate_set(self, layout: RunLayout, pset: PredictionSet, instances: dict[str, dict],
                     on_verdict: OnVerdict | None) -> None:
        """Grade every prediction of one set that has no verdict yet (all of them when forced)."""

    def discrimination(self, layout: RunLayout, instances: dict[str, dict]) -> dict[str, dict]:
        """Per instance: FAIL_TO_PASS tests that pass with no patch, and whether that makes it useless."""

    def unsupported(self, instances: dict[str, dict]) -> dict[str, str]:
        """Instances this backend refuses up front, with the reason."""


def non_discriminating(instance: dict, report: dict) -> dict:
    """An instance whose FAIL_TO_PASS tests already pass unpatched cannot tell a fix from no fix."""
    passing = report.get("tests_status", {}).get("FAIL_TO_PASS", {}).get("success", [])
    expected = instance["FAIL_TO_PASS"]
    expected = json.loads(expected) if isinstance(expected, str) else expected
    return {"fail_to_pass_passing_unpatched": passing,
            "non_discriminating": bool(expected) and set(expected) <= set(passing)}


def repeated_flags(instance: dict, no_patch: list[dict], gold: list[dict]) -> dict:
    """discrimination.json's entry from every no-patch and gold verdict of one instance (in grading order):
    `no_patch_resolved` / `gold_resolved` list each verdict; `non_discriminating` when any no-patch run passes
    every FAIL_TO_PASS test; `flaky` when the repeats of either disagree (a verdict a rerun can flip)."""
    unpatched = [non_discriminating(instance, report) for report in no_patch]
    bare = [bool(report.get("resolved")) for report in no_patch]
    fixed = [bool(report.get("resolved")) for report in gold]
    useless = [flag["non_discriminating"] for flag in unpatched]
    return {"fail_to_pass_passing_unpatched": unpatched[0]["fail_to_pass_passing_unpatched"] if unpatched else [],
            "non_discriminating": any(useless), "repeats": max(len(no_patch), len(gold)),
            "no_patch_resolved": bare, "gold_resolved": fixed,
            "flaky": len(set(bare)) > 1 or len(set(fixed)) > 1 or len(set(useless)) > 1}


class LocalBackend:
    """No Docker: the official eval script in a sandbox, graded by swebench's own functions."""

    name = "local"
    label = LOCAL_LABEL

    def __init__(self, params: RunParams, workspace: Workspace | None = None, executor: Executor | None = None):
        self.params = params
        self.workspace = workspace or Workspace(repo_sources=params.repo_sources)
        self.executor = executor or executor_for(params.executor)  # where gradings run (params `executor:`)
        self.cache = VerdictCache(self.workspace.cache_dir / "verdicts", context=self._cache_context())
        self.env_errors: dict[str, str] = {}  # environment key -> why its build failed (one line, with the log)

    def _cache_context(self) -> str:
        """What besides the patch and the instance can change a verdict: the timeout, the limits."""
        limits = getattr(self.params, "eval_limits", None)
        return json.dumps({"timeout_s": self.params.eval_timeout_s, "limits": repr(limits)}, sort_keys=True)

    def unsupported(self, instances: dict[str, dict]) -> dict[str, str]:
        refused = {}
        for row in instances.values():
            if uses_pytest_venv(row):
                continue
            ok, reason = recipes.supported(row)
            if not ok:
                refused[row["instance_id"]] = reason
        return refused

    def _grade(self, instance: dict, patch: str, model_name: str, fresh: bool = False) -> Graded:
        """`fresh`: past the verdict cache (a repeat of eval_repeats must really run the tests again)."""
        failed = self.env_errors.get(self.workspace.environment_key(instance))
        if failed:
            return error_verdict(instance, patch, failed)
        if self.executor.remote:
            return self._grade_on_worker(instance, patch, model_name, fresh)
        cached = None if self.params.force or fresh else self.cache.get(instance, patch)
        if cached is not None:
            return cached
        try:
            graded = evaluate_local(instance, patch, self.workspace, self.params.eval_timeout_s, model_name,
                                self.params.eval_limits)
        except INSTANCE_ERRORS as exc:
            reason = one_line(str(exc))
            tqdm.write(f"evaluation: error: {reason}")
            return error_verdict(instance, patch, reason)
        self.cache.put(instance, patch, graded)
        return graded

    def _grade_on_worker(self, instance: dict, patch: str, model_name: str, fresh: bool = False) -> Graded:
        """A worker grades (its own environments and verdict cache), preferably the one that built the instance's
        environment; a task lost past Dask's retries is an `error` verdict, graded again on a rerun."""
        try:
            # a fresh repeat gets a key of its own: the scheduler would hand back the earlier result otherwise
            repeat = f"-{uuid.uuid4().hex[:8]}" if fresh else ""
            return self.executor.run(grade_task, self.params, instance, patch, model_name, fresh,
                                     key=f"grade-{model_name}-{instance['instance_id']}{repeat}",
                                     affinity=self.workspace.environment_key(instance))
        except INSTANCE_ERRORS:
            raise
        except Exception as exc:
            reason = one_line(f"the worker grading this was lost: {type(exc).__name__}: {exc}")
            tqdm.write(f"evaluation: error: {instance['instance_id']}: {reason}")
            return error_verdict(instance, patch, reason)

    def _prepare_on_workers(self, rows: list[dict]) -> None:
        """Each environment built by one worker (environments in parallel), which then gets its gradings."""
        todo = {key: row for key, row in {self.workspace.environment_key(row): row for row in rows}.items()
                if key not in self.env_errors}

        def build(item: tuple[str, dict]) -> float | None:
            key, row = item
            return self.executor.run(environment_task, self.params, grading_row(row), key=f"environment-{key}",
                                     affinity=key)

        for (key, _), result in self.executor.map_unordered(build, todo.items(), len(todo)):
            if isinstance(result, INSTANCE_ERRORS):
                self.env_errors[key] = one_line(str(result))
                tqdm.write(f"evaluation: environment {key} failed: {self.env_errors[key]}")
            elif isinstance(result, BaseException):
                raise result
            elif result is not None:
                tqdm.write(f"evaluation: built environment {key} on a worker in {result:.0f} s")

    def prepare_environments(self, rows: list[dict]) -> None:
        """Build each environment the rows need once, before grading (so parallel graders never wait on each
        other's builds): a line per build with its duration; a failed build is remembered, and its instances get
        an `error` verdict while the others go on."""
        if self.executor.remote:
            return self._prepare_on_workers(rows)
        for key, row in {self.workspace.environment_key(row): row for row in rows}.items():
            if key in self.env_errors:
                continue
            started, built = time.monotonic(), self.workspace.builds["environments"]
            try:
                self.workspace.environment(grading_row(row))
            except INSTANCE_ERRORS as exc:
                self.env_errors[key] = one_line(str(exc))
                tqdm.write(f"evaluation: environment {key} failed: {self.env_errors[key]}")
                continue
            if self.workspace.builds["environments"] > built:
                tqdm.write(f"evaluation: built environment {key} in {time.monotonic() - started:.0f} s")

    def _has_final_verdict(self, layout: RunLayout, pset: PredictionSet, iid: str) -> bool:
        """A verdict that stands: an `error` one (a failed build, a missing commit) is tried again."""
        entry = layout.read_report(pset.model, pset.attempt, iid)
        return entry is not None and "error" not in entry

    def evaluate_set(self, layout: RunLayout, pset: PredictionSet, instances: dict[str, dict],
                     on_verdict: OnVerdict | None) -> None:
        refused = self.unsupported(instances)
        jobs = []
        for prediction in read_jsonl(pset.path):
            iid = prediction["instance_id"]
            if iid not in instances:
                raise EvaluationError(f"{pset.path}: instance {iid} is not part of this run")
            if iid in refused or (self._has_final_verdict(layout, pset, iid) and not self.params.force):
                continue
            jobs.append((instances[iid], prediction.get("model_patch") or ""))
        self.prepare_environments([row for row, _ in jobs])

        def grade(job: tuple[dict, str]) -> None:
            instance, patch = job
            graded = self._grade(instance, patch, pset.model)
            layout.write_verdict(pset.model, pset.attempt, instance["instance_id"], graded.report, graded.log)
            if on_verdict:
                on_verdict(pset, instance["instance_id"], graded.resolved)

        failures = []  # a grading that raised fails the stage once the others are written (a rerun resumes)
        finished = self.executor.map_unordered(grade, jobs, self.params.eval_workers)
        for _, error in tqdm(finished, total=len(jobs), desc=f"evaluate {pset.path.stem}", disable=not jobs):
            if isinstance(error, BaseException):
                failures.append(error)
        if failures:
            raise failures[0]

    def discrimination(self, layout: RunLayout, instances: dict[str, dict]) -> dict[str, dict]:
        """The no-patch run of every instance (cached, so the empty baseline costs nothing more). With
        `eval_repeats` R > 1, no patch and the gold patch are each graded R times past the verdict cache (a
        cached verdict would hide a flaky test), and every verdict is kept (repeated_flags)."""
        refused = self.unsupported(instances)
        rows = [row for iid, row in instances.items() if iid not in refused]
        self.prepare_environments(rows)
        # an instance whose environment failed has no no-patch verdict: left out, never flagged
        rows = [row for row in rows if self.workspace.environment_key(row) not in self.env_errors]
        repeats = int(getattr(self.params, "eval_repeats", 1) or 1)

        def unpatched(row: dict) -> tuple[str, dict]:
            if repeats <= 1:
                return row["instance_id"], repeated_flags(row, [self._grade(row, "", "no-patch").report], [])
            bare = [self._grade(row, "", "no-patch", fresh=True).report for _ in range(repeats)]
            gold = [self._grade(row, row["patch"], "gold", fresh=True).report for _ in range(repeats)]
            return row["instance_id"], repeated_flags(row, bare, gold)

        with ThreadPoolExecutor(max_workers=self.params.eval_workers) as pool:
            return dict(pool.map(unpatched, rows))


def grade_task(params: RunParams, instance: dict, patch: str, model_name: str, fresh: bool = False) -> Graded:
    """On a worker: one grading with this worker's environments and verdict cache (its SWELAB_CACHE); `fresh`
    grades past that cache (a repeat of eval_repeats)."""
    backend = LocalBackend(params, worker_workspace(params.repo_sources), executor=LOCAL)
    return backend._grade(instance, patch, model_name, fresh)


def environment_task(params: RunParams, row: dict) -> float | None:
    """On a worker: the row's environment, built unless it is; the seconds a build took, None when it was there."""
    workspace = worker_workspace(params.repo_sources)
    started, built = time.monotonic(), workspace.builds["environments"]
    workspace.environment(row)
    return time.monotonic() - started if workspace.builds["environments"] > built else None


def error_verdict(instance: dict, patch: str, reason: str) -> Graded:
    """The verdict of an instance that could not be graded: unresolved, counted as an error, with the reason."""
    report = {"patch_is_None": False, "patch_exists": bool(patch.strip()), "patch_successfully_applied": False,
              "resolved": False, "error": reason}
    return Graded(instance["instance_id"], report, f"swelab: not graded: {reason}\n")


class OfficialHarnessBackend:
    """The official harness (`swebench.harness.run_evaluation`) in Docker or on Modal."""

    label = "official harness"

    def __init__(self, params: RunParams, name: str):
        self.params = params
        self.name = name
        self.label = f"official harness ({name})"

    def unsupported(self, instances: dict[str, dict]) -> dict[str, str]:
        return {}

    def evaluate_set(self, layout: RunLayout, pset: PredictionSet, instances: dict[str, dict],
                     on_verdict: OnVerdict | None) -> None:
        rows = list(instances.values())
        reports = harness.evaluate_predictions(self.params, layout.root, pset.path, rows, self.name,
                                               layout.eval_set_dir(pset.model, pset.attempt))
        for iid, entry in reports.items():
            layout.write_verdict(pset.model, pset.attempt, iid, entry, None)
            if on_verdict:
                on_verdict(pset, iid, bool(entry.get("resolved")))

    def discrimination(self, layout: RunLayout, instances: dict[str, dict]) -> dict[str, dict]:
        reports = harness.no_patch_reports(self.params, layout.root, list(instances.values()), self.name)
        return {iid: non_discriminating(instances[iid], entry) for iid, entry in reports.items()}


BACKENDS: dict[str, Callable[[RunParams], Backend]] = {
    "local": LocalBackend,
    "docker": lambda params: OfficialHarnessBackend(params, "docker"),
    "modal": lambda params: OfficialHarnessBackend(params, "modal"),
}


def choose_backend(params: RunParams) -> str:
    """`auto` takes Docker where an engine answers, else the local backend (and says so)."""
    if params.eval_backend != "auto":
        return params.eval_backend
    available, reason = harness.docker_available()
    if available:
        return "docker"
    print(f"evaluation: {reason}; using the local backend ({LOCAL_LABEL})")
    return "local"


def make_backend(params: RunParams, workspace: Workspace | None = None) -> Backend:
    name = choose_backend(params)
    if name == "local":
        return LocalBackend(params, workspace)
    harness.check_backend(name)
    return BACKENDS[name](params)


def evaluate_run(
    params: RunParams,
    run_dir: Path | None = None,
    workspace: Workspace | None = None,
    progress: bool = True,
    on_verdict: OnVerdict | None = None,
) -> list[dict]:
    """Grade every predictions file of the run; finished verdicts are kept, so a rerun resumes (`force`
    re-grades). Returns one EvalSummary (as a dict) per predictions file."""
    layout = RunLayout(run_dir or params.run_dir)
    started = time.monotonic()
    backend = make_backend(params, workspace)
    instances = {row["instance_id"]: row for row in read_jsonl(layout.instances)}
    refused = backend.unsupported(instances)
    for iid, reason in refused.items():
        print(f"evaluation: {iid} cannot be evaluated by the {backend.name} backend: {reason}")
    sets = layout.prediction_sets()
    for pset in sets:
        layout.write_eval_meta(pset.model, pset.attempt, backend.label, backend.name)
        backend.evaluate_set(layout, pset, instances, on_verdict)
    flags = backend.discrimination(layout, instances)
    write_json(layout.discrimination, flags)
    for iid, flag in flags.items():
        if flag["non_discriminating"]:
            print(f"evaluation: {iid} is non-discriminating: its FAIL_TO_PASS tests pass without any patch")
        if flag.get("flaky"):
            print(f"evaluation: {iid} is flaky: its repeated gold / no-patch verdicts disagree")
    seconds = round(time.monotonic() - started, 2)
    summaries = [write_run_report(layout, pset, instances, backend, refused, seconds) for pset in sets]
    if progress:
        for summary in summaries:
            if summary.missing_ids:
                print(f"evaluation: {summary.model} attempt {summary.attempt} has no prediction for "
                      f"{', '.join(summary.missing_ids)}")
    return [summary.as_dict() for summary in summaries]


def write_run_report(layout: RunLayout, pset: PredictionSet, instances: dict, backend: Backend,
                     refused: dict[str, str], seconds: float) -> EvalSummary:
    """The official harness's run report shape (schema_version 2) for one predictions file, from the
    verdicts in the run folder; returns its summary."""
    predictions = {p["instance_id"]: p for p in read_jsonl(pset.path)}
    completed, resolved, unresolved, empty, errors = set(), set(), set(), set(), set()
    for iid, prediction in predictions.items():
        if not (prediction.get("model_patch") or "").strip():
            empty.add(iid)
        entry = layout.read_report(pset.model, pset.attempt, iid)
        if entry is None:
            continue
        completed.add(iid)
        (resolved if entry.get("resolved") else unresolved).add(iid)
        if not entry.get("patch_successfully_applied") or entry.get("timed_out") or entry.get("error"):
            errors.add(iid)  # as the official harness counts them: no patch applied, a timeout, no grading
    report = {
        "total_instances": len(instances),
        "submitted_instances": len(predictions),
        "completed_instances": len(completed),
        "resolved_instances": len(resolved),
        "unresolved_instances": len(unresolved),
        "empty_patch_instances": len(empty),
        "error_instances": len(errors),
        "completed_ids": sorted(completed),
        "incomplete_ids": sorted(set(instances) - completed),
        "empty_patch_ids": sorted(empty),
        "submitted_ids": sorted(predictions),
        "resolved_ids": sorted(resolved),
        "unresolved_ids": sorted(unresolved),
        "error_ids": sorted(errors),
        "unsupported": dict(sorted(refused.items())),
        "schema_version": 2,
        "evaluation_backend": backend.name,
        "label": backend.label,
    }
    write_json(layout.eval_set_dir(pset.model, pset.attempt) / "report.json", report)
    return EvalSummary(
        model=pset.model, attempt=pset.attempt, backend=backend.name, label=backend.label,
        submitted=len(predictions), completed=len(completed), resolved=len(resolved), empty_patch=len(empty),
        errors=len(errors), resolved_ids=sorted(resolved), missing_ids=sorted(set(instances) - set(predictions)),
        unsupported=dict(sorted(refused.items())), seconds=seconds,
    )
