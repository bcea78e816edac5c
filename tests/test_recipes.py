"""swelab.workspace.recipes: support decisions, official-shaped eval scripts that grade through swebench, and the
environment steps (wheel first, packages, requirements from `git show`, install)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from swebench.harness.grading import get_eval_report
from swebench.harness.utils import make_test_spec

from swelab import sandbox
from swelab.evaluate.local import run_eval_script
from swelab.workspace import recipes
from swelab.workspace.recipes import RecipeError

FIXTURE = Path(__file__).parent / "fixtures" / "swebench_lite_sample.jsonl"


def lite(instance_id: str) -> dict:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    return next(row for row in rows if row["instance_id"] == instance_id)


def test_supported_pairs_and_reasons(monkeypatch):
    monkeypatch.setattr(recipes, "find_python", lambda version: "/usr/bin/python" + version)
    assert recipes.supported(lite("psf__requests-2317")) == (True, "")
    assert recipes.supported(lite("pallets__flask-4992")) == (True, "")
    assert recipes.supported(lite("django__django-12908")) == (True, "")
    assert recipes.supported(lite("astropy__astropy-12907")) == (True, "")  # 4.3: built in the worktree
    ok, reason = recipes.supported(dict(lite("astropy__astropy-12907"), version="1.3"))  # astropy_helpers era
    assert not ok and "astropy/astropy" in reason and "Docker" in reason
    ok, reason = recipes.supported(dict(lite("pallets__flask-4992"), version="9.9"))
    assert not ok and "version 9.9" in reason and "2.3" in reason
    assert recipes.supported(lite("sympy__sympy-20212")) == (True, "")
    monkeypatch.setattr(recipes, "find_python", lambda version: None)
    ok, reason = recipes.supported(lite("psf__requests-2317"))
    assert not ok and "Python 3.9" in reason and "SWELAB_PYTHON_3_9" in reason


def test_transcribed_specs_match_swebench_4():
    # spot checks against swebench 4.1.0 constants/python.py
    flask = recipes.RECIPES[("pallets/flask", "2.3")]
    assert flask.python == "3.11" and "Werkzeug==2.3.7" in flask.pip_packages and flask.requirements
    assert recipes.RECIPES[("pallets/flask", "2.0")].python == "3.9"
    requests = recipes.RECIPES[("psf/requests", "2.4")]
    assert (requests.python, requests.install, requests.test_cmd) == ("3.9", "python -m pip install .", "pytest -rA")
    assert requests.log_parser == "parse_log_requests" and flask.log_parser == "parse_log_flask"
    sympy = recipes.RECIPES[("sympy/sympy", "1.7")]
    assert (sympy.python, sympy.install, sympy.log_parser) == ("3.9", "python -m pip install -e .", "parse_log_sympy")
    assert sympy.packages == ("mpmath", "flake8") and sympy.pip_packages == ("mpmath==1.3.0", "flake8-comprehensions")
    assert sympy.test_cmd == "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose"
    newest = recipes.RECIPES[("sympy/sympy", "1.13")]
    assert newest.requirements and newest.pip_packages == ("mpmath==1.3.0",) and not newest.packages
    pylint = recipes.RECIPES[("pylint-dev/pylint", "2.15")]
    assert (pylint.python, pylint.requirements, pylint.pip_packages) == ("3.9", True, ())
    assert pylint.log_parser == "parse_log_pylint"
    assert recipes.REQS_PATHS["pylint-dev/pylint"] == ("requirements_test.txt",)
    assert recipes.RECIPES[("pylint-dev/pylint", "3.0")].pip_packages == ("astroid==3.0.0a6", "setuptools")
    assert ("pylint-dev/pylint", "2.8") not in recipes.RECIPES  # needs Debian packages at build time


def test_with_grading_fields_makes_a_5x_test_spec():
    row = lite("psf__requests-2317")
    graded = recipes.with_grading_fields(row)
    spec = make_test_spec(graded)
    assert spec.log_parser == "parse_log_requests" and spec.eval_type == "pass_and_fail"
    script = spec.eval_script
    assert script.index(">>>>> Start Test Output") < script.index("pytest -rA test_requests.py")
    assert script.index("pytest -rA test_requests.py") < script.index(">>>>> End Test Output")
    assert f"git checkout {row['base_commit']} test_requests.py" in script
    assert row["test_patch"].strip() in script and "/testbed" not in script
    docker = recipes.eval_script_for(row, target="docker")
    assert "cd /testbed" in docker and "conda activate testbed" in docker and "python -m pip install ." in docker
    assert graded["image"] == "swebench/sweb.eval.x86_64.psf_1776_requests-2317:latest"
    with pytest.raises(RecipeError, match="astropy__astropy-12907: astropy/astropy 1.3 builds with astropy_helpers"):
        recipes.with_grading_fields(dict(lite("astropy__astropy-12907"), version="1.3"))
    with pytest.raises(RecipeError, match="pallets__flask-4992: no local recipe for pallets/flask version 9.9"):
        recipes.with_grading_fields(dict(lite("pallets__flask-4992"), version="9.9"))

def test_django_rows_run_runtests_with_module_names_and_the_locale_exports():
    row = lite("django__django-12908")  # 3.2: Python 3.6 and an en_US.UTF-8 locale
    local = recipes.eval_script_for(row)
    assert "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 queries.test_qs_combinators" in local
    assert "export LC_ALL=en_US.UTF-8" in local and "locale-gen" not in local  # the machine is not changed
    docker = recipes.eval_script_for(row, target="docker")
    assert "sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen" in docker
    assert docker.index("locale-gen") < docker.index("git status")
    django_4_2 = recipes.RECIPES[("django/django", "4.2")]
    assert django_4_2.python == "3.9" and not django_4_2.locale
    spec = make_test_spec(recipes.with_grading_fields(lite("django__django-16046")))
    assert spec.log_parser == "parse_log_django" and "export LANG" not in spec.eval_script


def test_old_pythons_get_a_pip_they_can_run_and_a_missing_locale_is_built(monkeypatch, tmp_path):
    row = lite("django__django-12908")
    monkeypatch.setattr(recipes, "locale_installed", lambda name: False)
    steps = [argv for argv, _ in recipes.environment_steps(row, "/py3.6", tmp_path / "env", None, tmp_path)]
    pip = [str(tmp_path / "env" / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    assert steps[1] == [*pip, "--upgrade", "pip<22"] and steps[2] == [*pip, "wheel"]
    assert steps[-1] == ["localedef", "-i", "en_US", "-f", "UTF-8", str(tmp_path / "env" / "locale" / "en_US.UTF-8")]
    monkeypatch.setattr(recipes, "locale_installed", lambda name: True)
    steps = [argv for argv, _ in recipes.environment_steps(row, "/py3.6", tmp_path / "env", None, tmp_path)]
    assert steps[-1][0] != "localedef"
    newer = recipes.environment_steps(lite("django__django-16046"), "/py3.9", tmp_path, None, tmp_path)
    assert newer[1][0][-2:] == ["--upgrade", recipes.PIP_DEFAULT]  # the newest pip with the legacy editable path


def test_locale_installed_reads_locale_a():
    assert recipes.locale_installed("POSIX")  # glibc always lists it
    assert not recipes.locale_installed("xx_NOWHERE.UTF-8")


def _grade_sympy_log(tmp: Path, zero: str) -> bool:
    """Grade a bin/test log of sympy__sympy-20212 in which its FAIL_TO_PASS test ended with `zero`."""
    row = lite("sympy__sympy-20212")
    spec = make_test_spec(recipes.with_grading_fields(row))
    tests = [("test_zero", zero), ("test_rational", "ok"), ("test_large_rational", "ok"), ("test_negative_real", "ok")]
    body = "\n".join(f"{name} {status}" for name, status in tests)
    log = tmp / f"{zero}.log"
    log.write_text(f">>>>> Applied Patch (pred)\n>>>>> Start Test Output\n{body}\n>>>>> End Test Output\n")
    prediction = {"instance_id": row["instance_id"], "model_name_or_path": "t", "model_patch": row["patch"]}
    return get_eval_report(spec, prediction, str(log), include_tests_status=True)[row["instance_id"]]["resolved"]


def test_a_sympy_row_runs_bin_test_and_grades_with_sympys_parser(tmp_path):
    spec = make_test_spec(recipes.with_grading_fields(lite("sympy__sympy-20212")))
    command = "bin/test -C --verbose sympy/core/tests/test_power.py"
    assert spec.log_parser == "parse_log_sympy"
    assert spec.eval_script.index(">>>>> Start Test Output") < spec.eval_script.index(command)
    assert spec.eval_script.index(command) < spec.eval_script.index(">>>>> End Test Output")
    assert _grade_sympy_log(tmp_path, "ok") is True
    assert _grade_sympy_log(tmp_path, "F") is False


def git(*args: str, cwd: Path) -> str:
    env = dict(
        os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"
    )
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _diff(repo: Path, change) -> str:
    change(repo)
    git("add", "-A", cwd=repo)
    diff = git("diff", "--cached", cwd=repo)
    git("reset", "-q", "--hard", cwd=repo)
    return diff


@pytest.fixture()
def swe_repo(tmp_path) -> tuple[Path, dict]:
    """A git repo and a row in SWE-bench's shape (old schema): a bug, a gold patch, a test patch."""
    repo = tmp_path / "requests"
    (repo / "requests").mkdir(parents=True)
    (repo / "requests" / "__init__.py").write_text("def add(a, b):\n    return a - b\n\n\ndef one():\n    return 1\n")
    (repo / "test_requests.py").write_text("from requests import one\n\n\ndef test_one():\n    assert one() == 1\n")
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    base = git("rev-parse", "HEAD", cwd=repo).strip()
    gold = _diff(
        repo,
        lambda r: (r / "requests" / "__init__.py").write_text(
            "def add(a, b):\n    return a + b\n\n\ndef one():\n    return 1\n"
        ),
    )
    test_patch = _diff(
        repo,
        lambda r: (r / "test_requests.py").write_text(
            "from requests import add, one\n\n\ndef test_one():\n    assert one() == 1\n\n\n"
            "def test_add():\n    assert add(2, 2) == 4\n"
        ),
    )
    row = {
        "instance_id": "psf__requests-9999",
        "repo": "psf/requests",
        "version": "2.10",
        "base_commit": base,
        "environment_setup_commit": base,
        "patch": gold,
        "test_patch": test_patch,
        "problem_statement": "add",
        "FAIL_TO_PASS": json.dumps(["test_requests.py::test_add"]),
        "PASS_TO_PASS": json.dumps(["test_requests.py::test_one"]),
    }
    return repo, row


def _grade(repo: Path, row: dict, model_patch: str, tmp_path: Path) -> dict:
    if model_patch:
        (tmp_path / "model.diff").write_text(model_patch)
        git("apply", str(tmp_path / "model.diff"), cwd=repo)
    spec = make_test_spec(recipes.with_grading_fields(row))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    # through the evaluation sandbox, as every eval script: never plain bash on the host
    output, timed_out = run_eval_script(repo, spec.eval_script, env, 120)
    assert not timed_out, output[-2000:]
    log = tmp_path / "test_output.txt"
    log.write_text(output)
    # the script resets the test files it touched: only the model patch may remain
    changed = git("status", "--porcelain", "--untracked-files=no", cwd=repo).split()
    assert changed == (["M", "requests/__init__.py"] if model_patch else [])
    git("checkout", "-q", "--", ".", cwd=repo)
    prediction = {"instance_id": row["instance_id"], "model_name_or_path": "t", "model_patch": model_patch}
    return get_eval_report(spec, prediction, str(log), include_tests_status=True)[row["instance_id"]]


def test_recipe_script_grades_a_real_repo_through_swebench(swe_repo, tmp_path):
    repo, row = swe_repo
    gold = _grade(repo, row, row["patch"], tmp_path)
    assert gold["resolved"] and gold["tests_status"]["FAIL_TO_PASS"]["success"] == ["test_requests.py::test_add"]
    unpatched = _grade(repo, row, "", tmp_path)
    assert not unpatched["resolved"] and unpatched["patch_successfully_applied"]
    assert unpatched["tests_status"]["FAIL_TO_PASS"]["failure"] == ["test_requests.py::test_add"]
    assert unpatched["tests_status"]["PASS_TO_PASS"]["success"] == ["test_requests.py::test_one"]


def test_requirements_come_from_the_setup_commit(tmp_path):
    repo = tmp_path / "flask"
    (repo / "requirements").mkdir(parents=True)
    (repo / "requirements" / "dev.txt").write_text("-r tests.txt\n-e .\n# comment\npre-commit==3.0\n")
    (repo / "requirements" / "tests.txt").write_text("pytest==7.3.1\n.[test]\n")
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "setup", cwd=repo)
    commit = git("rev-parse", "HEAD", cwd=repo).strip()
    (repo / "requirements" / "dev.txt").write_text("changed-later==1\n")  # the working tree must not matter
    assert recipes.read_requirements(repo, commit, "pallets/flask") == "pytest==7.3.1\npre-commit==3.0\n"
    with pytest.raises(RecipeError, match="no requirements file"):
        recipes.read_requirements(repo, commit, "psf/requests")


def test_build_environment_runs_the_steps_in_order(swe_repo, tmp_path, monkeypatch):
    repo, row = swe_repo
    row = dict(row, repo="pallets/flask", version="2.3")
    (repo / "requirements").mkdir()
    (repo / "requirements" / "dev.txt").write_text("pytest==7.3.1\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "reqs", cwd=repo)
    row["environment_setup_commit"] = git("rev-parse", "HEAD", cwd=repo).strip()
    monkeypatch.setattr(recipes, "find_python", lambda version: sys.executable)
    seen = []

    def runner(argv, cwd=None, **kwargs):
        requirements = Path(argv[-1]).read_text() if "-r" in argv else None
        seen.append((argv, cwd, requirements))
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    workspace = SimpleNamespace(ensure_commit=lambda repo_name, commit: repo)
    env = tmp_path / "env"
    recipes.build_environment(row, env, workspace.ensure_commit, runner=runner)
    pips = [argv[argv.index("install") + 1 :] for argv, _, _ in seen if "install" in argv]
    assert seen[0][0][1:3] == ["-m", "venv"]
    assert pips[0][-2:] == ["--upgrade", recipes.PIP_DEFAULT] and pips[1][-1] == "wheel"  # a recent pip, then wheel
    assert "Werkzeug==2.3.7" in pips[2]
    assert [r for _, _, r in seen if r] == ["pytest==7.3.1\n"]
    assert seen[-1][0][-2:] == ["-e", "."] and seen[-1][1] == env / "setup-src"
    assert (env / "setup-src" / "requirements" / "dev.txt").exists()

    def failing(argv, cwd=None, **kwargs):
        return SimpleNamespace(returncode=1, stdout="", stderr="ERROR: no matching distribution for wheel")

    with pytest.raises(RecipeError, match="psf__requests-9999: environment step failed.*no matching distribution"):
        recipes.build_environment(row, tmp_path / "env2", workspace.ensure_commit, runner=failing)


def test_image_pins_pip_cannot_resolve_are_installed_as_they_are(swe_repo, tmp_path, monkeypatch):
    """An image's pin set (its whole environment) that pip's resolver refuses is installed with --no-deps, the
    retry logged; any other failure of that step, or a refusal of a step that is not the pins, still fails."""
    repo, row = swe_repo
    pins = ["antlr4-python3-runtime==4.11.1", "cf-units==3.2.0"]
    row = dict(row, repo="pallets/flask", version="2.3", environment_pins=pins, environment_python="3.9")
    monkeypatch.setattr(recipes, "find_python", lambda version: sys.executable)
    workspace = SimpleNamespace(ensure_commit=lambda repo_name, commit: repo)
    seen = []

    def resolver_refuses_pins(argv, cwd=None, **kwargs):
        seen.append(argv)
        refused = argv[-len(pins):] == pins and "--no-deps" not in argv
        return SimpleNamespace(returncode=1 if refused else 0, stdout="",
                               stderr="ERROR: ResolutionImpossible: for help visit …" if refused else "")

    env = tmp_path / "env"
    recipes.build_environment(row, env, workspace.ensure_commit, runner=resolver_refuses_pins)
    pin_steps = [argv for argv in seen if argv[-len(pins):] == pins]
    assert len(pin_steps) == 2 and "--no-deps" not in pin_steps[0] and "--no-deps" in pin_steps[1]
    assert "pip's resolver refused them" in recipes.build_log_path(env).read_text()

    def pins_missing(argv, cwd=None, **kwargs):
        bad = argv[-len(pins):] == pins
        return SimpleNamespace(returncode=int(bad), stdout="", stderr="ERROR: No matching distribution" * bad)

    with pytest.raises(RecipeError, match="No matching distribution"):
        recipes.build_environment(row, tmp_path / "env2", workspace.ensure_commit, runner=pins_missing)

    def wheel_refused(argv, cwd=None, **kwargs):
        bad = argv[-1] == "wheel"
        return SimpleNamespace(returncode=int(bad), stdout="", stderr="ERROR: ResolutionImpossible" * bad)

    with pytest.raises(RecipeError, match="ResolutionImpossible"):
        recipes.build_environment(row, tmp_path / "env3", workspace.ensure_commit, runner=wheel_refused)


def test_local_backend_grades_a_recipe_row_end_to_end(swe_repo, tmp_path, monkeypatch):
    """Our recipe through swelab.evaluate.local's local backend: mirror, worktree, environment, eval script,
    official grading. The environment build is cut to a venv that borrows the workbench's pytest, so the
    test needs no network; everything else is the real path."""
    evaluate = pytest.importorskip("swelab.evaluate.local")
    from swelab.workspace import repos as workspace_mod
    repo, row = swe_repo
    row = dict(row, repo="pallets/flask", version="2.3", instance_id="pallets__flask-9999")
    monkeypatch.setattr(recipes, "find_python", lambda version: sys.executable)

    monkeypatch.setattr(recipes, "environment_steps", _offline_steps)
    # flask's recipe imports from src/; this repo keeps its package at the root
    monkeypatch.setitem(
        recipes.RECIPES,
        ("pallets/flask", "2.3"),
        recipes.Recipe(
            **{**recipes.RECIPES[("pallets/flask", "2.3")].__dict__, "pythonpath": ".", "requirements": False}
        ),
    )
    workspace = workspace_mod.Workspace(cache_dir=tmp_path / "cache", repo_sources={"pallets/flask": str(repo)})
    gold = evaluate.evaluate_local(row, row["patch"], workspace, timeout_s=120)
    assert gold.resolved, gold.log[-2000:]
    baseline = evaluate.evaluate_local(row, "", workspace, timeout_s=120)
    assert not baseline.resolved
    assert baseline.report["tests_status"]["FAIL_TO_PASS"]["failure"] == ["test_requests.py::test_add"]
    assert workspace.builds["environments"] == 1  # one environment per (repo, version), reused


HTTPBIN_TEST = '''
import json
import socket
import ssl
import threading
import urllib.request

import certifi


def test_httpbin():
    # http and https, by the public name, as requests' own tests call it; TLS verified against certifi
    tls = ssl.create_default_context(cafile=certifi.where())
    for url in ("http://httpbin.org/get?x=1", "https://httpbin.org/get?x=1", "HTTPS://www.httpbin.org/get?x=1"):
        with urllib.request.urlopen(url, timeout=10, context=tls) as response:
            assert json.loads(response.read())["args"] == {"x": "1"}


def test_httpbin_speaks_http_1_1_like_httpbin_org():
    # requests 0.14's tests read "Connection: keep-alive" back and post file bodies chunked
    import http.client

    connection = http.client.HTTPConnection("httpbin.org", 80, timeout=10)
    connection.request("GET", "/get")
    response = connection.getresponse()
    response.read()
    assert response.getheader("Connection").lower() == "keep-alive"
    connection.putrequest("POST", "/post")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.putheader("Content-Type", "application/octet-stream")
    connection.endheaders()
    connection.send(b"5\\r\\nhello\\r\\n0\\r\\n\\r\\n")
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["data"] == "hello"


def test_outside_addresses_hang_until_their_timeout():
    # requests' connect-timeout tests rely on an unanswered address timing out, not on "network unreachable":
    # the kind of failure says which (an unreachable network is an OSError at once, never a TimeoutError)
    try:
        socket.create_connection(("10.255.255.1", 80), timeout=0.5)
    except TimeoutError:
        pass
    except OSError as exc:
        raise AssertionError(f"failed at once ({exc}) instead of hanging until the timeout") from exc
    else:
        raise AssertionError("connected to an outside address")


def test_other_names_do_not_resolve():
    # the lookup runs in a thread so that a resolver that hangs fails this test after a generous bound
    # instead of holding the run; what is asserted is the kind of failure, never how long it took
    outcome = []

    def lookup():
        try:
            outcome.append(socket.getaddrinfo("pypi.org", 443))
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(120)
    assert outcome, "the name lookup hung (no answer within 120 s)"
    assert isinstance(outcome[0], socket.gaierror), f"resolved a name that is not stood in: {outcome[0]!r}"
'''

HTTPBIN_TESTS = [f"test_httpbin.py::{name}" for name in (
    "test_httpbin", "test_httpbin_speaks_http_1_1_like_httpbin_org", "test_outside_addresses_hang_until_their_timeout",
    "test_other_names_do_not_resolve")]


def test_requests_tests_reach_a_local_httpbin_inside_their_namespace(swe_repo, tmp_path, monkeypatch):
    """requests' tests call httpbin over http and https: the eval script serves it on 127.0.0.1 inside the test's
    own network and mount namespaces, httpbin.org pointed there and its CA trusted through certifi; every other
    address is a blackhole and every other name fails. The host's /etc/hosts and resolv.conf are untouched."""
    evaluate = pytest.importorskip("swelab.evaluate.local")
    from swelab.workspace.repos import Workspace

    if not evaluate._can_unshare_net():
        pytest.skip(f"no evaluation sandbox here: {sandbox.sandbox_problem(evaluation=True)}")
    repo, row = swe_repo
    (repo / "test_httpbin.py").write_text(HTTPBIN_TEST)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "httpbin test", cwd=repo)
    row = dict(row, base_commit=git("rev-parse", "HEAD", cwd=repo).strip(),
               PASS_TO_PASS=json.dumps(["test_requests.py::test_one", *HTTPBIN_TESTS]))
    monkeypatch.setattr(recipes, "find_python", lambda version: sys.executable)
    monkeypatch.setattr(recipes, "environment_steps", _offline_steps)
    monkeypatch.setitem(recipes.RECIPES, ("psf/requests", "2.10"), recipes.Recipe(
        **{**recipes.RECIPES[("psf/requests", "2.10")].__dict__, "test_cmd": "pytest -rA test_httpbin.py"}))
    workspace = Workspace(cache_dir=tmp_path / "cache", repo_sources={"psf/requests": str(repo)})
    host_files = {name: Path(name).read_text() for name in ("/etc/hosts", "/etc/resolv.conf")}
    gold = evaluate.evaluate_local(row, row["patch"], workspace, timeout_s=120)
    assert gold.resolved, gold.log[-3000:]
    assert gold.report["tests_status"]["PASS_TO_PASS"]["success"] == ["test_requests.py::test_one", *HTTPBIN_TESTS]
    assert {name: Path(name).read_text() for name in host_files} == host_files
    assert not list((tmp_path / "cache").rglob("swelab-eval-*"))  # the evaluation's scratch (its /tmp) is gone


def _offline_steps(row, python, env, requirements_file, source):
    """The environment cut to a venv that borrows the workbench's pytest: no network needed."""
    pytest_home = Path(pytest.__file__).resolve().parent.parent
    script = (
        "import pathlib, sys; site = next(pathlib.Path(sys.argv[1]).glob('lib/python*/site-packages')); "
        "(site / 'borrowed.pth').write_text(sys.argv[2] + '\\n'); "
        "shim = pathlib.Path(sys.argv[1]) / 'bin' / 'pytest'; "
        'shim.write_text(\'#!/bin/sh\\nexec "$(dirname "$0")/python" -m pytest "$@"\\n\'); shim.chmod(0o755)'
    )
    return [
        ([python, "-m", "venv", "--without-pip", str(env)], None),
        ([python, "-c", script, str(env), str(pytest_home)], None),
    ]


def _fake_python(path, prints: str, rc: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {prints}\nexit {rc}\n")
    path.chmod(0o755)
    return path


def test_find_python_looks_on_path_then_pyenv(tmp_path, monkeypatch):
    monkeypatch.delenv("SWELAB_PYTHON_3_9", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    assert recipes.find_python("3.9") is None
    for patch_level in ("3.9.9", "3.9.18"):
        _fake_python(tmp_path / "pyenv" / "versions" / patch_level / "bin" / "python3.9", "3.9")
    assert recipes.find_python("3.9") == str(tmp_path / "pyenv/versions/3.9.18/bin/python3.9")
    on_path = _fake_python(tmp_path / "bin" / "python3.9", "3.9")
    assert recipes.find_python("3.9") == str(on_path)


def test_find_python_skips_candidates_that_do_not_run_as_the_version(tmp_path, monkeypatch):
    # a pyenv shim for an installed but unselected version is on PATH and fails with "command not found"
    monkeypatch.delenv("SWELAB_PYTHON_3_9", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    _fake_python(tmp_path / "bin" / "python3.9", "pyenv: python3.9: command not found", rc=127)
    _fake_python(tmp_path / "pyenv" / "versions" / "3.9.20" / "bin" / "python3.9", "3.11")  # mislabelled
    real = _fake_python(tmp_path / "pyenv" / "versions" / "3.9.18" / "bin" / "python3.9", "3.9")
    assert recipes.find_python("3.9") == str(real)
    monkeypatch.setenv("SWELAB_PYTHON_3_9", str(tmp_path / "bin" / "python3.9"))
    assert recipes.find_python("3.9") is None  # a configured interpreter that does not run is not used


def test_a_changed_recipe_changes_the_environment_identity(monkeypatch):
    from swelab.workspace.environments import environment_identity

    row = lite("pallets__flask-4992")
    before = environment_identity(row)
    assert environment_identity(dict(row, instance_id="pallets__flask-1")) == before  # per (repo, version)
    changed = recipes.Recipe(**{**recipes.RECIPES[("pallets/flask", "2.3")].__dict__, "pip_packages": ("x==1",)})
    monkeypatch.setitem(recipes.RECIPES, ("pallets/flask", "2.3"), changed)
    assert environment_identity(row) != before  # so the environment built by the old recipe is rebuilt


# ---------------------------------------------------------------- issue 13: what changed verdicts


def test_old_requests_trust_the_standin_ca_through_requests_ca_bundle(tmp_path):
    """requests 2.3's certs.where() is its bundled cacert.pem (no certifi): the stand-in's CA reaches it only
    through REQUESTS_CA_BUNDLE, set only where certs.py does not use certifi."""
    from swelab.workspace import standins

    line = next(x for x in standins.service_lines(("httpbin",)) if "REQUESTS_CA_BUNDLE" in x)
    (tmp_path / "requests").mkdir()
    probe = f'swelab_trust=/trust; {line}; echo "${{REQUESTS_CA_BUNDLE:-unset}}"'
    old = '"""Returns the preferred default CA certificate bundle."""\ndef where():\n    return "cacert.pem"\n'
    for certs, expected in ((old, "/trust/certifi/cacert.pem"),
                            ("try:\n    from certifi import where\nexcept ImportError:\n    pass\n", "unset")):
        (tmp_path / "requests" / "certs.py").write_text(certs)
        out = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"})
        assert out.stdout.strip() == expected, out.stderr


def test_the_default_test_timeout_is_the_official_1800_s():
    from swelab.params import RunParams

    assert RunParams.__dataclass_fields__["eval_timeout_s"].default == 1800.0


def test_a_timed_out_run_says_the_patch_applied_and_the_tests_timed_out(toy_repo, cache_dir):
    from swelab.evaluate.local import evaluate_local
    from swelab.workspace.repos import Workspace

    repo, instance = toy_repo
    workspace = Workspace(cache_dir, repo_sources={"toy/toy": str(repo)})
    script = instance["eval_script"].replace("python -m pytest", "sleep 600; python -m pytest")
    hang = dict(instance, eval_script=script)
    verdict = evaluate_local(hang, instance["patch"], workspace, timeout_s=2)
    assert ">>>>> Tests Timed Out" in verdict.log
    assert verdict.report["patch_successfully_applied"] is True  # swebench's own report says false here
    assert verdict.report["timed_out"] is True and not verdict.resolved


def test_new_pythons_get_a_pip_that_still_installs_legacy_editable_projects():
    # pylint 2.x builds with setuptools ~62.6 (no build_editable hook): pip 25.3+ cannot `pip install -e .` it
    recipe = recipes.recipe_for(dict(lite("pallets__flask-4992"), repo="pylint-dev/pylint", version="2.15",
                                     instance_id="pylint-dev__pylint-1"))
    assert recipes.pip_spec(recipe) == "pip<25.3"
    assert recipes.pip_spec(dataclasses_replace(recipe, python="3.6")) == "pip<22"


def dataclasses_replace(recipe, **changes):
    import dataclasses

    return dataclasses.replace(recipe, **changes)


def test_verified_rows_get_their_official_images_pins_and_share_an_environment_per_pin_set(tmp_path):
    from swelab.workspace.environments import environment_identity, environment_key

    verified = lite("psf__requests-2317")  # in Verified: swebench recorded its image
    official = recipes.official_environment(verified)
    assert official["python"] == "3.9" and "pytest==7.4.4" in official["pins"]
    steps = [argv for argv, _ in recipes.environment_steps(verified, "/py", tmp_path, tmp_path / "r.txt", tmp_path)]
    assert any("pytest==7.4.4" in argv for argv in steps)
    assert not any("-r" in argv for argv in steps)  # the image's set replaces the (repo, version) spec
    other = dict(verified, instance_id="psf__requests-99999")  # not in Verified: the (repo, version) spec
    assert recipes.instance_pins(other) == ()
    assert environment_key(other) == "psf__requests__2.4" != environment_key(verified)
    same = dict(other, environment_pins=official["pins"], environment_python="3.9")
    assert environment_key(same) == environment_key(verified)  # same pins: same environment
    assert environment_identity(same) == environment_identity(verified)
    newer = dict(other, environment_pins=["pytest==8.0.0"], environment_python="3.11")
    assert recipes.recipe_for(newer).python == "3.11"  # the image's Python wins over the spec's


def test_a_failed_environment_build_is_an_error_verdict_and_the_others_go_on(toy_repo, cache_dir, monkeypatch,
                                                                              capsys, tmp_path):
    from swelab.evaluate.backends import evaluate_run
    from swelab.params import load_params
    from swelab.rundir import RunLayout
    from swelab.select.instances import write_run_instances
    from swelab.workspace.repos import Workspace

    repo, toy = toy_repo
    broken = {k: v for k, v in toy.items() if k not in ("eval_script", "image", "log_parser", "eval_type",
                                                         "env_recipe")}
    broken.update(instance_id="psf__requests-99999", repo="psf/requests", version="2.10")
    monkeypatch.setattr(recipes, "find_python", lambda version: sys.executable)
    ansi = "import sys; sys.stderr.write('\\x1b[31mERROR: No matching distribution found for nothing==9\\x1b[0m\\n')"
    monkeypatch.setattr(recipes, "environment_steps", lambda row, python, env, requirements, source: [
        ([sys.executable, "-m", "venv", "--without-pip", str(env)], None),
        ([sys.executable, "-c", ansi + "; sys.exit(1)"], None)])
    run_dir = tmp_path / "run"
    write_run_instances(run_dir, [toy, broken])
    layout = RunLayout(run_dir)
    layout.write_predictions("m", 1, [{"instance_id": iid, "model_name_or_path": "m", "model_patch": toy["patch"]}
                                      for iid in ("toy__toy-1", "psf__requests-99999")])
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "t", "eval_timeout_s": 120, "eval_workers": 1,
                                                 "outputs_dir": str(tmp_path / "out"),
                                                 "models": [{"name": "m", "kind": "gold"}]}))
    params = load_params(tmp_path / "p.yaml", environ={})
    workspace = Workspace(cache_dir, repo_sources={"toy/toy": str(repo), "psf/requests": str(repo)})
    summary, = evaluate_run(params, run_dir, workspace=workspace, progress=False)
    assert summary["resolved_ids"] == ["toy__toy-1"] and summary["errors"] == 1
    error = layout.read_report("m", 1, "psf__requests-99999")["error"]
    assert "No matching distribution found for nothing==9" in error and "\x1b" not in error and "\n" not in error
    log = Path(error.split("(log: ")[1].rstrip(")"))
    assert log.exists() and "nothing==9" in log.read_text()
    assert "psf__requests-99999" not in json.loads(layout.discrimination.read_text())
    out = capsys.readouterr().out
    assert "environment psf__requests__2.10 failed: psf__requests-99999" in out
    assert "built environment toy__toy__0.1 in" in out


def test_pytest_is_installed_at_each_base_commit_in_its_own_environment():
    # pytest tests itself: its console script and dependencies change between commits (4.6's base needs
    # importlib_metadata, which its setup commit does not install), as the official instance image installs them
    from swelab.workspace.environments import environment_key

    row = lite("pytest-dev__pytest-6116")
    other = dict(row, instance_id="pytest-dev__pytest-1", base_commit="f" * 40)
    assert recipes.install_commit(row) == row["base_commit"]
    assert environment_key(row) != environment_key(other)
    assert environment_key(row).startswith("pytest-dev__pytest__5.2__")
    assert recipes.install_commit(lite("psf__requests-3362")) is None  # the others: one per setup commit
    script = recipes.eval_script_for(row)
    assert 'cp "$VIRTUAL_ENV/setup-src/src/_pytest/_version.py" src/_pytest/_version.py' in script


EXT_C = """#include <Python.h>
static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a %s b);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
"""
# the project's "setup.py build_ext --inplace": gcc with the interpreter's headers, the module lands in the worktree;
# BUILD_FLAG comes from the recipe's variables (so they reach the sandboxed commands)
BUILD_EXT = (
    "python -c \"import os, subprocess, sysconfig; subprocess.check_call(['gcc', '-shared', '-fPIC', "
    "os.environ['BUILD_FLAG'], '-I' + sysconfig.get_paths()['include'], 'requests/_speedups.c', '-o', "
    "'requests/_speedups' + sysconfig.get_config_var('EXT_SUFFIX')])\""
)


def test_compiled_extensions_are_built_in_the_worktree_after_the_patch(tmp_path, monkeypatch):
    """A project with a C extension (astropy, matplotlib, scikit-learn): the shared environment cannot hold each
    instance's compiled modules, so the eval script builds them in the worktree, inside the sandbox, after the
    model's patch. The gold patch fixes the C source: it resolves only if the build sees the patched source."""
    from swelab.evaluate.local import evaluate_local
    from swelab.workspace.repos import BUILD_RECORD, Workspace

    repo = tmp_path / "requests"
    (repo / "requests").mkdir(parents=True)
    (repo / "requests" / "__init__.py").write_text("from requests._speedups import add\n")
    (repo / "requests" / "_speedups.c").write_text(EXT_C % "-")
    (repo / "test_requests.py").write_text("def test_import():\n    import requests\n")
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    base = git("rev-parse", "HEAD", cwd=repo).strip()
    gold = _diff(repo, lambda r: (r / "requests" / "_speedups.c").write_text(EXT_C % "+"))
    test_patch = _diff(repo, lambda r: (r / "test_requests.py").write_text(
        "def test_import():\n    import requests\n\n\ndef test_add():\n    from requests import add\n"
        "    assert add(2, 2) == 4\n"))
    row = {"instance_id": "psf__requests-9998", "repo": "psf/requests", "version": "2.10", "base_commit": base,
           "environment_setup_commit": base, "patch": gold, "test_patch": test_patch, "problem_statement": "add",
           "FAIL_TO_PASS": json.dumps(["test_requests.py::test_add"]),
           "PASS_TO_PASS": json.dumps(["test_requests.py::test_import"])}
    monkeypatch.setattr(recipes, "find_python", lambda version: sys.executable)
    monkeypatch.setattr(recipes, "environment_steps", _offline_steps)
    compiled = recipes.Recipe(**{**recipes.RECIPES[("psf/requests", "2.10")].__dict__, "services": (),
                                 "build_inplace": (BUILD_EXT,), "variables": (("BUILD_FLAG", "-O1"),)})
    monkeypatch.setitem(recipes.RECIPES, ("psf/requests", "2.10"), compiled)
    script = recipes.eval_script_for(row)
    assert script.index(BUILD_EXT) < script.index("git apply -v - <<")  # after the patch, before the test patch

    workspace = Workspace(cache_dir=tmp_path / "cache", repo_sources={"psf/requests": str(repo)})
    resolved = evaluate_local(row, gold, workspace, timeout_s=300)
    assert resolved.resolved, resolved.log[-3000:]
    unpatched = evaluate_local(row, "", workspace, timeout_s=300)
    assert not unpatched.resolved
    assert unpatched.report["tests_status"]["FAIL_TO_PASS"]["failure"] == ["test_requests.py::test_add"]
    assert unpatched.report["tests_status"]["PASS_TO_PASS"]["success"] == ["test_requests.py::test_import"]
    env = workspace.environment(recipes.with_grading_fields(row))
    assert dict(env.variables)["BUILD_FLAG"] == "-O1"
    record = json.loads((env.path / BUILD_RECORD).read_text())
    assert record["repo"] == "psf/requests" and record["seconds"] >= 0


def test_a_recipe_whose_compiler_is_missing_is_refused_up_front(monkeypatch):
    row = {"instance_id": "psf__requests-1", "repo": "psf/requests", "version": "2.10"}
    missing = recipes.Recipe(**{**recipes.RECIPES[("psf/requests", "2.10")].__dict__,
                                "variables": (("CC", "/nonexistent/ccache/gcc"),)})
    monkeypatch.setitem(recipes.RECIPES, ("psf/requests", "2.10"), missing)
    ok, reason = recipes.supported(row)
    assert not ok and "/nonexistent/ccache/gcc" in reason and "make system-deps" in reason


def test_xarray_environments_take_the_environment_files_packages_best_effort(tmp_path):
    """The official xarray image is `conda env update -f ci/requirements/environment.yml` plus the spec's pins: the
    file's packages come from PyPI one at a time, conda-forge names spelled PyPI's way, conda-only ones left out,
    each constrained to what is installed; one that cannot be installed is named and the others go on."""
    script = recipes.RECIPES[("pydata/xarray", "0.12")].pre_install[0]
    source, fake_pip = tmp_path / "setup-src", tmp_path / "fake" / "pip"
    (source / "ci" / "requirements").mkdir(parents=True)
    (source / "ci" / "requirements" / "environment.yml").write_text(
        "name: xarray-tests\nchannels:\n  - conda-forge\ndependencies:\n  - cftime\n  - matplotlib-base\n"
        "  - cdms2\n  - lxml    # Optional dep of pydap\n  - toolz=0.12\n  - missing-one\n  - pip\n  - pip:\n"
        "    - numbagg\n")
    fake_pip.mkdir(parents=True)  # `python -m pip` finds this one first (PYTHONPATH): it records, never downloads
    (fake_pip / "__init__.py").write_text("")
    (fake_pip / "__main__.py").write_text(
        "import sys, pathlib\nargs = sys.argv[1:]\n"
        f"pathlib.Path({str(tmp_path / 'calls')!r}).open('a').write(' '.join(args) + '\\n')\n"
        "if args[-1] == 'missing-one':\n    sys.exit('ERROR: No matching distribution found for missing-one')\n"
        "print('numpy==1.23.0' if 'freeze' in args else '')\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "fake")}
    done = subprocess.run(["bash", "-c", script], cwd=source, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    installs = [line.split()[-1] for line in (tmp_path / "calls").read_text().splitlines() if " install " in line]
    assert installs == ["cftime", "matplotlib", "lxml", "toolz==0.12.*", "missing-one", "numbagg"]
    assert "left out missing-one: ERROR: No matching distribution found" in done.stdout
    assert (tmp_path / "env-constraints.txt").read_text().strip() == "numpy==1.23.0"
    assert all("-c ../env-constraints.txt" in line for line in (tmp_path / "calls").read_text().splitlines()
               if " install " in line)
