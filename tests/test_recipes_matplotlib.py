"""matplotlib/matplotlib recipes (swelab.workspace.recipes): swebench 4.1.0's SPECS_MATPLOTLIB 3.5-3.7 transcribed,
environment.yml's packages from PyPI, the C++ extensions compiled in the worktree's lib/ after the patch through a
compiler cache the environment fills and the sandbox only reads. No network."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from swebench.harness.log_parsers import PARSER_REGISTRY

from swelab.workspace import recipes

REPO = "matplotlib/matplotlib"
# swebench v4.1.0 harness/constants/python.py, SPECS_MATPLOTLIB["3.5"-"3.9"]["pip_packages"] (verbatim)
SPEC_PIP = (
    "contourpy==1.1.0", "cycler==0.11.0", "fonttools==4.42.1", "ghostscript", "kiwisolver==1.4.5", "numpy==1.25.2",
    "packaging==23.1", "pillow==10.0.0", "pikepdf", "pyparsing==3.0.9", "python-dateutil==2.8.2", "six==1.16.0",
    "setuptools==68.1.2", "setuptools-scm==7.1.0", "typing-extensions==4.7.1",
)
# Lite's matplotlib__matplotlib-23299 (3.5), its test patch cut to one hunk
TEST_PATCH = "\n".join([
    "diff --git a/lib/matplotlib/tests/test_rcparams.py b/lib/matplotlib/tests/test_rcparams.py",
    "--- a/lib/matplotlib/tests/test_rcparams.py",
    "+++ b/lib/matplotlib/tests/test_rcparams.py",
    "@@ -496,6 +496,9 @@ def test_keymaps():",
    "         assert isinstance(mpl.rcParams[k], list)",
    " ",
    " ",
    "+def test_no_backend_reset_rccontext():",
    "+    assert mpl.rcParams['backend'] != 'module://aardvark'",
    "+",
    " def test_rcparams_reset_after_fail():",
    "     # There was previously a bug that meant that if rc_context failed and",
    "     # raised an exception due to issues in the supplied rc parameters, the",
    "",
])
ROW = {
    "instance_id": "matplotlib__matplotlib-23299", "repo": REPO, "version": "3.5",
    "base_commit": "3eadeacc06c9f2ddcdac6ae39819faa9fbee9e39",
    "environment_setup_commit": "de98877e3dc45de8dd441d008f23d88738dc015d",
    "patch": "", "test_patch": TEST_PATCH,
    "FAIL_TO_PASS": json.dumps(["lib/matplotlib/tests/test_rcparams.py::test_no_backend_reset_rccontext"]),
    "PASS_TO_PASS": "[]",
}


def test_the_recipes_are_the_4_1_0_specs():
    for version in ("3.5", "3.6", "3.7"):
        recipe = recipes.RECIPES[(REPO, version)]
        assert recipe.python == "3.11"
        assert recipe.install == "python -m pip install -e ."
        assert recipe.test_cmd == "pytest -rA"
        assert recipe.pip_packages == SPEC_PIP
        assert recipe.pythonpath == "lib"  # package_dir={"": "lib"}: the tests import the worktree's lib/
        names = {pin.split("==")[0] for pin in recipe.packages}
        assert {"pytest", "pytest-rerunfailures", "pytest-timeout", "certifi", "pybind11"} <= names
    # 4.1.0's MAP_REPO_TO_PARSER maps matplotlib to parse_log_matplotlib; the installed swebench knows the name
    assert recipes.RECIPES[(REPO, "3.6")].log_parser == "parse_log_matplotlib"
    assert "parse_log_matplotlib" in PARSER_REGISTRY
    # 3.3 (Python 3.8, requirements.txt) has no recipe: no source release takes its only Lite row's patches
    assert not recipes.supported({**ROW, "version": "3.3"}, check_python=False)[0]


def test_environment_yml_packages_are_pinned_as_the_verified_images_had_them():
    verified = json.loads(recipes.VERIFIED_PINS.read_text())
    image = {pin.lower() for pin in verified["matplotlib__matplotlib-25311"]["pins"]}  # a 3.7 image
    for pin in recipes.RECIPES[(REPO, "3.7")].packages:
        assert pin.lower() in image, pin


def test_the_eval_script_compiles_in_the_worktree_after_the_patch_and_before_the_test_patch():
    assert recipes.supported(ROW, check_python=False) == (True, "")
    script = recipes.eval_script_for(ROW)
    build = script.index("python setup.py build_ext --inplace")
    readonly = script.index("export CCACHE_READONLY=1")
    assert script.index(f"git -c core.fileMode=false diff {ROW['base_commit']}") < readonly < build
    assert script.index('export PYTHONPATH="$PWD/lib"') < build < script.index("git apply -v - <<")
    assert build < script.index(f"git checkout {ROW['base_commit']} lib/matplotlib/tests/test_rcparams.py")
    assert "pytest -rA lib/matplotlib/tests/test_rcparams.py" in script
    docker = recipes.eval_script_for(ROW, target="docker")  # the official image reinstalls instead
    assert "build_ext" not in docker and "CCACHE" not in docker and "python -m pip install -e ." in docker


def test_the_build_needs_no_network(tmp_path):
    """FreeType's source is put under build/ before the install (swelab.workspace.mpl_freetype, tested in
    test_mpl_freetype.py) and qhull comes from the machine (setupext would download them), the compiler cache
    and setup.py's setup_requires from the environment folder."""
    recipe = recipes.RECIPES[(REPO, "3.7")]
    recipes.write_variables(recipe, tmp_path)
    variables = json.loads((tmp_path / "swelab-env.json").read_text())
    assert variables["MPLSETUPCFG"] == f"{tmp_path}/mplsetup.cfg"
    assert variables["CCACHE_DIR"] == f"{tmp_path}/ccache"
    assert variables["CC"].split() == ["/usr/lib/ccache/gcc"]
    written = next(command for command in recipe.pre_install if "mplsetup.cfg" in command)
    assert "-m swelab.workspace.mpl_freetype ../mplsetup.cfg" in written
    assert any("--target ../build-deps" in command for command in recipe.pre_install)
    assert any("$VIRTUAL_ENV/build-deps" in command for command in recipe.build_inplace)


@pytest.mark.parametrize("built", [True, False])
def test_the_in_place_build_links_the_environments_freetype_tree(tmp_path, built):
    """setupext skips its download and its FreeType build when build/freetype-<v>/ holds the built library: the
    worktree links the environment's (read-only in the sandbox); without one (system FreeType) nothing is made."""
    env = tmp_path / "env"
    tree = env / "setup-src" / "build" / "freetype-2.6.1"
    if built:
        (tree / "objs" / ".libs").mkdir(parents=True)
        (tree / "objs" / ".libs" / "libfreetype.a").write_bytes(b"!<arch>\n")
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    link = next(command for command in recipes.RECIPES[(REPO, "3.6")].build_inplace if "freetype-*" in command)
    assert not any("freetype" in c for c in recipes.RECIPES[("scikit-learn/scikit-learn", "0.22")].build_inplace)
    done = subprocess.run(["bash", "-ec", link], cwd=worktree, env={**os.environ, "VIRTUAL_ENV": str(env)})
    assert done.returncode == 0
    if built:
        assert (worktree / "build" / "freetype-2.6.1").resolve() == tree.resolve()
        assert (worktree / "build" / "freetype-2.6.1" / "objs" / ".libs" / "libfreetype.a").is_file()
    else:
        assert not (worktree / "build").exists()


def test_a_freetype_source_is_part_of_the_environment_identity(monkeypatch):
    """Setting SWELAB_FREETYPE_SOURCE changes what a matplotlib environment holds, so it rebuilds; a recipe that
    takes no such source keeps its environment."""
    from swelab.workspace.environments import environment_identity
    monkeypatch.delenv("SWELAB_FREETYPE_SOURCE", raising=False)
    django = {"instance_id": "django__django-11099", "repo": "django/django", "version": "3.0",
              "environment_setup_commit": "419a78300f7cd27611196e1e464d50fd0385ff27", "base_commit": "x"}
    before, django_before = environment_identity(ROW), environment_identity(django)
    monkeypatch.setenv("SWELAB_FREETYPE_SOURCE", "/srv/freetype-2.6.1.tar.gz")
    assert environment_identity(ROW) != before
    assert environment_identity(django) == django_before


def test_environment_steps_run_pre_install_in_the_setup_checkout_before_the_install(tmp_path):
    steps = recipes.environment_steps(ROW, "python3.11", tmp_path / "env", None, tmp_path / "src")
    commands = [" ".join(argv) for argv, _ in steps]
    config = next(i for i, c in enumerate(commands) if "mplsetup.cfg" in c)
    install = next(i for i, c in enumerate(commands) if c.endswith("pip install -e ."))
    assert config < install and steps[config][1] == tmp_path / "src"
    # the FreeType step runs swelab's own code: the workbench's interpreter is put in when the steps are made,
    # and the recipe (so its environments' identity) names none, wherever the workbench is installed
    assert steps[config][0][2].startswith(f"{sys.executable} -m swelab.workspace.mpl_freetype ")
    assert sys.executable not in repr(recipes.RECIPES[(REPO, "3.5")])
    rebind = next(i for i, c in enumerate(commands) if "matplotlib-swelab-nspkg.pth" in c)
    assert rebind > install and steps[rebind][1] == tmp_path / "src"  # post_install: after the install wrote its .pth


def _venv_with_setup_checkout(tmp_path, setup_init: bool, setuptools_nspkg: bool):
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python*/site-packages"))
    setup_lib = env / "setup-src" / "lib"
    _toolkits(setup_lib, "setup", setup_init)
    if setuptools_nspkg:  # the line setuptools 68 writes for namespace_packages=["mpl_toolkits"] (3.5 to early 3.7)
        (site / "matplotlib-3.6.0.dev1-nspkg.pth").write_text(
            f"import sys, types, os;p = os.path.join({str(setup_lib)!r}, *('mpl_toolkits',));importlib = "
            "__import__('importlib.util');__import__('importlib.machinery');m = sys.modules.setdefault("
            "'mpl_toolkits', importlib.util.module_from_spec(importlib.machinery.PathFinder.find_spec("
            "'mpl_toolkits', [os.path.dirname(p)])));m = m or sys.modules.setdefault('mpl_toolkits', types."
            "ModuleType('mpl_toolkits'));mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) "
            "and mp.append(p)\n")
    (site / "__editable__.matplotlib-3.6.0.dev1.pth").write_text(f"{setup_lib}\n")
    for command in recipes.RECIPES[("matplotlib/matplotlib", "3.6")].post_install:
        subprocess.run(["bash", "-c", command], cwd=env / "setup-src", check=True)
    assert not list(site.glob("*3.6.0.dev1-nspkg.pth"))
    return env


def _toolkits(lib, origin: str, with_init: bool) -> None:
    (lib / "mpl_toolkits" / "mplot3d").mkdir(parents=True)
    (lib / "mpl_toolkits" / "mplot3d" / "__init__.py").write_text(f"ORIGIN = {origin!r}\n")
    if with_init:  # pkg_resources' declare_namespace warns: under matplotlib's pytest.ini that fails collection
        (lib / "mpl_toolkits" / "__init__.py").write_text("raise ImportError('a bound namespace never runs this')\n")


def _origin(env, pythonpath=None) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        environ["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(env / "bin" / "python"), "-c", "import mpl_toolkits.mplot3d as m; print(m.ORIGIN)"],
                          env=environ, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("setup_is_old_style", [True, False])
def test_mpl_toolkits_binds_to_the_worktree_the_tests_import_not_the_setup_checkout(tmp_path, setup_is_old_style):
    """The official eval reinstalls at the base commit, so setuptools' namespace .pth binds mpl_toolkits to the
    tested checkout without running its __init__.py. After post_install the binding goes to the first sys.path
    entry whose mpl_toolkits has an __init__.py: the worktree's lib/ when the tests run, whether the setup commit
    was old-style (3.5/3.6: its own .pth, replaced) or an implicit namespace (a 3.7 setup commit: none)."""
    env = _venv_with_setup_checkout(tmp_path, setup_init=setup_is_old_style, setuptools_nspkg=setup_is_old_style)
    old_style, implicit = tmp_path / "old" / "lib", tmp_path / "implicit" / "lib"
    _toolkits(old_style, "worktree", with_init=True)
    _toolkits(implicit, "implicit worktree", with_init=False)
    assert _origin(env, old_style) == "worktree"  # bound, its __init__.py not run (it raises)
    if not setup_is_old_style:  # (a base commit is never newer than its version's setup commit)
        assert _origin(env, implicit) == "implicit worktree"  # nothing bound there: the path decides
