"""Evaluation: every verdict comes from swebench's own grading.

The local backend (no Docker) runs the instance's official eval script in a worktree with the instance's
environment, captures the log between swebench's markers and hands it to
`swebench.harness.grading.get_eval_report`. We never score anything ourselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from swebench.harness.constants import APPLY_PATCH_FAIL, APPLY_PATCH_PASS, TESTS_TIMEOUT
from swebench.harness.grading import get_eval_report
from swebench.harness.utils import make_test_spec

from swelab.io import atomic_write_text, read_json, read_jsonl, write_json
from swelab.workspace import standins
from swelab.workspace.environments import uses_pytest_venv
from swelab.workspace.patches import apply_patch, check_apply
from swelab.workspace.repos import Workspace

LOCAL_LABEL = "official grading, local environment"
GRADING_FIELDS = ("eval_script", "log_parser", "eval_type", "image")


class EvaluationError(RuntimeError):
    """An instance that cannot be evaluated at all (not a wrong patch): named, never silent."""


@dataclass(frozen=True)
class Verdict:
    instance_id: str
    report: dict  # get_eval_report's entry for this instance
    log: str
    cached: bool = False

    @property
    def resolved(self) -> bool:
        return bool(self.report.get("resolved"))


def grading_row(instance: dict) -> dict:
    """The instance with the swebench 5.x grading fields; old-schema rows get them from a recipe."""
    if all(instance.get(field) for field in GRADING_FIELDS):
        return instance
    try:
        from swelab.workspace import recipes
    except ImportError as exc:
        raise EvaluationError(f"{instance['instance_id']}: lacks {', '.join(GRADING_FIELDS)}") from exc
    return recipes.with_grading_fields(instance)


def instance_key(instance: dict) -> str:
    """What grading depends on: a change to tests or script invalidates cached verdicts."""
    parts = [instance.get(f, "") for f in ("base_commit", "test_patch", "eval_script", "FAIL_TO_PASS", "PASS_TO_PASS")]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def patch_sha(patch: str) -> str:
    return hashlib.sha256(patch.encode("utf-8")).hexdigest()


class VerdictCache:
    """Verdicts keyed by (instance_id, sha256(patch)): the same patch is graded once."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, instance: dict, patch: str) -> Path:
        return self.root / instance["instance_id"] / f"{instance_key(instance)}-{patch_sha(patch)[:24]}.json"

    def get(self, instance: dict, patch: str) -> Verdict | None:
        path = self._path(instance, patch)
        if not path.exists():
            return None
        data = read_json(path)
        return Verdict(instance["instance_id"], data["report"], data["log"], cached=True)

    def put(self, instance: dict, patch: str, verdict: Verdict) -> None:
        write_json(self._path(instance, patch), {"report": verdict.report, "log": verdict.log})


def run_eval_script(worktree: Path, script: str, env: dict, timeout_s: float) -> tuple[str, bool]:
    """Run the eval script with stdout and stderr merged, in its own network namespace when the machine
    allows one (loopback only); kill the whole group at the timeout."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False, dir=worktree.parent) as handle:
        handle.write(script)
        script_path = handle.name
    # The evaluation's own TMPDIR (stand-ins' files, private /etc files, the tests' own temp files): removed
    # afterwards even when the run is killed at its timeout.
    scratch = tempfile.mkdtemp(prefix="swelab-eval-tmp-", dir=worktree.parent)
    env = {**env, "TMPDIR": scratch}
    command = ["bash", script_path]
    if _can_unshare_net():
        # Own network namespace (loopback only) and own mount namespace (a stand-in's private /etc/hosts).
        command = ["unshare", "--net", "--mount", "--", "sh", "-c", standins.NAMESPACE_SETUP + 'exec "$@"', "sh",
                   *command]
    try:
        proc = subprocess.Popen(
            command, cwd=worktree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, _ = proc.communicate()
            timed_out = True
        _kill_group(proc.pid)  # stand-ins and anything else the tests left running in the background
        return out.decode("utf-8", errors="replace"), timed_out
    finally:
        Path(script_path).unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_UNSHARE_OK: bool | None = None


def _can_unshare_net() -> bool:
    global _UNSHARE_OK
    if _UNSHARE_OK is None:
        ok = shutil.which("unshare") is not None
        if ok:
            ok = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True).returncode == 0
        _UNSHARE_OK = ok
    return _UNSHARE_OK


def evaluate_local(
    instance: dict,
    model_patch: str,
    workspace: Workspace,
    timeout_s: float = 300.0,
    model_name: str = "swelab",
) -> Verdict:
    """Grade one patch on one instance with the local backend."""
    row = grading_row(instance)
    spec = make_test_spec(row)
    environment = workspace.environment(row)
    with workspace.worktree(row) as worktree:
        ok, message = check_apply(worktree, row["test_patch"])
        if not ok:
            raise EvaluationError(f"{row['instance_id']}: the test patch does not apply at base: {message}")
        lines = []
        if model_patch.strip():
            applied = apply_patch(worktree, model_patch)
            lines.append(applied.log)
            lines.append(f"{APPLY_PATCH_PASS}" if applied.applied else f"{APPLY_PATCH_FAIL}")
        if not lines or APPLY_PATCH_FAIL not in lines[-1]:
            with tempfile.TemporaryDirectory(prefix="swelab-home-") as home:
                env = environment.process_env(Path(home))
                output, timed_out = run_eval_script(worktree, spec.eval_script, env, timeout_s)
            lines.append(output)
            if timed_out:
                lines.append(f"{TESTS_TIMEOUT} after {timeout_s:.0f} s")
    log = "\n".join(lines)
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as handle:
        handle.write(log)
        log_path = handle.name
    try:
        prediction = {"instance_id": row["instance_id"], "model_name_or_path": model_name, "model_patch": model_patch}
        report = get_eval_report(spec, prediction, log_path, include_tests_status=True)[row["instance_id"]]
    finally:
        Path(log_path).unlink(missing_ok=True)
    return Verdict(row["instance_id"], report, log)


# -- a whole run ------------------------------------------------------------------------------------
def prediction_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "predictions").glob("*__a*.jsonl"))


def evaluate_run(
    params,
    run_dir: Path | None = None,
    workspace: Workspace | None = None,
    progress: bool = True,
    on_verdict: Callable[[str, Verdict], None] | None = None,
) -> list[dict]:
    """Evaluate every predictions file of the run; finished verdicts are kept, so a rerun resumes."""
    run_dir = Path(run_dir or params.run_dir)
    backend = choose_backend(params)
    if backend != "local":
        from swelab.evaluate import harness

        return harness.evaluate_run_official(params, run_dir, backend)
    workspace = workspace or Workspace(repo_sources=params.repo_sources)
    instances = {row["instance_id"]: row for row in read_jsonl(run_dir / "instances.jsonl")}
    cache = VerdictCache(workspace.cache_dir / "verdicts")
    refused = unsupported_instances(instances.values())
    for iid, reason in refused.items():
        print(f"evaluation: {iid} cannot be evaluated locally: {reason}")
    jobs = []
    for predictions in prediction_files(run_dir):
        for prediction in read_jsonl(predictions):
            iid = prediction["instance_id"]
            if iid not in instances:
                raise EvaluationError(f"{predictions}: instance {iid} is not part of this run")
            out_dir = run_dir / "eval" / predictions.stem / iid
            if iid in refused or ((out_dir / "report.json").exists() and not params.force):
                continue
            jobs.append((predictions.stem, instances[iid], prediction, out_dir))

    def grade(job: tuple) -> None:
        stem, instance, prediction, out_dir = job
        patch = prediction.get("model_patch") or ""
        verdict = cache.get(instance, patch)
        if verdict is None:
            model_name = prediction["model_name_or_path"]
            verdict = evaluate_local(instance, patch, workspace, params.eval_timeout_s, model_name)
            cache.put(instance, patch, verdict)
        atomic_write_text(out_dir / "test_output.txt", verdict.log)
        write_json(out_dir / "report.json", {instance["instance_id"]: verdict.report})
        if on_verdict:
            on_verdict(stem, verdict)

    # Environments first, one per (repo, version), so parallel graders never wait on each other's builds.
    for key in {(job[1]["repo"], job[1]["version"]): job[1] for job in jobs}.values():
        workspace.environment(grading_row(key))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=params.eval_workers) as pool:
        iterator = pool.map(grade, jobs)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(jobs), desc="evaluate")
        list(iterator)
    checked = {iid: row for iid, row in instances.items() if iid not in refused}
    flags = check_discrimination(checked, workspace, cache, params.eval_timeout_s, params.eval_workers)
    write_json(run_dir / "eval" / "discrimination.json", flags)
    for iid, flag in flags.items():
        if flag["non_discriminating"]:
            print(f"evaluation: {iid} is non-discriminating: its FAIL_TO_PASS tests pass without any patch")
    summaries = [
        write_run_report(run_dir, predictions, instances, refused) for predictions in prediction_files(run_dir)
    ]
    for summary in summaries:
        summary["seconds"] = round(time.monotonic() - started, 2)
    return summaries


def check_discrimination(
    instances: dict[str, dict], workspace: Workspace, cache: VerdictCache, timeout_s: float, workers: int
) -> dict[str, dict]:
    """Grade the no-patch run of every instance (cached, so the empty baseline costs nothing more): an
    instance whose FAIL_TO_PASS tests already pass unpatched here cannot tell a fix from no fix, and is
    flagged rather than silently counted."""

    def unpatched(row: dict) -> tuple[str, dict]:
        verdict = cache.get(row, "")
        if verdict is None:
            verdict = evaluate_local(row, "", workspace, timeout_s, "no-patch")
            cache.put(row, "", verdict)
        passing = verdict.report.get("tests_status", {}).get("FAIL_TO_PASS", {}).get("success", [])
        expected = row["FAIL_TO_PASS"]
        expected = json.loads(expected) if isinstance(expected, str) else expected
        return row["instance_id"], {
            "fail_to_pass_passing_unpatched": passing,
            "non_discriminating": bool(expected) and set(expected) <= set(passing),
        }

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(unpatched, instances.values()))


def unsupported_instances(instances) -> dict[str, str]:
    """Rows whose environment the local backend cannot build (no recipe for the (repo, version), or no
    interpreter for it here): refused up front, with the reason, whether or not they carry 5.x fields."""
    refused = {}
    for row in instances:
        if uses_pytest_venv(row):
            continue
        from swelab.workspace import recipes

        ok, reason = recipes.supported(row)
        if not ok:
            refused[row["instance_id"]] = reason
    return refused


def choose_backend(params) -> str:
    if params.eval_backend == "local":
        return "local"
    from swelab.evaluate import harness

    available, reason = harness.docker_available()
    if params.eval_backend == "auto":
        if available:
            return "docker"
        print(f"evaluation: {reason}; using the local backend ({LOCAL_LABEL})")
        return "local"
    return params.eval_backend


def write_run_report(run_dir: Path, predictions_path: Path, instances: dict, refused: dict | None = None) -> dict:
    """The official harness's run report (schema_version 2) for one predictions file."""
    predictions = {p["instance_id"]: p for p in read_jsonl(predictions_path)}
    eval_dir = run_dir / "eval" / predictions_path.stem
    completed, resolved, unresolved, empty, errors = set(), set(), set(), set(), set()
    for iid, prediction in predictions.items():
        if not (prediction.get("model_patch") or "").strip():
            empty.add(iid)
        report_path = eval_dir / iid / "report.json"
        if not report_path.exists():
            continue
        entry = read_json(report_path)[iid]
        completed.add(iid)
        (resolved if entry.get("resolved") else unresolved).add(iid)
        if not entry.get("patch_successfully_applied"):
            errors.add(iid)
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
        "unsupported": dict(sorted((refused or {}).items())),
        "schema_version": 2,
        "evaluation_backend": "local",
        "label": LOCAL_LABEL,
    }
    write_json(eval_dir / "report.json", report)
    return {"predictions": predictions_path.stem, **{k: v for k, v in report.items() if not k.endswith("_ids")}}
