"""The local backend: official eval script in a worktree, verdict from swebench's get_eval_report."""

from __future__ import annotations

import json

import pytest

from swelab.evaluate.local import EvaluationError, VerdictCache, evaluate_local, write_run_report
from swelab.io import write_json, write_jsonl
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
    preds = tmp_path / "predictions" / "m__a1.jsonl"
    write_jsonl(preds, [{"instance_id": "toy__toy-1", "model_name_or_path": "m", "model_patch": ""}])
    write_json(tmp_path / "eval" / "m__a1" / "toy__toy-1" / "report.json",
               {"toy__toy-1": {"resolved": False, "patch_successfully_applied": True}})
    summary = write_run_report(tmp_path, preds, {"toy__toy-1": instance})
    report = json.loads((tmp_path / "eval" / "m__a1" / "report.json").read_text())
    assert report["schema_version"] == 2
    assert report["unresolved_ids"] == ["toy__toy-1"] and report["empty_patch_ids"] == ["toy__toy-1"]
    assert summary["resolved_instances"] == 0 and report["label"] == "official grading, local environment"


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
