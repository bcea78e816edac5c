"""scikit-learn/scikit-learn recipes (swelab.workspace.recipes): swebench 4.1.0's SPECS_SKLEARN transcribed, conda's
packages pinned to what the official images resolved, the Cython extensions compiled in the worktree after the
patch, through a compiler cache the environment fills and the sandbox only reads. No network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from swebench.harness.log_parsers import PARSER_REGISTRY

from swelab.workspace import recipes

sys.path.insert(0, str(Path(__file__).parent))  # tests/, for near_base_check
import near_base_check  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "swebench_lite_sample.jsonl"
REPO = "scikit-learn/scikit-learn"
# swebench v4.1.0 harness/constants/python.py, SPECS_SKLEARN (verbatim)
SPEC_INSTALL = "python -m pip install -v --no-use-pep517 --no-build-isolation -e ."
SPEC_PIP_OLD = ("cython", "numpy==1.19.2", "setuptools", "scipy==1.5.2")  # 0.20-0.22
SPEC_PIP_1_3 = ("cython", "setuptools", "numpy", "scipy")
# its conda packages' own pins were numpy==1.19.2 scipy==1.5.2 cython==3.0.10; the first two have no cp39 wheel
SPEC_PINNED_1_3 = ("numpy==1.19.3", "scipy==1.5.4", "cython==3.0.10")


def lite(instance_id: str) -> dict:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    return next(row for row in rows if row["instance_id"] == instance_id)


def test_the_recipes_are_the_4_1_0_specs():
    for version in ("0.20", "0.21", "0.22", "1.3"):
        recipe = recipes.RECIPES[(REPO, version)]
        assert recipe.python == ("3.9" if version == "1.3" else "3.6"), version
        assert recipe.install == SPEC_INSTALL
        assert recipe.test_cmd == "pytest -rA"  # 4.1.0's TEST_PYTEST (its second, effective definition)
        assert recipe.pip_packages == (SPEC_PIP_1_3 if version == "1.3" else SPEC_PIP_OLD)
        names = {pin.split("==")[0] for pin in recipe.packages}
        assert {"numpy", "scipy", "cython", "pytest", "pandas", "matplotlib"} <= names  # conda's package list
    assert set(SPEC_PINNED_1_3) <= set(recipes.RECIPES[(REPO, "1.3")].packages)
    # 4.1.0 maps scikit-learn to parse_log_scikit = parse_log_pytest_v2; the installed swebench knows the name
    assert recipes.RECIPES[(REPO, "0.22")].log_parser == "parse_log_scikit"
    assert PARSER_REGISTRY["parse_log_scikit"] is PARSER_REGISTRY["parse_log_pytest_v2"]


def test_conda_packages_are_pinned_as_the_official_images_resolved_them():
    """Every pin of the 0.20-0.22 recipe is the version each Verified image of those versions holds (the images
    agree), Cython 0.29 above all: these .pyx files predate Cython 3."""
    verified = json.loads(recipes.VERIFIED_PINS.read_text())
    images = [entry["pins"] for iid, entry in verified.items() if iid.startswith("scikit-learn__") and
              entry["python"] == "3.6"]
    assert images
    for version in ("0.20", "0.21", "0.22"):
        for pin in recipes.RECIPES[(REPO, version)].packages:
            assert all(pin.lower() in [p.lower() for p in image] for image in images), pin
    assert "cython==0.29.24" in recipes.RECIPES[(REPO, "0.21")].packages


def test_the_eval_script_compiles_in_the_worktree_after_the_patch_and_before_the_test_patch():
    row = lite("scikit-learn__scikit-learn-13584")
    assert recipes.supported(row, check_python=False) == (True, "")
    script = recipes.eval_script_for(row)
    build = script.index("python setup.py build_ext --inplace -j 2")
    readonly = script.index("export CCACHE_READONLY=1")
    reuse = script.index("python - <<'SKLEARN_CYTHON'")
    assert script.index(f"git -c core.fileMode=false diff {row['base_commit']}") < readonly < reuse < build
    assert script.index("export PYTHONPATH=") < build < script.index("git apply -v - <<")
    assert build < script.index(f"git checkout {row['base_commit']} sklearn/utils/tests/test_pprint.py")
    assert "pytest -rA sklearn/utils/tests/test_pprint.py" in script
    docker = recipes.eval_script_for(row, target="docker")  # the official image reinstalls instead
    assert "build_ext" not in docker and "CCACHE" not in docker and SPEC_INSTALL in docker


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize("change", [None, "edit", "add"])
def test_cython_output_is_reused_only_when_every_cython_source_is_the_installs(tmp_path, change):
    """The environment's setup-src holds the sources its install cythonized and what that made; the worktree gets
    those .c/.cpp (and Tempita's .pyx) only when its Cython sources are the same, byte for byte."""
    env, worktree = tmp_path / "env", tmp_path / "worktree"
    sources = {"sklearn/svm/libsvm.pyx": "cdef int a\n", "sklearn/tree/_tree.pxd": "cdef int b\n",
               "sklearn/utils/seq_dataset.pyx.tp": "{{py: x}}\n", "sklearn/svm/src/svm.cpp": "int c;\n"}
    _tree(env / "setup-src", {**sources, "sklearn/svm/libsvm.c": "/* made */", "sklearn/utils/seq_dataset.pyx": "x",
                              "sklearn/utils/seq_dataset.c": "/* made */", "build/temp/x.o": ""})
    _tree(worktree, sources)
    if change == "edit":
        (worktree / "sklearn/tree/_tree.pxd").write_text("cdef int b2\n")  # as a patch to a .pxd would
    elif change == "add":
        (worktree / "sklearn/new.pyx").write_text("")
    build = recipes.RECIPES[(REPO, "0.22")].build_inplace
    reuse = next(command for command in build if "SKLEARN_CYTHON" in command)
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"  # a `python`, as the environment's bin gives the script
    subprocess.run(["bash", "-c", reuse], cwd=worktree, env={"VIRTUAL_ENV": str(env), "PATH": path}, check=True)
    copied = {"sklearn/svm/libsvm.c", "sklearn/utils/seq_dataset.pyx", "sklearn/utils/seq_dataset.c"}
    present = {str(p.relative_to(worktree)) for p in worktree.rglob("*") if p.is_file()}
    if change is None:
        assert copied <= present and "build/temp/x.o" not in present
        assert (worktree / "sklearn/svm/libsvm.c").read_text() == "/* made */"
    else:
        assert not copied & present


def test_the_cache_lives_in_the_environment_and_the_compilers_are_single_words(tmp_path):
    recipe = recipes.RECIPES[(REPO, "0.22")]
    recipes.write_variables(recipe, tmp_path)
    variables = json.loads((tmp_path / "swelab-env.json").read_text())
    assert variables["CCACHE_DIR"] == f"{tmp_path}/ccache"
    # numpy.distutils links C++ with CXX's first word: "ccache g++" would link with "ccache" + gcc's flags
    assert " " not in variables["CC"] and " " not in variables["CXX"]
    assert variables["CXX"].endswith("g++")


@pytest.mark.skipif(not Path("/usr/lib/ccache/gcc").exists() or not shutil.which("bwrap"),
                    reason="needs Debian's ccache and bubblewrap")
def test_a_second_folder_compiles_from_the_cache_read_only(tmp_path):
    """What the worktree's build relies on: a cache filled from one folder serves the same source compiled in
    another (-g, as Python's flags have it) while mounted read-only."""
    cache, first, second = tmp_path / "cache", tmp_path / "setup-src", tmp_path / "worktree"
    for folder in (first, second):
        folder.mkdir()
        (folder / "x.c").write_text("int answer(void) { return 42; }\n")
    env = {"PATH": "/usr/bin:/bin", "CCACHE_DIR": str(cache), "CCACHE_NOHASHDIR": "1"}
    subprocess.run(["/usr/lib/ccache/gcc", "-g", "-O2", "-c", "x.c", "-o", "x.o"], cwd=first, env=env, check=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "ccache.log"
    # everything read-only (the cache too) but the second folder and the log's
    sandbox = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", str(second),
               str(second), "--bind", str(logs), str(logs), "--chdir", str(second)]
    env.update(CCACHE_READONLY="1", CCACHE_TEMPDIR=str(second / "tmp"), CCACHE_LOGFILE=str(log))
    subprocess.run([*sandbox, "/usr/lib/ccache/gcc", "-g", "-O2", "-c", "x.c", "-o", "x.o"], env=env, check=True)
    assert (second / "x.o").exists()
    assert "Result: direct_cache_hit" in log.read_text()


def test_the_source_release_stand_in_drops_what_cython_generated(tmp_path):
    """A scikit-learn sdist ships the .c/.cpp Cython made (and Tempita's .pyx/.pxd); its git tree does not."""
    files = {
        "sklearn/svm/libsvm.pyx": "", "sklearn/svm/libsvm.c": "", "sklearn/utils/_fast_dict.pyx": "",
        "sklearn/utils/_fast_dict.cpp": "", "sklearn/utils/seq_dataset.pyx.tp": "",
        "sklearn/utils/seq_dataset.pyx": "", "sklearn/utils/seq_dataset.pxd.tp": "",
        "sklearn/utils/seq_dataset.pxd": "", "sklearn/utils/seq_dataset.c": "",
        "sklearn/svm/src/libsvm/svm.cpp": "",  # a real source: no .pyx of its name
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    near_base_check.drop_cython_outputs(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["sklearn/svm/libsvm.pyx", "sklearn/svm/src/libsvm/svm.cpp", "sklearn/utils/_fast_dict.pyx",
                    "sklearn/utils/seq_dataset.pxd.tp", "sklearn/utils/seq_dataset.pyx.tp"]
