"""pylint-dev/pylint recipes (swelab.workspace.recipes): swebench 4.1.0's SPECS_PYLINT, with the project installed
at each row's base commit as the official instance image does, so that pip resolves pylint's tightly pinned
astroid against the base's own setup.cfg (requirements still come from the setup commit). No network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from swelab.workspace import recipes
from swelab.workspace.environments import environment_key

LITE_VERSIONS = ("2.13", "2.14", "2.15")


def git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def commit_all(repo: Path, message: str) -> str:
    git("add", "-A", cwd=repo)
    git("-c", "commit.gpgsign=false", "commit", "-qm", message, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo).strip()


def test_the_recipes_are_the_4_1_0_specs_installed_at_the_base_commit():
    for version in (*LITE_VERSIONS, "2.9", "2.17", "3.0", "4.0"):
        recipe = recipes.RECIPES[("pylint-dev/pylint", version)]
        assert (recipe.python, recipe.install, recipe.test_cmd) == ("3.9", "python -m pip install -e .", "pytest -rA")
        assert recipe.requirements and recipe.log_parser == "parse_log_pylint"
        assert recipe.install_at_base, version


def test_each_base_commit_gets_its_own_environment():
    row = {"instance_id": "pylint-dev__pylint-1", "repo": "pylint-dev/pylint", "version": "2.15",
           "base_commit": "a" * 40, "environment_setup_commit": "e" * 40}
    sibling = dict(row, instance_id="pylint-dev__pylint-2", base_commit="b" * 40)
    assert recipes.install_commit(row) == "a" * 40
    assert environment_key(row) == "pylint-dev__pylint__2.15__" + "a" * 10
    assert environment_key(row) != environment_key(sibling)


def test_the_install_sees_the_base_commits_astroid_pin_and_the_setup_commits_requirements(tmp_path, monkeypatch):
    # pylint-7080: installed at its setup commit (setup.cfg: astroid>=2.12.13) pip pulled astroid 2.13.5 over the
    # image's 2.11.7, and three PASS_TO_PASS tests of test_self.py failed; the base says astroid<=2.12.0-dev0
    repo = tmp_path / "pylint"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "setup.cfg").write_text("[options]\ninstall_requires =\n    astroid>=2.11.6,<=2.12.0-dev0\n")
    (repo / "requirements_test.txt").write_text("pytest==7.1.2\n")
    base = commit_all(repo, "base")
    (repo / "setup.cfg").write_text("[options]\ninstall_requires =\n    astroid>=2.12.13,<=2.14.0-dev0\n")
    (repo / "requirements_test.txt").write_text("pytest==7.4.4\n")
    setup = commit_all(repo, "setup")
    row = {"instance_id": "pylint-dev__pylint-99999", "repo": "pylint-dev/pylint", "version": "2.15",
           "base_commit": base, "environment_setup_commit": setup}
    monkeypatch.setattr(recipes, "find_python", lambda version: sys.executable)
    seen = []

    def runner(argv, cwd=None, **kwargs):
        requirements = Path(argv[-1]).read_text() if "-r" in argv else None
        setup_cfg = (Path(cwd) / "setup.cfg").read_text() if cwd is not None else None
        seen.append((argv, cwd, requirements, setup_cfg))
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    env = tmp_path / "env"
    recipes.build_environment(row, env, lambda repo_name, commit: repo, runner=runner)
    assert [r for _, _, r, _ in seen if r] == ["pytest==7.4.4\n"]  # the env image's requirements: setup commit
    install_argv, install_cwd, _, install_setup_cfg = seen[-1]
    assert install_argv[-2:] == ["-e", "."] and install_cwd == env / "setup-src"
    assert "astroid>=2.11.6,<=2.12.0-dev0" in install_setup_cfg  # the instance image's install: base commit
