"""astropy/astropy recipes (swelab.workspace.recipes): swebench 4.1.0's SPECS_ASTROPY transcribed, the extensions
compiled in the worktree after the patch from build requirements the environment holds, and the setup checkout's
version for astropy's development tags. No network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from swebench.harness.log_parsers import PARSER_REGISTRY

from swelab.workspace import recipes

FIXTURE = Path(__file__).parent / "fixtures" / "swebench_lite_sample.jsonl"
# swebench v4.1.0 harness/constants/python.py, SPECS_ASTROPY for 3.0-v5.3 (verbatim, in its order)
SPEC_PINS = (
    "attrs==23.1.0", "exceptiongroup==1.1.3", "execnet==2.0.2", "hypothesis==6.82.6", "iniconfig==2.0.0",
    "numpy==1.25.2", "packaging==23.1", "pluggy==1.3.0", "psutil==5.9.5", "pyerfa==2.0.0.3",
    "pytest-arraydiff==0.5.0", "pytest-astropy-header==0.2.2", "pytest-astropy==0.10.0", "pytest-cov==4.1.0",
    "pytest-doctestplus==1.0.0", "pytest-filter-subpackage==0.1.2", "pytest-mock==3.11.1", "pytest-openfiles==0.5.0",
    "pytest-remotedata==0.4.0", "pytest-xdist==3.3.1", "pytest==7.4.0", "PyYAML==6.0.1", "setuptools==68.0.0",
    "sortedcontainers==2.4.0", "tomli==2.0.1",
)
# its pre_install for 4.1-v5.3, as the Python string it is there
SPEC_PRE_INSTALL = 'sed -i \'s/requires = \\["setuptools",/requires = \\["setuptools==68.0.0",/\' pyproject.toml'


def lite(instance_id: str) -> dict:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    return next(row for row in rows if row["instance_id"] == instance_id)


def test_the_recipes_are_the_4_1_0_specs():
    for version in ("4.1", "4.2", "4.3", "5.0", "5.1", "5.2", "v5.3"):
        recipe = recipes.RECIPES[("astropy/astropy", version)]
        assert recipe.python == ("3.10" if version == "v5.3" else "3.9"), version
        assert recipe.install == "python -m pip install -e .[test] --verbose"
        assert recipe.pip_packages == SPEC_PINS
        assert recipe.test_cmd == "pytest -rA"  # 4.1.0's TEST_PYTEST (its second, effective definition)
        assert recipe.pre_install[0] == SPEC_PRE_INSTALL
    # 4.1.0 maps astropy to parse_log_astropy = parse_log_pytest_v2; the installed swebench knows the name
    assert PARSER_REGISTRY["parse_log_astropy"] is PARSER_REGISTRY["parse_log_pytest_v2"]


def test_the_version_line_reads_the_setup_checkouts_version(tmp_path):
    (tmp_path / "setup-src" / "astropy").mkdir(parents=True)
    (tmp_path / "setup-src" / "astropy" / "_version.py").write_text(
        "from __future__ import annotations\nversion: str\n__version__ = version = '5.1.dev761+g298ccb478e'\n")
    line = recipes.RECIPES[("astropy/astropy", "5.1")].build_inplace[0]
    env = {"VIRTUAL_ENV": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", f'{line}\necho "$ASTROPY_SCM_VERSION"'], env=env, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "5.1.dev761+g298ccb478e"


def test_the_official_setuptools_edit_pins_the_build_requirement(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools",\n    "cython==0.29.22"]\n')
    subprocess.run(["bash", "-c", SPEC_PRE_INSTALL], cwd=tmp_path, check=True)
    assert 'requires = ["setuptools==68.0.0",' in (tmp_path / "pyproject.toml").read_text()


def test_the_eval_script_compiles_in_the_worktree_after_the_patch_and_before_the_test_patch():
    row = lite("astropy__astropy-12907")
    script = recipes.eval_script_for(row)
    build = script.index("python setup.py build_ext --inplace")
    assert script.index(f"git -c core.fileMode=false diff {row['base_commit']}") < build
    assert script.index("export PYTHONPATH=") < build < script.index("git apply -v - <<")
    assert build < script.index(f"git checkout {row['base_commit']} astropy/modeling/tests/test_separable.py")
    # the build requirements are on the path of the build alone, never of the tests; setuptools_scm gets the
    # setup checkout's version (the sandbox's git has no tags)
    build_line = next(line for line in script.splitlines() if "build_ext --inplace" in line)
    assert 'PYTHONPATH="$VIRTUAL_ENV/build-deps${PYTHONPATH:+:$PYTHONPATH}"' in build_line
    assert build_line.startswith('SETUPTOOLS_SCM_PRETEND_VERSION="$ASTROPY_SCM_VERSION" ')
    assert script.index("ASTROPY_SCM_VERSION=") < build and "/setup-src/astropy/_version.py" in script
    assert "pytest -rA astropy/modeling/tests/test_separable.py" in script
    assert "build-deps" not in script.split("pytest -rA", 1)[1]
    docker = recipes.eval_script_for(row, target="docker")  # the official image reinstalls instead
    assert "build_ext" not in docker and "python -m pip install -e .[test] --verbose" in docker


def test_the_environment_holds_the_build_requirements_beside_the_official_pins():
    row = lite("astropy__astropy-12907")
    steps = recipes.environment_steps(row, "/py", Path("/env"), None, Path("/env/setup-src"))
    commands = [argv for argv, _ in steps]
    pins = next(i for i, argv in enumerate(commands) if "pytest==7.4.0" in argv)
    edit = next(i for i, argv in enumerate(commands) if argv[:2] == ["bash", "-c"] and "setuptools==68.0.0" in argv[2])
    deps = next(i for i, argv in enumerate(commands) if argv[:2] == ["bash", "-c"] and "--target" in argv[2])
    install = next(i for i, argv in enumerate(commands) if "-e" in argv and ".[test]" in argv)
    assert pins < edit < deps < install  # the build requirements are read after the official edit
    assert steps[deps][1] == Path("/env/setup-src")  # ../bin/python and ../build-deps are the environment's
    assert "'../build-deps'" in commands[deps][2] and commands[deps][2].startswith("../bin/python ")


def test_a_development_tag_counts_on_from_its_release(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "one")
    git("tag", "v5.1.dev")  # astropy tags its development cycles so
    git("commit", "-q", "--allow-empty", "-m", "two")
    git("commit", "-q", "--allow-empty", "-m", "three")
    sha = git("rev-parse", "--short=10", "HEAD")
    version = recipes.scm_version(tmp_path, "HEAD")
    assert version is not None and version.startswith("5.1.dev2+g") and sha.startswith(version.split("+g")[1][:7])
    git("tag", "v5.1.dev0")
    assert recipes.scm_version(tmp_path, "HEAD") == "5.1.dev0"  # exactly on a tag: the tag itself


def test_astropy_helpers_versions_are_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(recipes, "find_python", lambda version: "/usr/bin/python" + version)
    row = {"instance_id": "astropy__astropy-7746", "repo": "astropy/astropy", "version": "1.3"}
    ok, reason = recipes.supported(row)
    assert not ok and "astropy_helpers" in reason and "submodule" in reason and "1.3" in reason
    assert recipes.supported(lite("astropy__astropy-12907")) == (True, "")


def test_a_checkout_without_tags_is_versioned_from_its_own_version_file(tmp_path):
    """A one-commit stand-in of a source release has no tag: the version of its CHANGES.rst becomes setuptools_scm's
    fallback_version; at a real commit (SETUPTOOLS_SCM_PRETEND_VERSION set) the pyproject stays as it is."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    source = tmp_path / "setup-src"
    (source / "astropy").mkdir(parents=True)
    pyproject = '[build-system]\nrequires = ["setuptools"]\n\n[tool.setuptools_scm]\nwrite_to = "astropy/_version.py"\n'
    (source / "pyproject.toml").write_text(pyproject)
    (source / "CHANGES.rst").write_text("Version 5.2 (2022-12-12)\n========================\n\nVersion 5.1.1 (x)\n")
    command = recipes.RECIPES[("astropy/astropy", "5.2")].pre_install[2]
    env = {"PATH": "/usr/bin:/bin", "SETUPTOOLS_SCM_PRETEND_VERSION": "5.3.dev9+gabc"}
    subprocess.run(["bash", "-c", command], cwd=source, env=env, check=True)
    assert (source / "pyproject.toml").read_text() == pyproject
    subprocess.run(["bash", "-c", command], cwd=source, env={"PATH": "/usr/bin:/bin"}, check=True)
    assert "[tool.setuptools_scm]\nfallback_version = '5.2'\nwrite_to" in (source / "pyproject.toml").read_text()
