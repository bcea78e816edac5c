"""`swelab run PARAMS.yaml`: the four notebooks through papermill, then the report; `swelab serve …`;
`swelab service` (jobs over HTTP) and `swelab submit PARAMS.yaml --url URL`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
from jupyter_client.manager import AsyncKernelManager

from swelab.analyze.artifacts import write_analysis
from swelab.analyze.reconcile import main as reconcile_main
from swelab.analyze.results import silent_models
from swelab.client import submit_main
from swelab.generate.serve import serve_main
from swelab.io import atomic_write_text
from swelab.params import ParamsError, load_params
from swelab.paths import STAGE_NOTEBOOKS, ProjectNotFound, notebooks_dir
from swelab.progress import PLAIN_PROGRESS
from swelab.rundir import RunLayout
from swelab.service.app import main as service_main

NOTEBOOKS = STAGE_NOTEBOOKS
REQUIRED_PARAMETER = "params_file"


class StageFailed(RuntimeError):
    """A notebook stopped with an error; the message is its last line, the notebook has the rest."""


def notebook_parameters(notebook: Path, offered: dict[str, Any]) -> dict[str, Any]:
    """The offered values the notebook's `parameters` cell declares (papermill.inspect_notebook); a value of
    None is left to the notebook's default. A notebook without params_file would silently analyse its default
    params, so it is refused."""
    if not notebook.is_file():
        raise ProjectNotFound(f"{notebook}: no such notebook")
    declared = papermill.inspect_notebook(str(notebook))
    if REQUIRED_PARAMETER not in declared:
        raise StageFailed(f"{notebook}: its parameters cell declares no {REQUIRED_PARAMETER}")
    return {name: value for name, value in offered.items() if name in declared and value is not None}


@contextmanager
def plain_progress() -> Iterator[None]:
    """The kernels started meanwhile inherit SWELAB_PLAIN_PROGRESS: their progress bars stream here as text."""
    before = os.environ.get(PLAIN_PROGRESS)
    os.environ[PLAIN_PROGRESS] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PLAIN_PROGRESS, None)
        else:
            os.environ[PLAIN_PROGRESS] = before


class IPCKernelManager(AsyncKernelManager):
    """A kernel reached over unix sockets in a private (0700) folder instead of TCP ports on localhost: no port
    another local user could connect to, and no "running over TCP without encryption" warning in every stage."""

    socket_dir = ""  # set by `ipc_kernel_manager`

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.transport = "ipc"
        self.ip = os.path.join(self.socket_dir, "kernel")


def ipc_kernel_manager(socket_dir: Path) -> type[IPCKernelManager]:
    return type("IPCKernelManager", (IPCKernelManager,), {"socket_dir": str(socket_dir)})


def execute_stage(notebook: Path, executed: Path, parameters: dict[str, Any], cwd: Path) -> None:
    """One notebook through papermill; the stage's printed lines and progress bars (cells planned and reused,
    environment builds with their durations, each evaluation, errors as they happen) stream to the terminal."""
    with tempfile.TemporaryDirectory(prefix="swelab-kernel-") as sockets:
        papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, cwd=str(cwd),
                                   progress_bar=False, log_output=False, stdout_file=sys.stdout,
                                   stderr_file=sys.stderr, kernel_name="python3",
                                   kernel_manager_class=ipc_kernel_manager(Path(sockets)))


def run(
    params_file: str, force: bool = False, stages: tuple[str, ...] = NOTEBOOKS, dataset_path: str | None = None
) -> Path:
    """Execute the notebooks headlessly into outputs/<run_id>/notebooks/; then the analysis' artifacts exist
    (written by 04_analyze, or by the library here when 04 was not among the stages)."""
    params = load_params(params_file)
    source = notebooks_dir()  # the installed project's notebooks, never guessed from the params file's folder
    layout = RunLayout(params.run_dir)
    out_dir = layout.notebooks_dir
    offered = {"params_file": params.source_file, "force": force,
               "dataset_path": str(Path(dataset_path).resolve()) if dataset_path else None}
    plans = {stage: notebook_parameters(source / f"{stage}.ipynb", offered) for stage in stages}
    if dataset_path and not any("dataset_path" in given for given in plans.values()):
        print(f"swelab: --dataset ignored: none of {', '.join(stages)} declares dataset_path", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"run {params.run_id} -> {params.run_dir}")
    for stage, parameters in plans.items():
        print(f"== {stage}")
        try:
            with plain_progress():
                execute_stage(
                    source / f"{stage}.ipynb", out_dir / f"{stage}.ipynb", parameters, source.parent)
        except papermill.PapermillExecutionError as exc:
            raise StageFailed(
                f"{stage} failed ({out_dir / f'{stage}.ipynb'} has the details): {exc.ename}: {exc.evalue}"
            ) from None
    if "04_analyze" in stages:
        # 04 wrote report.html through swelab.analyze.artifacts; the executed notebook is also exported without
        # its code, for readers who want the notebook view.
        export_without_inputs(out_dir / "04_analyze.ipynb")
    else:
        write_analysis(params.run_dir)
    print(f"report: {layout.report_html}")
    print_leaderboard(layout.leaderboard_csv)
    return params.run_dir


SUMMARY_COLUMNS = ("model", "attempted", "attempts", "resolved", "pass@1", "run_failure_rate", "note")


def print_leaderboard(path: Path) -> None:
    """The few columns a reader needs at the end of a run; the full table is in the CSV and the report."""
    if not path.exists():
        return
    board = pd.read_csv(path)
    pass_k = [c for c in board.columns if c.startswith("pass@") and c[5:].isdigit() and c != "pass@1"]
    columns = [c for c in (*SUMMARY_COLUMNS[:5], *pass_k, *SUMMARY_COLUMNS[5:]) if c in board.columns]
    print(board[columns].to_string(index=False))


def export_without_inputs(notebook: Path) -> Path:
    import nbconvert  # about a second to import (pygments, mistune): paid only when a run gets this far

    exporter = nbconvert.HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    return atomic_write_text(notebook.with_suffix(".html"), body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swelab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the four notebooks for a params file")
    run_parser.add_argument("params_file")
    run_parser.add_argument("--force", action="store_true", help="redo finished cells and verdicts")
    run_parser.add_argument("--stages", default=",".join(NOTEBOOKS), help="comma-separated notebook names")
    run_parser.add_argument("--dataset", help="a local copy of the params' dataset (JSON/JSONL/parquet) for 01_select")
    commands.add_parser("serve", help="start vLLM (and optionally ThunderAgent)", add_help=False)
    commands.add_parser("service", help="run jobs over HTTP (swelab service --help)", add_help=False)
    commands.add_parser("submit", help="submit a job to a swelab service and follow it", add_help=False)
    commands.add_parser("reconcile", help="compare a run's tokens and cost with a provider's usage export",
                        add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        return serve_main(rest)
    if args.command == "service":
        return service_main(rest)
    if args.command == "submit":
        return submit_main(rest)
    if args.command == "reconcile":
        return reconcile_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in NOTEBOOKS]
    if unknown:
        parser.error(f"unknown stage {unknown[0]} (known: {', '.join(NOTEBOOKS)})")
    try:
        run_dir = run(args.params_file, force=args.force, stages=stages, dataset_path=args.dataset)
    except (ParamsError, ProjectNotFound) as exc:
        print(f"swelab: {exc}", file=sys.stderr)
        return 2
    except StageFailed as exc:
        print(f"swelab: {exc}", file=sys.stderr)
        return 1
    silent = silent_models(run_dir) if "02_generate" in stages else {}
    for model, reason in silent.items():
        print(f"swelab: model {model} completed no call in this run: {reason}", file=sys.stderr)
    return 3 if silent else 0


if __name__ == "__main__":
    sys.exit(main())
