"""The committed notebooks: no outputs (`make lint` runs tests/check_notebooks_clean.py) and no logic of their own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from check_notebooks_clean import main, problems

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHECK = Path(__file__).with_name("check_notebooks_clean.py")
# Statements that make a cell hold logic; a notebook calls the library and displays what it returns.
LOGIC = (ast.For, ast.While, ast.If, ast.With, ast.Try, ast.FunctionDef, ast.ClassDef, ast.ListComp, ast.DictComp,
         ast.SetComp, ast.GeneratorExp)


def test_the_committed_notebooks_are_clean():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [
        "01_select.ipynb", "02_generate.ipynb", "03_evaluate.ipynb", "04_analyze.ipynb"]
    assert [line for path in sorted(NOTEBOOKS.glob("*.ipynb")) for line in problems(path)] == []
    assert main([str(NOTEBOOKS)]) == 0


def test_a_notebook_with_outputs_fails_the_check(tmp_path, capsys):
    notebook = nbformat.read(NOTEBOOKS / "04_analyze.ipynb", as_version=4)
    code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    notebook.cells[code[1]].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    notebook.cells[code[2]].execution_count = 3
    nbformat.write(notebook, tmp_path / "dirty.ipynb")
    nbformat.write(nbformat.read(NOTEBOOKS / "03_evaluate.ipynb", as_version=4), tmp_path / "clean.ipynb")
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"dirty.ipynb: cell {code[1]} has 1 output(s)" in err
    assert f"dirty.ipynb: cell {code[2]} has execution count 3" in err
    assert "clean.ipynb" not in err
    done = subprocess.run([sys.executable, str(CHECK), str(tmp_path / "dirty.ipynb")], capture_output=True, text=True)
    assert done.returncode == 1 and "dirty.ipynb" in done.stderr          # what `make lint` runs


def test_saved_widget_state_fails_the_check(tmp_path):
    notebook = nbformat.read(NOTEBOOKS / "02_generate.ipynb", as_version=4)
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(notebook, tmp_path / "widgets.ipynb")
    assert problems(tmp_path / "widgets.ipynb") == [f"{tmp_path / 'widgets.ipynb'}: notebook metadata holds saved "
                                                    "widget state"]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_hold_no_logic(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "params_file" in tagged[0].source
    found = [f"cell {i}: {type(node).__name__} at line {node.lineno}"
             for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             for node in ast.walk(ast.parse(cell.source)) if isinstance(node, LOGIC)]
    assert found == [], f"{path.name}: move this logic into lib/swelab (with a test): {found}"
