"""The local backend: official eval script in a worktree, verdict from swebench's get_eval_report."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from swelab.evaluate.backends import write_run_report
from swelab.evaluate.local import LOCAL_LABEL, EvaluationError, VerdictCache, evaluate_local, grading_row, log_problems
from swelab.rundir import RunLayout
from swelab.workspace.repos import Workspace


@pytest.fixture
def workspace(toy_repo, cache_dir):
    repo, instance = toy_repo
    return Workspace(cache_dir, repo_sources={"toy/toy": str(repo)})


def test_gold_patch_resolves(workspace, toy_repo):
    _, instance = toy_repo
    verdict = evaluate_local(instance, instance["patch"], workspace)
    assert verdict.resolved
    assert verdict.report["patch_successfully_applied"]
    status = verdict.report["tests_status"]
    assert status["FAIL_TO_PASS"]["success"] == ["tests/test_core.py::test_clamp_high"]
    assert ">>>>> Start Test Output" in verdict.log and ">>>>> Test Exit Code: 0" in verdict.log


def test_empty_patch_really_runs_the_tests_unpatched(workspace, toy_repo):
    _, instance = toy_repo
    verdict = evaluate_local(instance, "", workspace)
    assert not verdict.resolved
    assert verdict.report["patch_exists"] and verdict.report["patch_successfully_applied"]
    assert verdict.report["tests_status"]["FAIL_TO_PASS"]["failure"] == ["tests/test_core.py::test_clamp_high"]
    assert verdict.report["tests_status"]["PASS_TO_PASS"]["success"] == ["tests/test_core.py::test_double"]


def test_patch_that_does_not_apply_is_unresolved(workspace, toy_repo):
    _, instance = toy_repo
    bad = instance["patch"].replace("-        return value", "-        return nothing_like_this")
    verdict = evaluate_local(instance, bad, workspace)
    assert not verdict.resolved and not verdict.report["patch_successfully_applied"]
    assert ">>>>> Patch Apply Failed" in verdict.log


@pytest.mark.parametrize(
    "path", ["../outside.py", "/etc/passwd", ".git/hooks/post-checkout", "toy/../../escape.py"]
)
def test_patch_escaping_the_repo_is_refused_and_never_applied(workspace, toy_repo, tmp_path, path):
    _, instance = toy_repo
    evil = f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+pwned\n"
    verdict = evaluate_local(instance, evil, workspace)
    assert not verdict.resolved
    assert "refused" in verdict.log
    assert not (workspace.cache_dir / "worktrees" / "outside.py").exists()
    assert not (workspace.cache_dir / "escape.py").exists()


def test_test_patch_that_does_not_apply_is_an_error_not_a_verdict(workspace, toy_repo):
    _, instance = toy_repo
    broken = dict(instance, test_patch=instance["test_patch"].replace("def test_double", "def test_other"))
    with pytest.raises(EvaluationError, match="toy__toy-1: the test patch does not apply"):
        evaluate_local(broken, instance["patch"], workspace)


def test_environment_is_built_once_per_repo_and_version(workspace, toy_repo):
    _, instance = toy_repo
    evaluate_local(instance, "", workspace)
    evaluate_local(instance, instance["patch"], workspace)
    assert workspace.builds == {"mirrors": 1, "environments": 1}
    assert not list((workspace.cache_dir / "worktrees").iterdir())  # worktrees cleaned up


def test_verdict_cache_is_keyed_by_instance_and_patch(workspace, toy_repo, tmp_path):
    _, instance = toy_repo
    cache = VerdictCache(tmp_path / "verdicts")
    verdict = evaluate_local(instance, instance["patch"], workspace)
    cache.put(instance, instance["patch"], verdict)
    assert cache.get(instance, instance["patch"]).resolved
    assert cache.get(instance, "") is None
    changed_tests = dict(instance, FAIL_TO_PASS=json.dumps(["tests/test_core.py::test_other"]))
    assert cache.get(changed_tests, instance["patch"]) is None


def test_run_report_has_the_official_shape(tmp_path, toy_repo):
    _, instance = toy_repo
    layout = RunLayout(tmp_path)
    layout.write_predictions("m", 1, [{"instance_id": "toy__toy-1", "model_name_or_path": "m", "model_patch": ""}])
    layout.write_verdict("m", 1, "toy__toy-1", {"resolved": False, "patch_successfully_applied": True}, None)
    pset, = layout.prediction_sets()
    backend = SimpleNamespace(name="local", label=LOCAL_LABEL)
    summary = write_run_report(layout, pset, {"toy__toy-1": instance, "toy__toy-2": instance}, backend, {}, 0.0)
    report = json.loads((tmp_path / "eval" / "m__a1" / "report.json").read_text())
    assert report["schema_version"] == 2
    assert report["unresolved_ids"] == ["toy__toy-1"] and report["empty_patch_ids"] == ["toy__toy-1"]
    assert summary.resolved == 0 and report["label"] == "official grading, local environment"
    assert (summary.model, summary.attempt, summary.missing_ids) == ("m", 1, ["toy__toy-2"])


def test_tests_that_hang_are_killed_and_graded_unresolved(workspace, toy_repo):
    _, instance = toy_repo
    hang = dict(instance, eval_script=instance["eval_script"].replace(
        "python -m pytest", "sleep 600; python -m pytest"))
    verdict = evaluate_local(hang, instance["patch"], workspace, timeout_s=2)
    assert not verdict.resolved and ">>>>> Tests Timed Out" in verdict.log


def test_tests_cannot_reach_the_network_outside_loopback(workspace, toy_repo):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from swelab.evaluate.local import _can_unshare_net

    if not _can_unshare_net():
        pytest.skip("this machine cannot create a network namespace (needs root or user namespaces)")
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    probe = (f"python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/x', timeout=3)\" "
             "&& echo REACHED || echo BLOCKED")
    _, instance = toy_repo
    script = instance["eval_script"].replace("python -m pytest", f"{probe}; python -m pytest")
    verdict = evaluate_local(dict(instance, eval_script=script), instance["patch"], workspace)
    server.shutdown()
    printed = [line.strip() for line in verdict.log.splitlines()]
    assert hits == [] and "BLOCKED" in printed and "REACHED" not in printed


def test_a_cached_environment_from_other_pieces_is_rebuilt_not_trusted(workspace, toy_repo):
    _, instance = toy_repo
    env = workspace.environment(instance)
    (env.path / ".swelab-ready").write_text("pytest-venv /gone/python /gone/site-packages\n")
    workspace.environment(instance)
    assert workspace.builds["environments"] == 2
    workspace.environment(instance)
    assert workspace.builds["environments"] == 2


def test_without_its_sandbox_an_evaluation_stops_and_runs_nothing(workspace, toy_repo, monkeypatch, tmp_path):
    """Fail closed: no bwrap / namespaces / limits means one line saying what is missing, never a run on the
    host."""
    from swelab import sandbox

    _, instance = toy_repo
    witness = tmp_path / "ran-on-the-host"
    script = instance["eval_script"].replace("python -m pytest", f"touch {witness}; python -m pytest")
    monkeypatch.setattr(sandbox, "_probe_eval", lambda: "ip not found on PATH (Debian package iproute2; "
                        "make system-deps (README: the sandbox) installs what is missing)")
    with pytest.raises(sandbox.SandboxUnavailable, match="ip not found.*make system-deps"):
        evaluate_local(dict(instance, eval_script=script), instance["patch"], workspace)
    assert not witness.exists()
    monkeypatch.setattr(sandbox, "_probe_bwrap", lambda: "bwrap not found on PATH")
    with pytest.raises(sandbox.SandboxUnavailable, match="bwrap not found"):
        evaluate_local(dict(instance, eval_script=script), instance["patch"], workspace)
    assert not witness.exists()


def test_a_model_patch_touching_the_tests_is_refused_but_gold_is_not(workspace, toy_repo):
    from swelab.evaluate.local import patch_refusal

    _, instance = toy_repo
    assert patch_refusal(instance, instance["patch"]) is None
    assert "test file tests/test_core.py" in patch_refusal(instance, instance["test_patch"])
    conftest = "diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/conftest.py\n"
    assert "conftest.py" in patch_refusal(instance, conftest + "@@ -0,0 +1 @@\n+x = 1\n")
    verdict = evaluate_local(instance, instance["test_patch"], workspace)
    assert not verdict.resolved and "refused: the patch changes the task's test file" in verdict.log


def _pytest_log(body: str) -> str:
    from swebench.harness.constants import END_TEST_OUTPUT, START_TEST_OUTPUT

    return f"{START_TEST_OUTPUT}\n{body}\n{END_TEST_OUTPUT}\n>>>>> Test Exit Code: 0\n"


def test_nested_pytest_sessions_never_make_a_genuine_log_untrusted(toy_repo):
    # pytest's own tests run pytest through pytester: inner sessions print result lines and summaries of their
    # own (a gold patch of pytest-dev/pytest was refused before); only the official grading decides there.
    _, instance = toy_repo
    row = grading_row(instance)
    graded = json.loads(row["FAIL_TO_PASS"])[0]
    nested = _pytest_log(
        "============================= test session starts ==============================\n"
        f"PASSED {graded}\n"
        "============================= test session starts ==============================\n"
        f"FAILED {graded} - inner pytester run\n"
        "========================= 1 failed in 0.01s =========================\n"
        "========================= 1 passed in 0.30s =========================")
    assert log_problems(nested, row) == []
    single = _pytest_log(
        "============================= test session starts ==============================\n"
        f"PASSED {graded}\nFAILED {graded} - AssertionError\n"
        "========================= 1 failed in 0.01s =========================")
    assert any("reported both" in problem for problem in log_problems(single, row))


def test_a_coloured_pytest_summary_is_read(toy_repo):
    # sphinx's tox.ini sets PYTEST_ADDOPTS=--color yes: the summary line comes wrapped in ANSI escapes, in the
    # official logs too; a genuine coloured log is trusted, and a coloured log with no summary still is not
    _, instance = toy_repo
    row = grading_row(instance)
    graded = json.loads(row["FAIL_TO_PASS"])[0]
    start = "\x1b[1m============================= test session starts ==============================\x1b[0m\n"
    coloured = _pytest_log(f"{start}PASSED {graded}\n\x1b[32m============ \x1b[32m\x1b[1m1 passed\x1b[0m"
                           "\x1b[32m in 0.02s\x1b[0m\x1b[32m ============\x1b[0m")
    assert log_problems(coloured, row) == []
    cut = _pytest_log(f"{start}PASSED {graded}\n")
    assert any("never printed its summary" in problem for problem in log_problems(cut, row))


def test_the_cache_keeps_what_ran_and_our_checks_run_again_on_every_read(tmp_path, toy_repo):
    from swelab.evaluate.local import Graded

    _, instance = toy_repo
    cache = VerdictCache(tmp_path / "verdicts")
    forged = _pytest_log("PASSED x") + _pytest_log("PASSED x")  # two start markers: distrusted
    official = {"resolved": True, "patch_successfully_applied": True}
    cache.put(instance, "p", Graded(instance["instance_id"], official, forged, official=official))
    again = cache.get(instance, "p")
    assert again.official["resolved"] is True and again.resolved is False
    assert again.report["swelab_log_problems"]
    (tmp_path / "verdicts").mkdir(exist_ok=True)
    old = next((tmp_path / "verdicts").rglob("*.json"))
    old.write_text(json.dumps({"report": official, "log": forged}))  # written before `official` was kept
    assert cache.get(instance, "p") is None
