"""matplotlib/matplotlib recipes (swelab.workspace.recipes): swebench 4.1.0's SPECS_MATPLOTLIB 3.5-3.7 transcribed,
environment.yml's packages from PyPI, the C++ extensions compiled in the worktree's lib/ after the patch through a
compiler cache the environment fills and the sandbox only reads. No network."""

from __future__ import annotations

import json

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
    """FreeType and qhull come from the machine (setupext would download them: not reachable), the compiler cache
    and setup.py's setup_requires from the environment folder."""
    recipe = recipes.RECIPES[(REPO, "3.7")]
    recipes.write_variables(recipe, tmp_path)
    variables = json.loads((tmp_path / "swelab-env.json").read_text())
    assert variables["MPLSETUPCFG"] == f"{tmp_path}/mplsetup.cfg"
    assert variables["CCACHE_DIR"] == f"{tmp_path}/ccache"
    assert variables["CC"].split() == ["/usr/lib/ccache/gcc"]
    written = next(command for command in recipe.pre_install if "mplsetup.cfg" in command)
    assert "system_freetype = True" in written and "system_qhull = True" in written
    assert any("--target ../build-deps" in command for command in recipe.pre_install)
    assert any("$VIRTUAL_ENV/build-deps" in command for command in recipe.build_inplace)


def test_environment_steps_run_pre_install_in_the_setup_checkout_before_the_install(tmp_path):
    steps = recipes.environment_steps(ROW, "python3.11", tmp_path / "env", None, tmp_path / "src")
    commands = [" ".join(argv) for argv, _ in steps]
    config = next(i for i, c in enumerate(commands) if "mplsetup.cfg" in c)
    install = next(i for i, c in enumerate(commands) if c.endswith("pip install -e ."))
    assert config < install and steps[config][1] == tmp_path / "src"
