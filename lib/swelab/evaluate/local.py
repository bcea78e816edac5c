"""Evaluation: every verdict comes from swebench's own grading.

The local backend (no Docker) runs the instance's official eval script in a worktree with the instance's
environment, captures the log between swebench's markers and hands it to
`swebench.harness.grading.get_eval_report`. We never score anything ourselves.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from swebench.harness.constants import (
    APPLY_PATCH_FAIL,
    APPLY_PATCH_PASS,
    END_TEST_OUTPUT,
    START_TEST_OUTPUT,
    TESTS_TIMEOUT,
    TestStatus,
)
from swebench.harness.grading import get_eval_report
from swebench.harness.log_parsers import PARSER_REGISTRY
from swebench.harness.utils import make_test_spec

from swelab import sandbox
from swelab.io import read_json, write_json
from swelab.workspace import recipes, standins
from swelab.workspace.environments import environment_identity
from swelab.workspace.patches import (  # noqa: F401 - patch_refusal, pytest_config_change: grading's rules, here too
    apply_model_patch,
    check_apply,
    graded_test_ids,
    patch_refusal,
    pytest_config_change,
)
from swelab.workspace.repos import Workspace

LOCAL_LABEL = "official grading, local environment"
GRADING_FIELDS = ("eval_script", "log_parser", "eval_type", "image")
SWEBENCH_VERSION = importlib.metadata.version("swebench")


class EvaluationError(RuntimeError):
    """An instance that cannot be evaluated at all (not a wrong patch): named, never silent."""


@dataclass(frozen=True)
class Graded:
    """swebench's grading of one patch on one instance, with the log it graded."""

    instance_id: str
    report: dict  # get_eval_report's entry for this instance, after our stricter checks (strict_report)
    log: str
    cached: bool = False
    official: dict | None = None  # get_eval_report's entry alone: what the cache keeps, our checks rerun on it

    @property
    def resolved(self) -> bool:
        return bool(self.report.get("resolved"))


def grading_row(instance: dict) -> dict:
    """The instance with the swebench 5.x grading fields; old-schema rows get them from a recipe."""
    if all(instance.get(field) for field in GRADING_FIELDS):
        return instance
    return recipes.with_grading_fields(instance)


def instance_key(instance: dict) -> str:
    """What grading depends on: a change to tests or script invalidates cached verdicts."""
    parts = [instance.get(f, "") for f in ("base_commit", "test_patch", "eval_script", "FAIL_TO_PASS", "PASS_TO_PASS")]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def patch_sha(patch: str) -> str:
    return hashlib.sha256(patch.encode("utf-8")).hexdigest()


class VerdictCache:
    """Verdicts keyed by everything that can change one: the instance's tests and script, the environment's
    identity, the patch, the swebench version and the grading context (timeout, limits). The same patch under
    the same conditions is graded once; anything else is graded anew."""

    def __init__(self, root: Path, context: str = ""):
        self.root = root
        self.context = context

    def _path(self, instance: dict, patch: str) -> Path:
        parts = [instance_key(instance), environment_identity(instance), SWEBENCH_VERSION, self.context,
                 patch_sha(patch)]
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]
        return self.root / instance["instance_id"] / f"{key}.json"

    def get(self, instance: dict, patch: str) -> Graded | None:
        """What ran and swebench's verdict on it are cached; our own checks (strict_report) run again on every
        read, so a change to them never hides behind a cached verdict. An entry without the official report
        (written before it was kept) is graded anew."""
        path = self._path(instance, patch)
        if not path.exists():
            return None
        data = read_json(path)
        if "official" not in data:
            return None
        report = strict_report(data["official"], data["log"], grading_row(instance))
        return Graded(instance["instance_id"], report, data["log"], cached=True, official=data["official"])

    def put(self, instance: dict, patch: str, verdict: Graded) -> None:
        write_json(self._path(instance, patch), {"official": verdict.official or verdict.report, "log": verdict.log})


def run_eval_script(
    worktree: Path, script: str, env: dict, timeout_s: float, limits: sandbox.EvalLimits | None = None
) -> tuple[str, bool]:
    """Run the eval script in the evaluation sandbox (swelab.sandbox.run_eval), stdout and stderr merged: its
    own network namespace (loopback only), the environment of env["VIRTUAL_ENV"] read-only, the worktree
    writable, nothing else of the host; limits enforced, the whole run killed at the timeout.

    Fails closed: where the machine cannot give it that sandbox, SandboxUnavailable, and no test has run."""
    venv = env.get("VIRTUAL_ENV")
    ro_paths = sandbox.python_paths(Path(venv)) if venv else []
    result = sandbox.run_eval(
        script, worktree, env, timeout_s, ro_paths=ro_paths, ro_files=[Path(standins.__file__)],
        limits=limits, scratch_parent=worktree.parent,
    )
    return result.output, result.timed_out


def _can_unshare_net() -> bool:
    """True when this machine can run the evaluation sandbox (kept for callers that ask before grading)."""
    return sandbox.eval_sandbox_available()


# -- stricter than the official harness (docs/SANDBOX.md) -------------------------------------------
# The rules that refuse a model patch (patch_refusal, pytest_config_change, apply_model_patch) live in
# swelab.workspace.patches, so that generation checks a patch with the same rules before a cell counts as ok.
EXIT_CODE_MARKER = ">>>>> Test Exit Code"
_PASSING = {TestStatus.PASSED.value, TestStatus.XFAIL.value}
_FAILING = {TestStatus.FAILED.value, TestStatus.ERROR.value}
_PYTEST_SUMMARY = re.compile(r"^=+ (.*\d+ \w+.*) in [\d.]+ ?s.* =+$", re.M)  # "in 0.02s", old "in 0.02 seconds"
_PYTEST_COUNT = re.compile(r"(\d+) (\w+)")
_COUNTED = {"passed", "xfailed", "xpassed"}


def log_problems(log: str, row: dict) -> list[str]:
    """Why a graded log cannot be trusted (empty when it can): swebench's markers printed by something other
    than the eval script, an exit status recorded before the end of the tests or not at all, or a graded test
    reported both passing and failing (a forged line next to the real one)."""
    if START_TEST_OUTPUT not in log and END_TEST_OUTPUT not in log:
        return []  # the tests never ran (the patch did not apply): nothing to cross-check
    problems = []
    for marker in (START_TEST_OUTPUT, END_TEST_OUTPUT):
        if log.count(marker) != 1:
            problems.append(f"the log holds {log.count(marker)} '{marker}' markers; the eval script prints one")
    end = log.find(END_TEST_OUTPUT)
    codes = [match.start() for match in re.finditer(re.escape(EXIT_CODE_MARKER), log)]
    if end >= 0 and any(position < end for position in codes):
        problems.append(f"'{EXIT_CODE_MARKER}' is printed before the end of the tests: forged")
    if end >= 0 and not [position for position in codes if position > end]:
        problems.append("the test command's exit status was not recorded")
    if problems:
        return problems
    sliced = log.split(START_TEST_OUTPUT, 1)[1].split(END_TEST_OUTPUT, 1)[0]
    parser = PARSER_REGISTRY.get(row.get("log_parser", ""))
    if parser is None or sliced.count("test session starts") > 1:
        # Nested pytest sessions (pytest's own tests run pytest through pytester) print their own result lines
        # and summaries, so counts and duplicates prove nothing there; the official grading alone decides.
        return []
    spec = make_test_spec(row)
    seen: dict[str, set[str]] = {}
    for line in sliced.splitlines():
        for test, status in parser(line, spec).items():
            seen.setdefault(test, set()).add(status)
    for test in graded_test_ids(row):
        statuses = seen.get(test, set())
        if statuses & _PASSING and statuses & _FAILING:
            problems.append(f"{test} is reported both {'/'.join(sorted(statuses))}: a forged result line")
    if "test session starts" in sliced:  # pytest ran: its own count must cover the tests reported passing
        # tox may colour pytest (sphinx's tox.ini: PYTEST_ADDOPTS=--color yes): the summary line is read plain
        summaries = _PYTEST_SUMMARY.findall(recipes.ANSI_ESCAPE.sub("", sliced))
        passing = sum(1 for statuses in seen.values() if statuses & _PASSING)
        if not summaries:
            problems.append("pytest started but never printed its summary line: the run ended early")
        else:
            counted = sum(int(n) for n, word in _PYTEST_COUNT.findall(summaries[-1]) if word in _COUNTED)
            if passing > counted:
                problems.append(f"{passing} tests are reported passing but pytest counted {counted}")
    return problems


def strict_report(report: dict, log: str, row: dict) -> dict:
    """get_eval_report's entry, unresolved with the reasons under `swelab_log_problems` when the log cannot
    be trusted (log_problems); unchanged otherwise."""
    problems = log_problems(log, row)
    if not problems:
        return report
    return {**report, "resolved": False, "swelab_log_problems": problems}


def evaluate_local(
    instance: dict,
    model_patch: str,
    workspace: Workspace,
    timeout_s: float = 1800.0,
    model_name: str = "swelab",
    limits: sandbox.EvalLimits | None = None,
) -> Graded:
    """Grade one patch on one instance with the local backend, inside the evaluation sandbox."""
    row = grading_row(instance)
    spec = make_test_spec(row)
    environment = workspace.environment(row)
    with workspace.worktree(row) as worktree:
        ok, message = check_apply(worktree, row["test_patch"])
        if not ok:
            raise EvaluationError(f"{row['instance_id']}: the test patch does not apply at base: {message}")
        lines = []
        timed_out = False
        if model_patch.strip():
            applied_log, applied_ok = apply_model_patch(worktree, row, model_patch)
            lines.append(applied_log)
            lines.append(f"{APPLY_PATCH_PASS}" if applied_ok else f"{APPLY_PATCH_FAIL}")
        if not lines or APPLY_PATCH_FAIL not in lines[-1]:
            with tempfile.TemporaryDirectory(prefix="swelab-home-") as home:
                env = environment.process_env(Path(home))
                output, timed_out = run_eval_script(worktree, spec.eval_script, env, timeout_s, limits)
            lines.append(output)
            if timed_out:
                lines.append(f"{TESTS_TIMEOUT} after {timeout_s:.0f} s")
    log = "\n".join(lines)
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as handle:
        handle.write(log)
        log_path = handle.name
    try:
        prediction = {"instance_id": row["instance_id"], "model_name_or_path": model_name, "model_patch": model_patch}
        official = get_eval_report(spec, prediction, log_path, include_tests_status=True)[row["instance_id"]]
        if timed_out:
            # swebench reads the timeout marker as "no log", which its report spells patch_successfully_applied:
            # false; the patch did apply (the tests ran), so say what happened instead.
            official = {**official, "patch_successfully_applied": True, "resolved": False, "timed_out": True,
                        "timeout_s": timeout_s}
    finally:
        Path(log_path).unlink(missing_ok=True)
    return Graded(row["instance_id"], strict_report(official, log, row), log, official=official)
