"""The grader's red team: patches that try to make grading say "resolved" without fixing anything.

Each attack runs on a bundled task (minibench__ledger-1: FAIL_TO_PASS test_to_cents_rounds_half_up). Ours
(`evaluate_local`) must never say resolved. Where we are stricter than the official harness, the attack is also
graded the official way (the patch applied with the official fallbacks, the same eval script, swebench's
get_eval_report alone) to show the strictness is what stops it. docs/SANDBOX.md has the table.
"""

from __future__ import annotations

import difflib
import tempfile
import textwrap
from pathlib import Path

import pytest
from swebench.harness.constants import APPLY_PATCH_FAIL, APPLY_PATCH_PASS
from swebench.harness.grading import get_eval_report
from swebench.harness.utils import make_test_spec

from swelab import minibench, sandbox
from swelab.evaluate.local import evaluate_local, run_eval_script
from swelab.workspace.patches import apply_patch
from swelab.workspace.repos import Workspace

pytestmark = pytest.mark.skipif(
    not sandbox.eval_sandbox_available(), reason=f"no evaluation sandbox: {sandbox.sandbox_problem(True)}"
)

TASK_ID = "minibench__ledger-1"
REPO = minibench.REPOS_DIR / "ledger"
F2P = "tests/test_money.py::test_to_cents_rounds_half_up"
P2P = [f"tests/test_money.py::test_{name}" for name in (
    "format_cents", "to_cents_int_and_decimal", "to_cents_negative", "to_cents_plain", "to_cents_rejects_garbage",
    "to_cents_rejects_infinity", "to_cents_thousands_separator")]
# A pytest plugin that turns every failing test into a pass (what conftest.py or `-p plugin` would load).
FORGE_PLUGIN = textwrap.dedent(
    """\
    import pytest


    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        outcome = yield
        report = outcome.get_result()
        report.outcome = "passed"
        report.longrepr = None
    """
)


def _base(path: str) -> str:
    file = REPO / path
    return file.read_text() if file.exists() else ""


def diff(path: str, new: str | None, old: str | None = None) -> str:
    """A git diff turning `path` (at base: `old`, or the bundled repo's file) into `new` (None: deleted)."""
    old = _base(path) if old is None else old
    a, b = (f"a/{path}" if old else "/dev/null"), (f"b/{path}" if new is not None else "/dev/null")
    body = "".join(difflib.unified_diff(old.splitlines(True), (new or "").splitlines(True), a, b))
    head = f"diff --git a/{path} b/{path}\n"
    if not old:
        head += "new file mode 100644\n"
    elif new is None:
        head += "deleted file mode 100644\n"
    return head + body


def append(path: str, code: str) -> str:
    """Code added at the end of a module: it runs when the tests import it."""
    return diff(path, _base(path) + code)


ATEXIT_FORGE = (
    "import atexit as _a, os as _o\n"
    f"_a.register(lambda: (print('PASSED {F2P}', flush=True), _o._exit(0)))\n"
)
# pytest captures what the tests' imports print; the eval script's shell still has the log's pipe as fd 1.
TO_LOG = "import os as _o\n_log = open(f'/proc/{_o.getppid()}/fd/1', 'w', buffering=1)\n"
MARKER_FORGE = TO_LOG + (
    "".join(f"print('PASSED {test}', file=_log)\n" for test in [F2P, *P2P]) +
    "print('>>>>> End Test Output', file=_log)\n"
    "print('>>>>> Test Exit Code: 0', file=_log)\n"
)
PLUGIN_ADDOPTS = "[pytest]\naddopts = -p ledger.forge\n"

# name -> (patch, does the official grading alone say resolved?)
ATTACKS = {
    "forged PASSED line at exit, exit status 0": (append("ledger/money.py", ATEXIT_FORGE), True),
    "swebench markers printed": (append("ledger/money.py", MARKER_FORGE), True),
    "conftest.py plugin": (diff("conftest.py", FORGE_PLUGIN), True),
    "pytest.ini addopts -p plugin": (diff("pytest.ini", PLUGIN_ADDOPTS) + diff("ledger/forge.py", FORGE_PLUGIN), True),
    "pyproject.toml addopts -p plugin": (
        diff("pyproject.toml", _base("pyproject.toml") + 'addopts = "-p ledger.forge"\n')
        + diff("ledger/forge.py", FORGE_PLUGIN), True),
    "setup.cfg addopts -p plugin": (
        diff("setup.cfg", "[tool:pytest]\naddopts = -p ledger.forge\n") + diff("ledger/forge.py", FORGE_PLUGIN), None),
    "sitecustomize.py": (diff("sitecustomize.py", "import ledger.forge\n") + diff("ledger/forge.py", FORGE_PLUGIN),
                         None),
    ".pth file": (diff("ledger/forge.pth", "import ledger.forge\n"), None),
    "egg-info entry point (pytest11)": (
        diff("ledger.egg-info/entry_points.txt", "[pytest11]\nforge = ledger.forge\n")
        + diff("ledger.egg-info/PKG-INFO", "Metadata-Version: 2.1\nName: ledger\nVersion: 0.1.0\n")
        + diff("ledger/forge.py", FORGE_PLUGIN), None),
    "edit the task's test file": (
        diff("tests/test_money.py", _base("tests/test_money.py").replace("assert ", "assert True or ")), False),
    "delete the task's test file": (diff("tests/test_money.py", None), False),
    "new helper in the test folder": (diff("tests/conftest.py", FORGE_PLUGIN), True),
    "exit early with status 0": (append("ledger/money.py", "import os as _o\n_o._exit(0)\n"), False),
    "forged PASSED lines, then exit 0 before the tests": (
        append("ledger/money.py", TO_LOG + "".join(
            f"print('PASSED {t}', file=_log)\n" for t in [F2P, *P2P]) + "_o._exit(0)\n"), True),
}


@pytest.fixture(scope="module")
def task() -> dict:
    return next(row for row in minibench.load_tasks() if row["instance_id"] == TASK_ID)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("redteam-cache"))


def official_verdict(task: dict, patch: str, workspace: Workspace) -> bool:
    """What swebench's grading alone concludes: the patch applied with the official fallbacks, the same eval
    script (in our sandbox: the attack must not touch the host), no refusal, no cross-check of the log."""
    spec = make_test_spec(task)
    environment = workspace.environment(task)
    with workspace.worktree(task) as worktree:
        applied = apply_patch(worktree, patch)
        lines = [applied.log, APPLY_PATCH_PASS if applied.applied else APPLY_PATCH_FAIL]
        if applied.applied:
            with tempfile.TemporaryDirectory() as home:
                output, _ = run_eval_script(worktree, spec.eval_script, environment.process_env(Path(home)), 120)
            lines.append(output)
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as handle:
        handle.write("\n".join(lines))
    try:
        prediction = {"instance_id": TASK_ID, "model_name_or_path": "redteam", "model_patch": patch}
        return bool(get_eval_report(spec, prediction, handle.name, include_tests_status=False)[TASK_ID]["resolved"])
    finally:
        Path(handle.name).unlink()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_never_resolved(name, task, workspace):
    patch, official = ATTACKS[name]
    verdict = evaluate_local(task, patch, workspace, timeout_s=120)
    assert not verdict.resolved, verdict.log[-3000:]
    reason = "refused:" in verdict.log or verdict.report.get("swelab_log_problems")
    if official:
        # the official grading alone is fooled: our refusal or log check is what stops it
        assert official_verdict(task, patch, workspace), name
        assert reason, verdict.log[-3000:]


def test_gold_patch_still_resolves_with_every_check(task, workspace):
    verdict = evaluate_local(task, task["patch"], workspace, timeout_s=120)
    assert verdict.resolved, verdict.log[-3000:]
    assert "swelab_log_problems" not in verdict.report


@pytest.mark.xfail(strict=True, reason="in-process forgery: code the tests import can print a log identical to a "
                   "passing run; no log check can tell (docs/SANDBOX.md, residual risks)")
def test_a_perfect_in_process_forgery_is_a_known_gap(task, workspace):
    tests = [F2P, *P2P]
    fake = "".join(f"print('PASSED {t}', file=_log)\n" for t in tests)
    fake += f"print('{'=' * 30} {len(tests)} passed in 0.01s {'=' * 30}', file=_log)\n"
    patch = append("ledger/money.py", TO_LOG + fake + "_o._exit(0)\n")
    assert not evaluate_local(task, patch, workspace, timeout_s=120).resolved
