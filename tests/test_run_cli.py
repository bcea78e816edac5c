"""`swelab run` end to end: the four notebooks through papermill, the report, the leaderboard, and no secret
in any file of the run — executed notebooks included."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer, ok
from scaffold import write_params

from swelab import cli, minibench, paths
from swelab.cli import main

SECRET = "sk-test-0123456789-do-not-leak"
TASK = "minibench__textkit-1"


def make_project(tmp_path: Path, base_url: str) -> Path:
    """A project folder with the real notebooks and a params file using a hosted-provider profile."""
    return write_params(
        tmp_path,
        f"name: e2e\ndataset: minibench\ninstances: [{TASK}, minibench__unitkit-1]\nattempts: 2\n"
        "models:\n"
        "  - {name: gold, kind: gold}\n"
        "  - {name: empty, kind: empty}\n"
        f"  - {{name: hosted/model, kind: patch, provider: chutes, model_id: hosted/model, base_url: '{base_url}'}}\n",
        notebooks=True,
    )


def test_swelab_run_executes_the_notebooks_and_leaks_no_key(tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("CHUTES_API_KEY", SECRET)
    task = next(t for t in minibench.load_tasks() if t["instance_id"] == TASK)
    # The hosted model fixes one task on its first attempt, then answers with prose (malformed).
    replies = [ok(f"```diff\n{task['patch']}```")]
    with FakeOpenAIServer(replies, default=ok(f"I cannot help; my key might be {SECRET[:6]}")) as server:
        params_file = make_project(tmp_path, server.base_url)
        assert main(["run", str(params_file)]) == 0
        sent = server.chat_requests()
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "outputs").iterdir())
    assert sent and all(r["headers"].get("authorization") == f"Bearer {SECRET}" for r in sent)
    for stage in ("01_select", "02_generate", "03_evaluate", "04_analyze"):
        assert (run_dir / "notebooks" / f"{stage}.ipynb").exists()
    assert (run_dir / "notebooks" / "04_analyze.html").exists()
    assert (run_dir / "report.html").stat().st_size > 100_000  # plotly.js embedded once
    assert "gold" in out and "hosted/model" in out
    board = (run_dir / "leaderboard.csv").read_text()
    gold = next(line for line in board.splitlines() if line.startswith("gold,"))
    empty = next(line for line in board.splitlines() if line.startswith("empty,"))
    assert ",1.0," in gold and ",0.0," in empty
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []


# ---------------------------------------------------------------- parameters, project root, artifacts from the CLI


def _notebook(path: Path, parameters: str) -> Path:
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                 "display_name": "Python 3"}})
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell, nbformat.v4.new_code_cell("print(params_file)")]
    nbformat.write(notebook, path)
    return path


def test_each_notebook_gets_only_the_parameters_it_declares(tmp_path):
    offered = {"params_file": "/x/p.yaml", "force": True, "dataset_path": "/data/lite.jsonl"}
    only = _notebook(tmp_path / "only.ipynb", 'params_file = "params/demo.yaml"\n')
    assert cli.notebook_parameters(only, offered) == {"params_file": "/x/p.yaml"}
    notebooks = paths.notebooks_dir()
    given = {stage: cli.notebook_parameters(notebooks / f"{stage}.ipynb", offered) for stage in cli.NOTEBOOKS}
    assert given == {"01_select": {"params_file": "/x/p.yaml", "dataset_path": "/data/lite.jsonl"},
                     "02_generate": {"params_file": "/x/p.yaml", "force": True},
                     "03_evaluate": {"params_file": "/x/p.yaml", "force": True},
                     "04_analyze": {"params_file": "/x/p.yaml"}}
    # None leaves the notebook's own default
    assert cli.notebook_parameters(notebooks / "01_select.ipynb", {**offered, "dataset_path": None}) == {
        "params_file": "/x/p.yaml"}
    blind = _notebook(tmp_path / "blind.ipynb", "force = False\n")
    with pytest.raises(cli.StageFailed, match="blind.ipynb: its parameters cell declares no params_file"):
        cli.notebook_parameters(blind, offered)


def test_run_hands_papermill_the_declared_parameters_and_writes_the_analysis_itself(tmp_path, monkeypatch,
                                                                                    capsys):
    calls = []

    def execute(source, target, parameters, cwd, **kwargs):
        calls.append((Path(source), parameters, Path(cwd)))
        shutil.copy(source, target)

    monkeypatch.setattr(cli.papermill, "execute_notebook", execute)
    outputs = tmp_path / "out"
    params_file = tmp_path / "tiny.yaml"          # no project around it
    params_file.write_text(f"name: tiny\noutputs_dir: {outputs}\nmodels:\n  - {{name: gold, kind: gold}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(params_file), "--force", "--stages", "01_select,02_generate,03_evaluate"]) == 0
    project = paths.package_project()
    assert [source for source, _, _ in calls] == [project / "notebooks" / f"{s}.ipynb" for s in cli.NOTEBOOKS[:3]]
    assert {cwd for _, _, cwd in calls} == {project}
    assert [sorted(parameters) for _, parameters, _ in calls] == [
        ["params_file"], ["force", "params_file"], ["force", "params_file"]]
    run_dir = next(outputs.iterdir())
    assert (run_dir / "report.html").is_file() and (run_dir / "charts" / "plotly.min.js").is_file()
    assert not (run_dir / "notebooks" / "04_analyze.ipynb").exists()
    assert f"report: {run_dir / 'report.html'}" in capsys.readouterr().out


def test_no_notebooks_anywhere_is_one_line(tmp_path, monkeypatch, capsys):
    params_file = tmp_path / "tiny.yaml"
    params_file.write_text("name: tiny\nmodels:\n  - {name: gold, kind: gold}\n")
    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "site-packages" / "swelab")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(params_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swelab: no swelab notebooks found") and str(tmp_path / "notebooks") in err


def test_a_params_file_outside_the_project_runs_every_stage(tmp_path, cache_dir, monkeypatch, capsys):
    outputs = tmp_path / "out"
    params_file = tmp_path / "elsewhere" / "tiny.yaml"
    params_file.parent.mkdir()
    params_file.write_text(f"name: tiny\ndataset: minibench\ninstances: [{TASK}]\nattempts: 1\n"
                           f"outputs_dir: {outputs}\nmodels:\n  - {{name: gold, kind: gold}}\n"
                           "  - {name: empty, kind: empty}\n")
    monkeypatch.chdir(params_file.parent)
    # 01..03 alone: the CLI writes the leaderboard and the report through the library
    assert main(["run", str(params_file), "--stages", "01_select,02_generate,03_evaluate"]) == 0
    shown = capsys.readouterr()
    # the stages speak while they run: the plan of cells, and a progress bar over the evaluations
    assert "generate: 2 cells" in shown.out and "evaluate gold__a1" in shown.err
    run_dir = next(outputs.iterdir())
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("model")
    assert board.loc["gold", "pass@1"] == 1.0 and board.loc["empty", "pass@1"] == 0.0
    assert (run_dir / "report.html").is_file() and not (run_dir / "notebooks" / "04_analyze.ipynb").exists()
    (run_dir / "leaderboard.csv").unlink()
    (run_dir / "report.html").unlink()
    # 04 writes them again, through the same library call
    assert main(["run", str(params_file), "--stages", "04_analyze"]) == 0
    assert {p.name for p in (run_dir / "notebooks").glob("04_*")} == {"04_analyze.ipynb", "04_analyze.html"}
    assert pd.read_csv(run_dir / "leaderboard.csv").set_index("model").loc["gold", "pass@1"] == 1.0
    assert (run_dir / "report.html").stat().st_size > 100_000
    assert {p.name for p in (run_dir / "charts").glob("*.html")} >= {"leaderboard.html", "per_repo.html"}
    assert not (tmp_path / "elsewhere" / "outputs").exists()
    assert "gold" in capsys.readouterr().out


def test_stage_kernels_talk_over_private_unix_sockets(tmp_path, capfd):
    """No TCP port on localhost for a stage's kernel (another local user could connect to it), and so no
    'running over TCP without encryption' warning in every stage's output."""
    import nbformat

    from swelab.cli import execute_stage, ipc_kernel_manager

    manager = ipc_kernel_manager(tmp_path)()
    assert manager.transport == "ipc" and manager.ip.startswith(str(tmp_path))
    notebook = tmp_path / "stage.ipynb"
    cell = nbformat.v4.new_code_cell("print('transport ok')")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), notebook)
    execute_stage(notebook, tmp_path / "executed.ipynb", {}, tmp_path)
    shown = capfd.readouterr()
    assert "transport" in shown.out
    assert "without encryption" not in shown.out + shown.err
    executed = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    assert executed.cells[0].outputs and "transport" in executed.cells[0].outputs[0]["text"]
