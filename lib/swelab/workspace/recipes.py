"""Environment recipes for old-schema SWE-bench rows, so the local backend can run real repos without Docker.

swebench 5.x grades from fields each row carries (image, eval_script, log_parser, eval_type) and dropped the
per-(repo, version) install specs that 4.x kept in `MAP_REPO_VERSION_TO_SPECS`. Rows in the original schema (e.g.
../shared/data/) lack those fields. For the pairs below we transcribed the 4.1.0 specs
(swebench/harness/constants/python.py: SPECS_REQUESTS, SPECS_FLASK, SPECS_SYMPY, SPECS_PYLINT, TEST_PYTEST,
TEST_SYMPY, MAP_REPO_TO_REQS_PATHS; log parsers from harness/log_parsers/python.py) and rebuild an official-shaped
eval script (4.x make_eval_script_list_py): reset the test files, apply the test patch, the test command between the
official markers, reset again. Anything else is refused by `supported` with a reason.

Two targets: "local" (our backend: runs in the worktree with the environment's bin first on PATH, the
worktree put on PYTHONPATH so the tests import the patched code, no conda) and "docker" (the official
image layout: /testbed and the conda env "testbed").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unidiff import PatchSet

from swelab.workspace import mpl_freetype, standins

START_TEST_OUTPUT = ">>>>> Start Test Output"  # swebench.harness.constants
END_TEST_OUTPUT = ">>>>> End Test Output"
HEREDOC = "EOF_114329324912"  # the delimiter 4.x used for the test patch
NON_TEST_EXTS = (".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml")
TEST_PYTEST = "pytest -rA"  # 4.1.0 defines TEST_PYTEST twice; the second, effective value is this one
TEST_SYMPY = "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose"
TEST_DJANGO = "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1"
# Every environment first gets the newest pip its Python can run (a conda env, as the official images use,
# comes with a recent one): a venv's bundled pip is as old as the interpreter (18.1 on 3.6, 23.0 on 3.8), and
# old pips install wheels built for newer Pythons when an index gives no Requires-Python (a local mirror or a
# find-links folder may not), or backtrack for many minutes over a requirements file like Django's.
PIP_FOR_PYTHON = {"3.5": "pip<21", "3.6": "pip<22", "3.7": "pip<24.1", "3.8": "pip<25.1"}
# Newer Pythons: the newest pip before 25.3, which dropped the `setup.py develop` fallback of `pip install -e`:
# projects whose build pins setuptools < 64 (pylint 2.x wants ~62.6, old astropy/matplotlib/scikit-learn) have
# no PEP 660 `build_editable` hook and cannot be installed editable by 25.3+. The official images' conda pips
# predate it.
PIP_DEFAULT = "pip<25.3"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


# In a pre_install/post_install command: the workbench's own interpreter (a step that runs swelab code), put in
# when the steps are made, so a recipe (and the identity of its environments) does not depend on where it runs.
WORKBENCH_PYTHON = "{workbench_python}"


@dataclass(frozen=True)
class Recipe:
    python: str
    install: str
    test_cmd: str
    log_parser: str
    packages: tuple[str, ...] = ()  # 4.x "packages" when it is a package list (conda create ... <packages>)
    requirements: bool = False  # 4.x "packages: requirements.txt": read from the env setup commit
    pip_packages: tuple[str, ...] = ()
    pythonpath: str = "."  # where the tests import the package from, relative to the worktree (local target)
    eval_type: str = "pass_and_fail"
    services: tuple[str, ...] = ()  # network services the tests call, stood in locally (swelab.workspace.standins)
    eval_commands: tuple[str, ...] = ()  # 4.x "eval_commands": run before the tests (locale exports, ...)
    locale: str | None = None  # a locale the tests need; built into the environment when the machine lacks it
    pre_install: tuple[str, ...] = ()  # 4.x "pre_install" file edits, run in the setup checkout before install
    post_install: tuple[str, ...] = ()  # commands run in the setup checkout after the install (local target)
    # Files the install generates that the tests import (setuptools_scm's _version.py), copied from the setup
    # checkout into the worktree before the tests (the tests import the worktree, which never had them).
    generated: tuple[str, ...] = ()
    # local target only: pre_install edits the tests depend on (tox.ini), made in the worktree, and exports
    worktree_edits: tuple[str, ...] = ()
    # The official instance image installs the project at the row's base commit; a project whose install
    # itself is under test (pytest: its console script and dependencies change from commit to commit) gets one
    # environment per base commit instead of one per setup commit.
    install_at_base: bool = False
    # local target only: commands that compile the project's extensions in the worktree, after the patch (the
    # official eval script reruns the install there); the sandbox has no network, so the environment holds every
    # build dependency. Projects with compiled parts (astropy, matplotlib, scikit-learn) need it: the tests
    # import the worktree, which has no compiled modules of its own.
    build_inplace: tuple[str, ...] = ()
    # variables every command of the environment gets; "{env}" stands for the environment's folder
    variables: tuple[tuple[str, str], ...] = ()
    # A row without pins of its own takes those of a Verified instance of the same (repo, version): all instances
    # of a (repo, version) share one official environment image (same environment_setup_commit), so a sibling's
    # recorded image is the best record of that environment (sibling_environment). For projects whose
    # unpinned dependencies moved on since the images were built (2024).
    sibling_pins: bool = False
    # host variables whose values change what the environment holds (a source the build takes): part of its
    # identity, so setting one rebuilds
    identity_variables: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


_FLASK_PINS_3_9 = (
    "setuptools==70.0.0",
    "Werkzeug==2.3.7",
    "Jinja2==3.0.1",
    "itsdangerous==2.1.2",
    "click==8.0.1",
    "MarkupSafe==2.1.3",
)
_FLASK_PINS = (
    "setuptools==70.0.0",
    "click==8.1.3",
    "itsdangerous==2.1.2",
    "Jinja2==3.1.2",
    "MarkupSafe==2.1.1",
    "Werkzeug==2.3.7",
)
REQS_PATHS = {  # 4.x MAP_REPO_TO_REQS_PATHS: the first that exists at the setup commit
    "pallets/flask": ("requirements/dev.txt",),
    "sympy/sympy": ("requirements-dev.txt", "requirements-test.txt"),
    "pylint-dev/pylint": ("requirements_test.txt",),
    "django/django": ("tests/requirements/py3.txt",),
}

RECIPES: dict[tuple[str, str], Recipe] = {}
for _v in (
    "0.7 0.8 0.9 0.11 0.13 0.14 1.1 1.2 2.0 2.2 2.3 2.4 2.5 2.7 2.8 2.9 2.10 2.11 2.12 2.17 "
    "2.18 2.19 2.22 2.26 2.25 2.27 2.31 3.0"
).split():
    RECIPES[("psf/requests", _v)] = Recipe(
        python="3.9",
        services=("httpbin",),  # requests' tests call httpbin: served locally inside the test namespace
        packages=("pytest",),
        install="python -m pip install .",
        test_cmd=TEST_PYTEST,
        log_parser="parse_log_requests",
    )
_FLASK_VERSIONS = [("2.0", "3.9", _FLASK_PINS_3_9), ("2.1", "3.10", _FLASK_PINS)]
_FLASK_VERSIONS += [(v, "3.11", _FLASK_PINS) for v in ("2.2", "2.3", "3.0", "3.1")]
for _v, _python, _pins in _FLASK_VERSIONS:
    RECIPES[("pallets/flask", _v)] = Recipe(
        python=_python,
        requirements=True,
        install="python -m pip install -e .",
        pip_packages=_pins,
        test_cmd=TEST_PYTEST,
        log_parser="parse_log_flask",
        pythonpath="src",
    )

# 4.1.0 SPECS_SYMPY: conda "mpmath flake8" (here from PyPI), then the pinned pip packages.
for _v in "0.7 1.0 1.1 1.2 1.4 1.5 1.6 1.7 1.8 1.9 1.10 1.11 1.12".split():
    RECIPES[("sympy/sympy", _v)] = Recipe(
        python="3.9",
        packages=("mpmath", "flake8"),
        pip_packages=("mpmath==1.3.0", "flake8-comprehensions"),
        install="python -m pip install -e .",
        test_cmd=TEST_SYMPY,
        log_parser="parse_log_sympy",
    )
for _v in ("1.13", "1.14"):
    RECIPES[("sympy/sympy", _v)] = Recipe(
        python="3.9",
        requirements=True,
        pip_packages=("mpmath==1.3.0",),
        install="python -m pip install -e .",
        test_cmd=TEST_SYMPY,
        log_parser="parse_log_sympy",
    )

# 4.1.0 SPECS_PYLINT, but for 2.8, whose spell-checking tests need Debian packages (apt-get in its pre_install).
# Installed at each row's base commit, as the official instance image does (`pip install -e .` after `git reset
# --hard <base>`): pylint pins astroid tightly in setup.cfg and bumps it within a minor version, so installing
# at the setup commit pulls a newer astroid than the base accepts (pylint-7080: astroid 2.13.5 instead of the
# image's 2.11.7, and three PASS_TO_PASS tests of test_self.py that expect "No such file or directory" fail).
for _v in "2.9 2.10 2.11 2.13 2.14 2.15 2.16 2.17 3.0 3.1 3.2 3.3 4.0".split():
    RECIPES[("pylint-dev/pylint", _v)] = Recipe(
        python="3.9",
        requirements=True,
        pip_packages=("astroid==3.0.0a6", "setuptools") if _v[0] in "34" else (),
        install="python -m pip install -e .",
        test_cmd=TEST_PYTEST,
        log_parser="parse_log_pylint",  # 4.x MAP_REPO_TO_PARSER: pytest's output with parametrized options
        install_at_base=True,
    )

# 4.1.0 SPECS_DJANGO for the versions in SWE-bench (3.0-5.2); 1.x/2.x install with setup.py and Python 3.5.
_DJANGO_LOCALE = ("export LANG=en_US.UTF-8", "export LANGUAGE=en_US:en", "export LC_ALL=en_US.UTF-8")
for _v, _python in (("3.0", "3.6"), ("3.1", "3.6"), ("3.2", "3.6"), ("4.0", "3.8"), ("4.1", "3.9"), ("4.2", "3.9"),
                    ("5.0", "3.11"), ("5.1", "3.11"), ("5.2", "3.11")):
    RECIPES[("django/django", _v)] = Recipe(
        python=_python,
        requirements=True,
        install="python -m pip install -e .",
        test_cmd=TEST_DJANGO,
        log_parser="parse_log_django",
        eval_commands=(
            ("sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen", *_DJANGO_LOCALE) if _v[0] == "3" else ()
        ),
        locale="en_US.UTF-8" if _v[0] == "3" else None,
    )

# 4.1.0 SPECS_SEABORN: pure Python; 0.12+ installs the [dev] extra.
_SEABORN_PINS = ("contourpy==1.1.0", "cycler==0.11.0", "fonttools==4.42.1", "importlib-resources==6.0.1",
                 "kiwisolver==1.4.5", "matplotlib==3.7.2", "numpy==1.25.2", "packaging==23.1", "pillow==10.0.0",
                 "pyparsing==3.0.9", "pytest", "python-dateutil==2.8.2", "pytz==2023.3.post1", "scipy==1.11.2",
                 "six==1.16.0", "tzdata==2023.1", "zipp==3.16.2")
RECIPES[("mwaskom/seaborn", "0.11")] = Recipe(
    python="3.9", install="python -m pip install -e .", pip_packages=(*_SEABORN_PINS, "pandas==1.3.5"),
    test_cmd="pytest --no-header -rA", log_parser="parse_log_seaborn")
for _v in ("0.12", "0.13", "0.14"):
    RECIPES[("mwaskom/seaborn", _v)] = Recipe(
        python="3.9", install="python -m pip install -e .[dev]", pip_packages=(*_SEABORN_PINS, "pandas==2.0.0"),
        test_cmd="pytest --no-header -rA", log_parser="parse_log_seaborn")

# 4.1.0 SPECS_PYTEST: pytest tests itself, so the worktree's src/ is what runs (console script included).
_PYTEST_BASE = ("attrs==23.1.0", "more-itertools==10.1.0", "pluggy==0.13.1", "py==1.11.0")
_PYTEST_PINS = {
    "4.4": ("atomicwrites==1.4.1", *_PYTEST_BASE, "setuptools==68.0.0", "six==1.16.0"),
    "4.5": ("atomicwrites==1.4.1", "attrs==23.1.0", "more-itertools==10.1.0", "pluggy==0.11.0", "py==1.11.0",
            "setuptools==68.0.0", "six==1.16.0", "wcwidth==0.2.6"),
    "4.6": ("atomicwrites==1.4.1", *_PYTEST_BASE, "packaging==23.1", "six==1.16.0", "wcwidth==0.2.6"),
    **{v: ("atomicwrites==1.4.1", *_PYTEST_BASE, "packaging==23.1", "wcwidth==0.2.6") for v in ("5.0", "5.1", "5.2")},
    "5.3": (*_PYTEST_BASE, "packaging==23.1", "wcwidth==0.2.6"),
    "5.4": (*_PYTEST_BASE, "packaging==23.1"),
    "6.0": (*_PYTEST_BASE, "iniconfig==2.0.0", "packaging==23.1", "toml==0.10.2"),
    **{v: ("attrs==23.1.0", "iniconfig==2.0.0", "packaging==23.1", "pluggy==0.13.1", "py==1.11.0", "toml==0.10.2")
       for v in ("6.2", "6.3")},
    "7.0": ("attrs==23.1.0", "iniconfig==2.0.0", "packaging==23.1", "pluggy==0.13.1", "py==1.11.0"),
    **{v: ("attrs==23.1.0", "iniconfig==2.0.0", "packaging==23.1", "pluggy==0.13.1", "py==1.11.0", "tomli==2.0.1")
       for v in ("7.1", "7.2")},
    **{v: ("iniconfig==2.0.0", "packaging==23.1", "pluggy==1.3.0", "exceptiongroup==1.1.3", "tomli==2.0.1")
       for v in ("7.4", "8.0", "8.1", "8.2", "8.3", "8.4")},
}
for _v, _pins in _PYTEST_PINS.items():
    RECIPES[("pytest-dev/pytest", _v)] = Recipe(
        python="3.9", install="python -m pip install -e .", pip_packages=_pins, test_cmd=TEST_PYTEST,
        log_parser="parse_log_pytest", pythonpath="src", generated=("src/_pytest/_version.py",), install_at_base=True,
        pre_install=("sed -i 's/>=>=/>=/' setup.cfg",) if _v == "6.3" else ())

# 4.1.0 SPECS_SPHINX: tests run through tox (tox-current-env: in this environment), as the official image does.
_SPHINX_PINS_3 = (
    "sed -i 's/Jinja2>=2.3/Jinja2<3.0/' setup.py",
    "sed -i 's/sphinxcontrib-applehelp/sphinxcontrib-applehelp<=1.0.7/' setup.py",
    "sed -i 's/sphinxcontrib-devhelp/sphinxcontrib-devhelp<=1.0.5/' setup.py",
    "sed -i 's/sphinxcontrib-qthelp/sphinxcontrib-qthelp<=1.0.6/' setup.py",
    "sed -i 's/alabaster>=0.7,<0.8/alabaster>=0.7,<0.7.12/' setup.py",
    "sed -i \"s/'packaging',/'packaging', 'markupsafe<=2.0.1',/\" setup.py",
)
_SPHINX_HELP = {
    "4.1": (
        "grep -q 'sphinxcontrib-htmlhelp>=2.0.0' setup.py && "
        "sed -i 's/sphinxcontrib-htmlhelp>=2.0.0/sphinxcontrib-htmlhelp>=2.0.0,<=2.0.4/' setup.py || "
        "sed -i 's/sphinxcontrib-htmlhelp/sphinxcontrib-htmlhelp<=2.0.4/' setup.py",
        "grep -q 'sphinxcontrib-serializinghtml>=1.1.5' setup.py && "
        "sed -i 's/sphinxcontrib-serializinghtml>=1.1.5/sphinxcontrib-serializinghtml>=1.1.5,<=1.1.9/' setup.py || "
        "sed -i 's/sphinxcontrib-serializinghtml/sphinxcontrib-serializinghtml<=1.1.9/' setup.py",
    ),
    **dict.fromkeys(("4.2", "4.3", "4.4"), (
        "sed -i 's/sphinxcontrib-htmlhelp>=2.0.0/sphinxcontrib-htmlhelp>=2.0.0,<=2.0.4/' setup.py",
        "sed -i 's/sphinxcontrib-serializinghtml>=1.1.5/sphinxcontrib-serializinghtml>=1.1.5,<=1.1.9/' setup.py",
    )),
}
_SPHINX_TOX = "sed -i 's/pytest/pytest -rA/' tox.ini"
# The images (built in 2024) resolved setup.py's unpinned sphinxcontrib-jsmath to 1.0.1; 2.0.0 (2026-10-20) calls
# app.require_sphinx('5.0') and errors every math test of Sphinx < 5. conda's export of the images records no
# sphinxcontrib-* package (so the Verified pins lack it); its other sphinxcontrib packages had no release since.
# Run in the setup checkout ({env}/setup-src: ../bin/python is the environment's), before the install.
_SPHINX_JSMATH = "../bin/python -m pip install -q --disable-pip-version-check sphinxcontrib-jsmath==1.0.1"
for _v in ("1.5 1.6 1.7 1.8 2.0 2.1 2.2 2.3 2.4 3.0 3.1 3.2 3.3 3.4 3.5 4.0 4.1 4.2 4.3 4.4 4.5 5.0 5.1 5.2 5.3 "
           "6.0 6.2 7.0 7.1 7.2 7.3 7.4 8.0 8.1").split():
    _edits: tuple[str, ...] = (_SPHINX_TOX,)
    if _v[0] in "34" and _v != "4.5":
        _edits += _SPHINX_PINS_3 + _SPHINX_HELP.get(_v, (
            "sed -i 's/sphinxcontrib-htmlhelp/sphinxcontrib-htmlhelp<=2.0.4/' setup.py",
            "sed -i 's/sphinxcontrib-serializinghtml/sphinxcontrib-serializinghtml<=1.1.9/' setup.py"))
    if not _v.startswith("1."):  # a dependency since 2.0
        _edits += (_SPHINX_JSMATH,)
    _python = "3.10" if _v in ("8.0", "8.1") else "3.9"
    RECIPES[("sphinx-doc/sphinx", _v)] = Recipe(
        python=_python, install="python -m pip install -e .[test]",
        pip_packages=("tox==4.16.0", "tox-current-env==0.0.11", "Jinja2==3.0.3"),
        test_cmd=f"tox --current-env -epy{_python.replace('.', '')} -v --", log_parser="parse_log_sphinx",
        # tox passes on only the variables its config names: the worktree must stay first on PYTHONPATH; and
        # tox-current-env links .tox/<env>/bin/python to this venv's interpreter, which outside the venv's folder
        # no longer sees its site-packages (a conda env's python is a real binary): named on PYTHONPATH too
        pre_install=_edits, worktree_edits=(
            _SPHINX_TOX, "export TOX_OVERRIDE=testenv.pass_env+=PYTHONPATH",
            'export PYTHONPATH="$PYTHONPATH:$(echo "$VIRTUAL_ENV"/lib/python*/site-packages)"'),
        # setup.py leaves docutils, pytest, pygments, ... unpinned: today's releases (pytest 8.4, docutils) break
        # the 3.x tests that passed in the 2024 images; a Lite row takes its Verified siblings' image pins
        sibling_pins=True,
        notes=("7.2+ also apt-installs graphviz in the official image (tests/apt_install.sh: graphviz)",))

# 4.1.0 SPECS_XARRAY: the official image is `conda env update -f ci/requirements/environment.yml` plus these
# pins (Verified rows get their image's full set from VERIFIED_PINS). The environment file's packages come from
# PyPI here, one at a time and best effort (conda-only ones, or one with no wheel for these pins, are left out and
# named in the build log), constrained to what is already installed so the spec's numpy/pandas/dask stay: without
# them (cftime, pint, ...) their tests skip, and swebench counts a skipped PASS_TO_PASS test as failed.
_XARRAY_ENV_YML = r"""../bin/python - <<'XARRAY_ENV_YML'
import pathlib, re, subprocess, sys
path = pathlib.Path("ci/requirements/environment.yml")
if not path.exists():
    sys.exit(print("no", path))
# conda-forge names PyPI spells otherwise; conda-only packages and what conda itself brings
rename = {"matplotlib-base": "matplotlib", "iris": "scitools-iris", "python-eccodes": "eccodes"}
skip = {"pip", "python", "cdms2", "hdf5", "pynio", "esmpy", "libnetcdf"}
names, in_dependencies = [], False
for line in path.read_text().splitlines():
    if re.match(r"^\S", line):  # a top-level key: name, channels, dependencies
        in_dependencies = line.startswith("dependencies:")
    match = re.match(r"^\s+-\s+([A-Za-z0-9_.-]+)\s*(=?=?[0-9][^\s#]*)?\s*(#.*)?$", line)
    if in_dependencies and match and match.group(1) not in skip:
        version = (match.group(2) or "").lstrip("=")
        names.append(rename.get(match.group(1), match.group(1)) + (f"=={version}.*" if version else ""))
python = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
frozen = subprocess.run([*python, "freeze"], capture_output=True, text=True).stdout
pathlib.Path("../env-constraints.txt").write_text(frozen)
for name in names:
    done = subprocess.run([*python, "install", "-q", "-c", "../env-constraints.txt", name], capture_output=True,
                          text=True)
    reason = (done.stderr.strip().splitlines() or [""])[-1][:200]
    print(f"installed {name}" if done.returncode == 0 else f"left out {name}: {reason}")
XARRAY_ENV_YML"""
for _v in "0.12 0.18 0.19 0.20 2022.03 2022.06 2022.09 2023.07 2024.05".split():
    RECIPES[("pydata/xarray", _v)] = Recipe(
        python="3.10", install="python -m pip install -e .",
        pip_packages=("numpy==1.23.0", "packaging==23.1", "pandas==1.5.3", "pytest==7.4.0", "python-dateutil==2.8.2",
                      "pytz==2023.3", "six==1.16.0", "scipy==1.11.1", "setuptools==68.0.0", "dask==2022.8.1"),
        pre_install=(_XARRAY_ENV_YML,),
        test_cmd=TEST_PYTEST, log_parser="parse_log_xarray",
        notes=("ci/requirements/environment.yml's packages come from PyPI, best effort (the build log names those "
               "left out)",))

# ---- astropy/astropy (compiled: build_inplace)
# 4.1.0 SPECS_ASTROPY for 4.1-v5.3 (pyproject builds: extension-helpers, Cython, oldest-supported-numpy). The official
# eval script reruns `pip install -e .[test]` after the patch: pip's isolated build environment fetches the
# pyproject's build requirements (network) and compiles the extensions into /testbed. Here the sandbox has no
# network, so the environment build installs those same requirements (the setup commit's pyproject, after the
# official setuptools==68.0.0 edit) into a folder of their own, {env}/build-deps, kept off the tests' path: the test
# environment stays exactly the official pins (numpy 1.25.2), and the worktree's extensions are compiled against
# the build requirements' numpy (1.19.3 from oldest-supported-numpy), as pip's isolated build does.
_ASTROPY_PINS = (
    "attrs==23.1.0", "exceptiongroup==1.1.3", "execnet==2.0.2", "hypothesis==6.82.6", "iniconfig==2.0.0",
    "numpy==1.25.2", "packaging==23.1", "pluggy==1.3.0", "psutil==5.9.5", "pyerfa==2.0.0.3",
    "pytest-arraydiff==0.5.0", "pytest-astropy-header==0.2.2", "pytest-astropy==0.10.0", "pytest-cov==4.1.0",
    "pytest-doctestplus==1.0.0", "pytest-filter-subpackage==0.1.2", "pytest-mock==3.11.1", "pytest-openfiles==0.5.0",
    "pytest-remotedata==0.4.0", "pytest-xdist==3.3.1", "pytest==7.4.0", "PyYAML==6.0.1", "setuptools==68.0.0",
    "sortedcontainers==2.4.0", "tomli==2.0.1",
)
_ASTROPY_SETUPTOOLS = "sed -i 's/requires = \\[\"setuptools\",/requires = \\[\"setuptools==68.0.0\",/' pyproject.toml"
# Run in the setup checkout ({env}/setup-src, so ../bin/python is the environment's), with network, after the edit.
_ASTROPY_BUILD_DEPS = (
    "../bin/python -c \"import subprocess, sys, tomli; "
    "requires = tomli.load(open('pyproject.toml', 'rb'))['build-system']['requires']; "
    "subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', '--target', '../build-deps', *requires])\""
)
# A setup checkout with no tag behind it (tests/near_base_check.py's one-commit stand-in of a source release) gets
# no SETUPTOOLS_SCM_PRETEND_VERSION, and setuptools_scm cannot version a folder without git: the release's own
# version, the first "Version X (date)" heading of CHANGES.rst, becomes its fallback_version (the stand-in has no
# astropy/_version.py: git ignores it). A no-op at real commits (tags are reachable: the variable is set).
_ASTROPY_NO_TAG = (
    '[ -n "${SETUPTOOLS_SCM_PRETEND_VERSION:-}" ] || ../bin/python -c "import re; '
    "version = re.search(r'^Version (\\S+)', open('CHANGES.rst').read(), re.M).group(1); "
    "text = open('pyproject.toml').read(); open('pyproject.toml', 'w').write(text.replace('[tool.setuptools_scm]\\n', "
    "'[tool.setuptools_scm]\\nfallback_version = \\'%s\\'\\n' % version, 1))\""
)
# In the worktree after the patch (no network): what pip's editable install compiles, in place, with the build
# requirements first on the path. Their setuptools_scm also writes astropy/_version.py, as the install does; the
# sandbox's git has no tags (it would say 0.1.devN), so it is given the setup checkout's version, which the
# environment build took from `git describe` (the official /testbed keeps the tags older than the base commit).
_ASTROPY_BUILD = (
    "ASTROPY_SCM_VERSION=\"$(python -c 'import os, runpy; print(runpy.run_path("
    "os.environ[\"VIRTUAL_ENV\"] + \"/setup-src/astropy/_version.py\")[\"version\"])')\"",
    'SETUPTOOLS_SCM_PRETEND_VERSION="$ASTROPY_SCM_VERSION" '
    'PYTHONPATH="$VIRTUAL_ENV/build-deps${PYTHONPATH:+:$PYTHONPATH}" python setup.py build_ext --inplace -j 2',
)
for _v in ("4.1", "4.2", "4.3", "5.0", "5.1", "5.2", "v5.3"):
    RECIPES[("astropy/astropy", _v)] = Recipe(
        python="3.10" if _v == "v5.3" else "3.9",
        install="python -m pip install -e .[test] --verbose",
        pip_packages=_ASTROPY_PINS,
        test_cmd=TEST_PYTEST,
        log_parser="parse_log_astropy",  # 4.1.0 MAP_REPO_TO_PARSER: parse_log_pytest_v2
        pre_install=(_ASTROPY_SETUPTOOLS, _ASTROPY_BUILD_DEPS, _ASTROPY_NO_TAG),
        build_inplace=_ASTROPY_BUILD,
        notes=("the extensions are built with the build requirements of the setup commit's pyproject (its Cython "
               "pin); the official rebuild after the patch uses the base commit's",),
    )
# 0.1-3.2 (Lite: 1.3) build through astropy_helpers, a git submodule: refused (REFUSED_VERSIONS, below), why here.
_ASTROPY_HELPERS_REFUSED = (
    "astropy/astropy {version} builds with astropy_helpers, a git submodule (github.com/astropy/astropy-helpers, "
    "pinned per commit): `git archive` leaves it out, the official image's install has ah_bootstrap run `git "
    "submodule update` (network), and the local environment build fetches no submodule while the in-place "
    "build's sandbox has no network; use the Docker harness"
)

# ---- scikit-learn/scikit-learn (compiled: build_inplace)
# 4.1.0 SPECS_SKLEARN. Its conda "packages" come from PyPI here, pinned to what conda resolved in the official
# images (verified_pins.json: every 0.20-0.22 image has cython 0.29.24, numpy 1.19.2, scipy 1.5.2, pandas 1.1.5,
# matplotlib 3.3.4, pytest 6.2.4, setuptools 58.0.4; all have cp36 wheels). The Cython pin matters: an unpinned
# `cython` would be 3.x, which these old .pyx files were never built with. The 4.x pip_packages follow verbatim
# (already satisfied). 1.3: its own pins, but numpy 1.19.2 and scipy 1.5.2 have no Python 3.9 wheels on PyPI (conda
# has builds; scipy would need gfortran and LAPACK to build here): the first patch releases that do, numpy 1.19.3
# and scipy 1.5.4, stand in. pandas/matplotlib are pinned to the image's resolution (25747: pandas 1.4.4,
# matplotlib 3.6.2, contourpy 1.0.5), the newest that take that numpy. A Verified 1.3 row whose image pins
# numpy 1.19.2 (25747) cannot be built from PyPI wheels as pinned.
# The tests import the worktree, so its Cython extensions are built there after the patch (the official eval
# script reruns the install, which rebuilds what changed): build_ext --inplace, the part of `pip install -e .`
# (setup.py develop) that does not write to the environment. Two things keep that affordable (a full build takes
# ~25 minutes on two shared cores, twice per row):
# - Cython's output depends on its sources and this environment's Cython alone: when the worktree's .pyx, .pxd,
#   .pxi and .tp files are byte for byte those the environment's install cythonized (its setup-src), the .c/.cpp
#   (and Tempita's .pyx/.pxd) it generated are copied in, newer than the sources, so cythonize skips them, as it
#   skips unchanged files in the official image's /testbed; one changed, added or removed: a full cythonize.
#   (Regenerated here they would differ anyway: Cython writes numpy's .pxd path relative to the cwd.)
# - ccache: the environment's install fills {env}/ccache; the worktree's builds only read it (the sandbox
#   mounts the environment read-only); a source the patch changed simply misses. ccache hashes the cwd under
#   -g unless CCACHE_NOHASHDIR, and LANG/LC_ALL always: both set alike for the install and the sandbox (which
#   sets C.UTF-8). /usr/lib/ccache/gcc, one word, not "ccache gcc": numpy.distutils takes the C++ linker's first
#   word from CXX, and "ccache" + gcc's flags would link C++ extensions without libstdc++.
_SKLEARN_VARIABLES = (
    ("CC", "/usr/lib/ccache/gcc"), ("CXX", "/usr/lib/ccache/g++"), ("CCACHE_DIR", "{env}/ccache"),
    ("CCACHE_NOHASHDIR", "1"), ("LANG", "C.UTF-8"), ("LC_ALL", "C.UTF-8"),
    ("NPY_NUM_BUILD_JOBS", "2"), ("SKLEARN_BUILD_PARALLEL", "2"),  # the install's compile, two at a time
)
_SKLEARN_REUSE_CYTHON = """python - <<'SKLEARN_CYTHON'
import filecmp, os, shutil
SETUP = os.path.join(os.environ["VIRTUAL_ENV"], "setup-src")
SKIP = ("build", ".git", "doc", "examples", "benchmarks")
def walk(root):
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP]
        yield os.path.relpath(folder, root), set(files)
def sources(root):
    return {os.path.join(folder, name) for folder, files in walk(root) for name in files
            if name.endswith((".pyx", ".pxd", ".pxi", ".tp")) and name + ".tp" not in files}
mine = sources(".")
same = mine == sources(SETUP) and all(filecmp.cmp(p, os.path.join(SETUP, p), shallow=False) for p in mine)
print("Cython sources as the environment's install had them:", same)
for folder, files in walk(SETUP) if same else ():
    for name in files:
        stem, ext = os.path.splitext(name)
        if (ext in (".c", ".cpp") and stem + ".pyx" in files) or name + ".tp" in files:
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                shutil.copyfile(os.path.join(SETUP, path), path)
SKLEARN_CYTHON"""
_SKLEARN_BUILD = (
    "export CCACHE_READONLY=1 CCACHE_TEMPDIR=/tmp/ccache",  # the environment is read-only in the sandbox
    _SKLEARN_REUSE_CYTHON,
    "python setup.py build_ext --inplace -j 2",
)
_SKLEARN_INSTALL = "python -m pip install -v --no-use-pep517 --no-build-isolation -e ."
for _v in ("0.20", "0.21", "0.22"):
    RECIPES[("scikit-learn/scikit-learn", _v)] = Recipe(
        python="3.6",
        packages=("numpy==1.19.2", "scipy==1.5.2", "cython==0.29.24", "pytest==6.2.4", "pandas==1.1.5",
                  "matplotlib==3.3.4", "setuptools==58.0.4"),
        pip_packages=("cython", "numpy==1.19.2", "setuptools", "scipy==1.5.2"),
        install=_SKLEARN_INSTALL, test_cmd=TEST_PYTEST, log_parser="parse_log_scikit",  # = parse_log_pytest_v2
        build_inplace=_SKLEARN_BUILD, variables=_SKLEARN_VARIABLES,
        notes=("needs the Debian package ccache (/usr/lib/ccache)",))
RECIPES[("scikit-learn/scikit-learn", "1.3")] = Recipe(
    python="3.9",
    packages=("numpy==1.19.3", "scipy==1.5.4", "cython==3.0.10", "pytest", "pandas==1.4.4", "matplotlib==3.6.2",
              "contourpy==1.0.5", "setuptools", "joblib", "threadpoolctl"),
    pip_packages=("cython", "setuptools", "numpy", "scipy"),
    install=_SKLEARN_INSTALL, test_cmd=TEST_PYTEST, log_parser="parse_log_scikit",
    build_inplace=_SKLEARN_BUILD, variables=_SKLEARN_VARIABLES,
    notes=("needs the Debian package ccache (/usr/lib/ccache)",))

# ---- matplotlib/matplotlib (compiled: build_inplace)
# 4.1.0 SPECS_MATPLOTLIB 3.5-3.7: Python 3.11, conda `environment.yml` then these pip pins, `pip install -e .`. Its
# conda packages come from PyPI here: a Verified row gets its image's pins; another row would take a Verified
# sibling's (sibling_pins; verified_pins.json records no "version" for matplotlib yet, so today it gets) the test
# part of environment.yml at the versions those images had. Tests also need Debian's ghostscript (pdf comparisons).
# Its pre_install apt-installs imagemagick ffmpeg texlive... (Debian packages: the Makefile's system-deps and
# system-deps-tex) and wgets qhull's source into build/; the build links Debian's qhull 2020.2 instead
# (libqhull-dev: the same release). setupext downloads FreeType 2.6.1 at build time and links it statically: the
# text in image comparisons is drawn with it. mpl_freetype puts that release under build/ (from
# $SWELAB_FREETYPE_SOURCE where the download hosts are out of reach, as here), else falls back to Debian's
# FreeType 2.12.1 (text image comparisons may then fail), and writes the mplsetup.cfg that says which
# (MPLSETUPCFG); the in-place build links the same tree. The tests import the worktree's lib/, so its
# extensions are built there after the patch (the official eval script reruns the install): build_ext --inplace,
# with ccache filled by the environment's install and only read in the read-only sandbox (see scikit-learn).
# setup.py's setup_requires (3.5: setuptools_scm_git_archive, which pip's build isolation fetched for the image)
# lies in {env}/build-deps, off the tests' path.
_MPL_SPEC_PINS = (
    "contourpy==1.1.0", "cycler==0.11.0", "fonttools==4.42.1", "ghostscript", "kiwisolver==1.4.5", "numpy==1.25.2",
    "packaging==23.1", "pillow==10.0.0", "pikepdf", "pyparsing==3.0.9", "python-dateutil==2.8.2", "six==1.16.0",
    "setuptools==68.1.2", "setuptools-scm==7.1.0", "typing-extensions==4.7.1",
)
# environment.yml's build and test dependencies that PyPI has, at the versions of the Verified images
_MPL_ENV_YML = (
    "certifi==2025.1.31", "pybind11==2.13.6", "pytest==8.3.4", "pytest-cov==6.0.0", "pytest-rerunfailures==15.0",
    "pytest-timeout==2.3.1", "pytest-xdist==3.6.1", "psutil==5.9.0", "pandas==2.2.3", "pytz==2024.1",
    "ipython==8.32.0", "ipykernel==6.29.5", "nbconvert==7.16.6", "nbformat==5.10.4", "tornado==6.4.2",
    "cairocffi==1.7.1", "colorspacious==1.1.2", "coverage==7.6.9",
)
_MPL_PRE_INSTALL = (
    # run in {env}/setup-src: ../ is the environment. FreeType 2.6.1 under build/ (or the system's), and the
    # mplsetup.cfg that says which (swelab.workspace.mpl_freetype)
    f"{WORKBENCH_PYTHON} -m swelab.workspace.mpl_freetype ../mplsetup.cfg",
    "../bin/python -m pip install -q --no-deps --target ../build-deps setuptools_scm_git_archive==1.4.1",
    # the setup checkout is a `git archive` (no .git): its export-substituted .git_archival.txt names no tag
    # where none is reachable, and setuptools_scm then fails instead of taking SETUPTOOLS_SCM_PRETEND_VERSION
    # (set when a tag is reachable) or setup.py's fallback_version; the official /testbed is a clone
    "rm -f .git_archival.txt",
)
_MPL_VARIABLES = (
    ("MPLSETUPCFG", "{env}/mplsetup.cfg"),
    ("CC", "/usr/lib/ccache/gcc"), ("CXX", "/usr/lib/ccache/g++"), ("CCACHE_DIR", "{env}/ccache"),
    ("CCACHE_NOHASHDIR", "1"),  # the cwd (setup-src vs worktree) stays out of the hash
    # ccache hashes LC_ALL: the sandbox sets it (to $LANG, else C.UTF-8), so the install must set it alike or
    # every worktree compile misses
    ("LC_ALL", "C.UTF-8"),
)
# Up to early 3.7, matplotlib's setup.py declares namespace_packages=["mpl_toolkits"] (with a pkg_resources
# lib/mpl_toolkits/__init__.py), and its editable install writes a *-nspkg.pth that binds mpl_toolkits to the
# installed checkout when the interpreter starts, so that __init__.py never runs. The official eval script reruns
# the install at the base commit, so the binding goes to the tested checkout; here the environment is installed
# once, at the setup commit, and the tests import the worktree (PYTHONPATH). So the environment gets one .pth of
# its own instead: it finds the first mpl_toolkits on sys.path (the worktree's lib/ when the tests run) and binds
# it, as setuptools' does, where it has that __init__.py; an implicit namespace package (the later setup.py
# declares none) is left to the path. Without it, mplot3d of the setup commit meets the worktree's
# matplotlib (ImportError), or pkg_resources' DeprecationWarning fails collection (pytest.ini: warnings are errors).
NSPKG_PTH = (
    "import sys, types, os; p = next((os.path.join(e, 'mpl_toolkits') for e in sys.path if os.path.isdir("
    "os.path.join(e, 'mpl_toolkits'))), ''); p = os.path.isfile(os.path.join(p, '__init__.py')) and p; "
    "importlib = __import__('importlib.util'); "
    "__import__('importlib.machinery'); m = p and sys.modules.setdefault('mpl_toolkits', importlib.util."
    "module_from_spec(importlib.machinery.PathFinder.find_spec('mpl_toolkits', [os.path.dirname(p)]))); "
    "mp = (m or []) and m.__dict__.setdefault('__path__', []); (m and p not in mp) and mp.append(p)\n"
)
NSPKG_TO_FIRST_ON_PATH = (
    "../bin/python - <<'EOF'\n"
    "import glob, os\n"
    "for pth in glob.glob('../lib/python*/site-packages/*-nspkg.pth'):\n"
    "    if 'mpl_toolkits' in open(pth).read():\n"
    "        os.remove(pth)\n"
    "site = glob.glob('../lib/python*/site-packages')[0]\n"
    f"open(os.path.join(site, 'matplotlib-swelab-nspkg.pth'), 'w').write({NSPKG_PTH!r})\n"
    "EOF"
)
_MPL_BUILD = (
    "export CCACHE_READONLY=1 CCACHE_TEMPDIR=/tmp/ccache",  # the environment is read-only in the sandbox
    # the FreeType the environment's install built (mpl_freetype), linked where setupext looks: it is built already
    'for tree in "$VIRTUAL_ENV"/setup-src/build/freetype-*/; do [ -d "$tree" ] && mkdir -p build '
    '&& ln -sfn "${tree%/}" build/; done; true',
    'PYTHONPATH="$VIRTUAL_ENV/build-deps${PYTHONPATH:+:$PYTHONPATH}" python setup.py build_ext --inplace -j 2',
)
for _v in ("3.5", "3.6", "3.7"):
    RECIPES[("matplotlib/matplotlib", _v)] = Recipe(
        python="3.11", install="python -m pip install -e .", packages=_MPL_ENV_YML, pip_packages=_MPL_SPEC_PINS,
        test_cmd=TEST_PYTEST, log_parser="parse_log_matplotlib", pythonpath="lib", sibling_pins=True,
        pre_install=_MPL_PRE_INSTALL, post_install=(NSPKG_TO_FIRST_ON_PATH,), build_inplace=_MPL_BUILD,
        variables=_MPL_VARIABLES, identity_variables=(mpl_freetype.SOURCE_VARIABLE,),
        notes=("needs the Debian packages ccache, libfreetype-dev, libqhull-dev, pkg-config, libcairo2-dev (pycairo "
               "of the image pins); the official image also has imagemagick ffmpeg texlive* cm-super dvipng",))

# Versions of a supported repository that cannot be built here, with the reason (the others have recipes).
REFUSED_VERSIONS: dict[tuple[str, str], str] = {
    ("matplotlib/matplotlib", v): f"matplotlib/matplotlib {v}: no local recipe yet (4.1.0's 3.1-3.4 spec: Python 3.8, "
    "requirements.txt, the same in-place build as 3.5+, not transcribed or checked here); use the Docker harness"
    for v in ("3.1", "3.2", "3.3", "3.4")
}
REFUSED_VERSIONS.update({("astropy/astropy", v): _ASTROPY_HELPERS_REFUSED.format(version=v)
                         for v in ("0.1", "0.2", "0.3", "0.4", "1.1", "1.2", "1.3", "3.0", "3.1", "3.2")})


class RecipeError(RuntimeError):
    """No recipe for a row, or an environment that could not be built; the message names the instance."""


# The official image of each SWE-bench Verified instance, as swebench recorded it (its MIT-licensed repository,
# swebench/resources/swebench-og/, tag v4.1.0): Python and exact package pins, derived by
# tests/fidelity/derive_pins.py. Rows listed here get exactly those pins instead of the (repo, version) spec.
VERIFIED_PINS = Path(__file__).with_name("verified_pins.json")


@functools.cache
def _verified_pins() -> dict:
    """{instance_id: {"python", "pins", "version"?}} (the "_source" key is the table's provenance, not an entry)."""
    table = json.loads(VERIFIED_PINS.read_text()) if VERIFIED_PINS.exists() else {}
    return {key: value for key, value in table.items() if isinstance(value, dict)}


def official_environment(row: dict) -> dict | None:
    """{"python", "pins"} of the row's official image when swebench recorded it, else None; a row may also
    carry its own (`environment_pins`, `environment_python`). A row of a recipe with `sibling_pins` and no record
    of its own gets its Verified sibling's (sibling_environment), marked with "sibling": that instance's id."""
    if row.get("environment_pins"):
        return {"python": row.get("environment_python") or "", "pins": list(row["environment_pins"])}
    own = _verified_pins().get(row.get("instance_id", ""))
    if own is not None:
        return own
    recipe = RECIPES.get((row.get("repo", ""), str(row.get("version", ""))))
    if recipe is not None and recipe.sibling_pins:
        return sibling_environment(row["repo"], str(row["version"]))
    return None


@functools.cache
def sibling_environment(repo: str, version: str) -> dict | None:
    """The recorded image of a Verified instance of (repo, version), {"python", "pins", "sibling"}, else None.

    Siblings' records differ only where their images were built on other days (a December 2024 rebuild has newer
    pytest/certifi) or where a base commit's setup.py asked for other test dependencies; the choice is
    deterministic: the pin set most siblings share, ties to the lowest instance number. A row with no
    Verified sibling keeps the (repo, version) spec."""
    prefix = repo.replace("/", "__") + "-"
    siblings = sorted(((int(iid.rsplit("-", 1)[1]), iid, entry) for iid, entry in _verified_pins().items()
                       if iid.startswith(prefix) and entry.get("version") == version), key=lambda item: item[0])
    if not siblings:
        return None
    counts: dict[tuple, int] = {}
    for _, _, entry in siblings:
        key = (entry["python"], tuple(entry["pins"]))
        counts[key] = counts.get(key, 0) + 1
    _, iid, entry = max(siblings, key=lambda item: (counts[(item[2]["python"], tuple(item[2]["pins"]))], -item[0]))
    return {"python": entry["python"], "pins": list(entry["pins"]), "sibling": iid}


def recipe_for(row: dict) -> Recipe:
    recipe = RECIPES.get((row["repo"], str(row["version"])))
    if recipe is None:
        ok, reason = supported(row, check_python=False)
        raise RecipeError(f"{row['instance_id']}: {reason}")
    official = official_environment(row)
    if official and official["python"] and official["python"] != recipe.python:
        recipe = dataclasses.replace(recipe, python=official["python"])  # the image's Python wins
    return recipe


def find_python(version: str) -> str | None:
    """An interpreter for `version`: the $SWELAB_PYTHON_3_9-style override, else python3.9 on PATH, else the
    newest pyenv-installed 3.9.x, else one uv manages (`uv python find`); None when the machine has none.

    Every candidate is run once: a pyenv shim for a version that is installed but not selected sits on PATH
    and fails with "command not found", so being on PATH proves nothing."""
    override = os.environ.get(f"SWELAB_PYTHON_{version.replace('.', '_')}")
    if override:
        return override if _runs_as(override, version) else None
    for candidate in _candidates(version):
        if _runs_as(candidate, version):
            return candidate
    return None


def _candidates(version: str) -> list[str]:
    found = []
    on_path = shutil.which(f"python{version}")
    if on_path:
        found.append(on_path)
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    installed = sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"),
                       key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)])
    found.extend(str(path) for path in reversed(installed))
    if shutil.which("uv"):
        uv = subprocess.run(["uv", "python", "find", "--no-python-downloads", version],
                            capture_output=True, text=True)
        if uv.returncode == 0 and uv.stdout.strip():
            found.append(uv.stdout.strip())
    return found


def _runs_as(interpreter: str, version: str) -> bool:
    """True when `interpreter` starts and reports major.minor == version."""
    try:
        probe = subprocess.run([interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and probe.stdout.strip() == version


def supported(row: dict, check_python: bool = True) -> tuple[bool, str]:
    """(True, "") when the local backend can build this row's environment, else (False, why not)."""
    key = (row["repo"], str(row["version"]))
    if key in REFUSED_VERSIONS:
        return False, REFUSED_VERSIONS[key]
    if key not in RECIPES:
        repos = sorted({repo for repo, _ in RECIPES})
        if row["repo"] not in repos:
            return False, (
                f"no local recipe for {row['repo']} (local recipes: {', '.join(repos)}); "
                "use the Docker harness or a 5.x dataset row with its own eval_script"
            )
        versions = sorted(v for repo, v in RECIPES if repo == row["repo"])
        return False, f"no local recipe for {row['repo']} version {row['version']} (have {', '.join(versions)})"
    if check_python:
        # a compiler the recipe names (ccache's gcc wrapper, say) must exist, or every build fails obscurely
        for name, value in RECIPES[key].variables:
            if name in ("CC", "CXX") and value.startswith("/") and not os.path.exists(value):
                return False, (f"{row['repo']} {row['version']} builds with {value}, which this machine lacks "
                               "(Debian package ccache: `make system-deps` installs it)")
        python = recipe_for(row).python
        if find_python(python) is None:
            return False, (
                f"{row['repo']} {row['version']} needs Python {python}: no python{python} on PATH "
                f"(install it or set SWELAB_PYTHON_{python.replace('.', '_')})"
            )
    return True, ""


# ---------------------------------------------------------------- eval scripts


def modified_files(patch: str) -> list[str]:
    """Files the patch changes that exist before it (4.x get_modified_files)."""
    return [f.source_file[2:] for f in PatchSet(patch) if f.source_file.startswith("a/")]


def test_directives(row: dict) -> list[str]:
    """The test files the test patch touches, minus data files (4.x get_test_directives); for Django, as the
    module names its runtests.py takes (tests/a/b.py -> a.b)."""
    paths = re.findall(r"diff --git a/.* b/(.*)", row["test_patch"])
    paths = [p for p in paths if not any(p.endswith(ext) for ext in NON_TEST_EXTS)]
    if row["repo"] == "django/django":
        paths = [p.removesuffix(".py").removeprefix("tests/").replace("/", ".") for p in paths]
    return paths


def eval_script_for(row: dict, target: str = "local") -> str:
    """An eval script in the official shape for this row ("local": our backend; "docker": the image)."""
    if target not in ("local", "docker"):
        raise RecipeError(f"{row['instance_id']}: unknown eval script target {target!r}")
    recipe = recipe_for(row)
    base = row["base_commit"]
    test_files = modified_files(row["test_patch"])
    reset = f"git checkout {base} {' '.join(test_files)}" if test_files else 'echo "No test files to reset"'
    test_command = " ".join([recipe.test_cmd, *test_directives(row)])
    if target == "docker":
        lines = [
            "source /opt/miniconda3/bin/activate",
            "conda activate testbed",
            "cd /testbed",
            *recipe.eval_commands,
            "git config --global --add safe.directory /testbed",
            "cd /testbed",
            "git status",
            "git show",
            f"git -c core.fileMode=false diff {base}",
            "source /opt/miniconda3/bin/activate",
            "conda activate testbed",
            recipe.install,
        ]
    else:
        # The worktree is the working directory; the shared (repo, version) environment must not be
        # reinstalled per instance, so the worktree goes first on PYTHONPATH instead of `pip install`.
        where = '"$PWD"' if recipe.pythonpath == "." else f'"$PWD/{recipe.pythonpath}"'
        lines = [
            "git status",
            "git show --stat",
            f"git -c core.fileMode=false diff {base}",
            f"export PYTHONPATH={where}${{PYTHONPATH:+:$PYTHONPATH}}",
            # only the exports: the rest would change the machine (/etc/locale.gen); the environment carries
            # the locale instead (LOCPATH, see build_environment)
            *(command for command in recipe.eval_commands if command.startswith("export ")),
            *recipe.worktree_edits,
            *(f'cp "$VIRTUAL_ENV/setup-src/{path}" {path}' for path in recipe.generated),
            *recipe.build_inplace,
        ]
    lines += [
        reset,
        f"git apply -v - <<'{HEREDOC}'\n{row['test_patch']}\n{HEREDOC}",
        *(standins.service_lines(recipe.services) if target == "local" else []),
        f": '{START_TEST_OUTPUT}'",
        test_command,
        f": '{END_TEST_OUTPUT}'",
        reset,
    ]
    return "\n".join(["#!/bin/bash", "set -uxo pipefail", *lines]) + "\n"


def official_image(instance_id: str) -> str:
    """The published SWE-bench instance image name (swebench 3.x+ naming on Docker Hub)."""
    return f"swebench/sweb.eval.x86_64.{instance_id.replace('__', '_1776_')}:latest".lower()


def with_grading_fields(row: dict, target: str = "local") -> dict:
    """The row plus image, eval_script, log_parser, eval_type, so make_test_spec and get_eval_report work."""
    recipe = recipe_for(row)
    return {
        **row,
        "image": row.get("image") or official_image(row["instance_id"]),
        "eval_script": eval_script_for(row, target),
        "log_parser": recipe.log_parser,
        "eval_type": recipe.eval_type,
    }


# ---------------------------------------------------------------- environments


def read_requirements(mirror: Path, commit: str, repo: str) -> str:
    """The repo's requirements at the environment setup commit, read with `git show` (no network),
    `-r` includes expanded; `-e .`, comments and `.[test` lines dropped (4.x get_requirements_by_commit)."""

    def show(path: str) -> str | None:
        result = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=mirror, capture_output=True, text=True)
        return result.stdout if result.returncode == 0 else None

    def keep(line: str) -> bool:
        return bool(line.strip()) and not any(line.strip().startswith(x) for x in ("-e .", "#", ".[test"))

    for path in REQS_PATHS.get(repo, ("requirements.txt",)):
        text = show(path)
        if text is not None:
            break
    else:
        raise RecipeError(f"{repo}: no requirements file {REQS_PATHS.get(repo)} at commit {commit}")
    folder = os.path.dirname(path)
    included, own = [], []
    for line in text.splitlines():
        if line.strip().startswith("-r"):
            extra = show(os.path.normpath(os.path.join(folder, line.strip()[2:].strip())))
            included += [x for x in (extra or "").splitlines() if keep(x)]
        elif keep(line):
            own.append(line)
    return "\n".join(included + own) + "\n"


def environment_steps(row: dict, python: str, env: Path, requirements_file: Path | None, source: Path) -> list:
    """The commands that build a row's environment, in order: venv, (pip), wheel, packages, requirements,
    install, (locale).

    Each step is (argv, cwd). `source` is a checkout of the environment setup commit (the install command
    needs the project's metadata; the tests later import the worktree's code via PYTHONPATH).
    """
    recipe = recipe_for(row)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    steps: list[tuple[list[str], Path | None]] = [([python, "-m", "venv", str(env)], None)]
    steps.append(([*pip, "--upgrade", pip_spec(recipe)], None))
    steps.append(([*pip, "wheel"], None))
    if instance_pins(row):
        # the official image's own package set replaces the (repo, version) packages and requirements
        steps.append(([*pip, *instance_pins(row)], None))
    else:
        if recipe.packages:
            steps.append(([*pip, *recipe.packages], None))
        if recipe.pip_packages:
            steps.append(([*pip, *recipe.pip_packages], None))
        if recipe.requirements and requirements_file is not None:
            steps.append(([*pip, "-r", str(requirements_file)], None))
    workbench = shlex.quote(sys.executable)
    for command in recipe.pre_install:
        steps.append((["bash", "-c", command.replace(WORKBENCH_PYTHON, workbench)], source))
    install = recipe.install.split()
    if install[:3] == ["python", "-m", "pip"]:
        install = [str(env / "bin" / "python"), *install[1:]]
    steps.append((install, source))
    for command in recipe.post_install:
        steps.append((["bash", "-c", command.replace(WORKBENCH_PYTHON, workbench)], source))
    if recipe.locale and not locale_installed(recipe.locale):
        # built from the machine's locale sources into the environment, used through LOCPATH (no root needed)
        language, charmap = recipe.locale.split(".")
        steps.append((["mkdir", "-p", str(env / "locale")], None))
        steps.append((["localedef", "-i", language, "-f", charmap, str(env / "locale" / recipe.locale)], None))
    return steps


def pip_spec(recipe: Recipe) -> str:
    """The pip an environment gets first (PIP_FOR_PYTHON, else PIP_DEFAULT)."""
    return PIP_FOR_PYTHON.get(recipe.python, PIP_DEFAULT)


def install_commit(row: dict) -> str | None:
    """The base commit when the row's recipe installs the project per base commit (install_at_base), else None."""
    recipe = RECIPES.get((row["repo"], str(row["version"])))
    return row["base_commit"] if recipe is not None and recipe.install_at_base else None


def instance_pins(row: dict) -> tuple[str, ...]:
    """Exact pip pins for this one instance (its official image's, or a Verified sibling's where its recipe takes
    them), () when it has none."""
    official = official_environment(row)
    return tuple(official["pins"]) if official else ()


def image_pins_without_resolver(row: dict, argv: list[str], result: Any) -> list[str] | None:
    """The image-pins step again with `--no-deps`, when pip's resolver refused the pins, else None.

    A Verified image's pins are its whole environment (a conda export): the image holds exactly those versions,
    whatever the packages' PyPI metadata says of each other (xarray 0.12's cf-units asks for another antlr
    runtime than conda-forge built it with: ResolutionImpossible). Installed as they are, they are the image."""
    pins = instance_pins(row)
    output = (getattr(result, "stdout", "") or "") + (getattr(result, "stderr", "") or "")
    if result.returncode == 0 or not pins or "--no-deps" in argv or tuple(argv[-len(pins):]) != pins:
        return None
    if "ResolutionImpossible" not in output:
        return None
    return [*argv[: len(argv) - len(pins)], "--no-deps", *pins]


def failure_line(output: str) -> str:
    """The line that says why a step failed: pip's last `ERROR:` line, else the last line; ANSI-free."""
    lines = [line.strip() for line in ANSI_ESCAPE.sub("", output).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") or "Error" in line.split(":")[0]]
    return (errors or lines or [""])[-1][:300]


def build_log_path(env: Path) -> Path:
    """Where an environment's build log is kept: beside it, so it survives the failed build's removal."""
    return Path(env).with_name(Path(env).name + ".build.log")


def scm_version(mirror: Path, commit: str) -> str | None:
    """What setuptools_scm would say in a clone at `commit` (`git describe`: tag.devN+gSHA), for a setup checkout
    made with `git archive`, which has no .git to ask; None when no tag is reachable (setuptools_scm's own
    fallback then applies)."""
    described = subprocess.run(["git", "describe", "--tags", "--long", commit], cwd=mirror, capture_output=True,
                               text=True)
    match = re.fullmatch(r"v?(.+)-(\d+)-g([0-9a-f]+)", described.stdout.strip())
    if described.returncode != 0 or not match:
        return None
    tag, distance, sha = match.groups()
    # a development tag ("v5.1.dev", astropy's; "1.0.dev0") counts on from its release, as setuptools_scm does
    return tag if distance == "0" else f"{re.sub(r'[.]dev[0-9]*$', '', tag)}.dev{distance}+g{sha}"


def locale_installed(name: str) -> bool:
    """True when the machine has the locale (`locale -a` spells en_US.UTF-8 as en_US.utf8)."""
    listed = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.split()
    wanted = name.lower().replace("utf-8", "utf8")
    return any(item.lower().replace("utf-8", "utf8") == wanted for item in listed)


Runner = Callable[..., Any]


def build_environment(
    instance: dict, path: Path, ensure_commit: Callable[[str, str], Path], runner: Runner = subprocess.run
) -> None:
    """Build the (repo, version) environment at `path` (trusted set-up: network allowed). `ensure_commit(repo,
    commit)` returns a mirror holding the commit."""
    ok, reason = supported(instance)
    if not ok:
        raise RecipeError(f"{instance['instance_id']}: {reason}")
    recipe = recipe_for(instance)
    python = find_python(recipe.python)
    commit = instance.get("environment_setup_commit") or instance["base_commit"]
    mirror = ensure_commit(instance["repo"], commit)
    source_commit = instance["base_commit"] if recipe.install_at_base else commit
    ensure_commit(instance["repo"], source_commit)
    path = Path(path)
    # The install command needs the project at the setup commit; it stays inside the environment so an
    # editable install never points at a deleted folder (the tests import the worktree via PYTHONPATH).
    source = path / "setup-src"
    source.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", source_commit], cwd=mirror, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    log_path = build_log_path(path)
    build_env = dict(os.environ)
    build_env.update({name: value.replace("{env}", str(path)) for name, value in recipe.variables})
    version = scm_version(mirror, source_commit)
    if version:
        build_env["SETUPTOOLS_SCM_PRETEND_VERSION"] = version
    with tempfile.TemporaryDirectory(prefix="swelab-reqs-") as tmp, open(log_path, "w", encoding="utf-8") as log:
        requirements = None
        if recipe.requirements and not instance_pins(instance):
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text(read_requirements(mirror, commit, instance["repo"]))
        for argv, cwd in environment_steps(instance, python, path, requirements, source):
            result = runner(argv, cwd=cwd, capture_output=True, text=True, env=build_env)
            log.write(f"$ {' '.join(argv)}  (cwd {cwd or '.'})\n{result.stdout or ''}{result.stderr or ''}"
                      f"exit {result.returncode}\n\n")
            retry = image_pins_without_resolver(instance, argv, result)
            if retry:
                argv, result = retry, runner(retry, cwd=cwd, capture_output=True, text=True, env=build_env)
                log.write(f"$ {' '.join(argv)}  (the image's pins as they are: pip's resolver refused them)\n"
                          f"{result.stdout or ''}{result.stderr or ''}exit {result.returncode}\n\n")
            if result.returncode != 0:
                why = failure_line((result.stdout or "") + "\n" + (result.stderr or ""))
                raise RecipeError(f"{instance['instance_id']}: environment step failed: {' '.join(argv[-3:])}: "
                                  f"{why} (log: {log_path})")
    write_variables(recipe, path)


def write_variables(recipe: Recipe, env: Path) -> None:
    """The variables every command in the environment gets (swelab-env.json, read by the workspace): the recipe's
    own, and LOCPATH when a locale was built into it."""
    variables = {name: value.replace("{env}", str(env)) for name, value in recipe.variables}
    if (env / "locale").is_dir():
        variables["LOCPATH"] = str(env / "locale")
    if variables:
        (env / "swelab-env.json").write_text(json.dumps(variables))
