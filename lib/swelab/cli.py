"""`swelab run PARAMS.yaml`: the four notebooks through papermill, then the report; `swelab serve …`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swelab.params import ParamsError, load_params

NOTEBOOKS = ("01_select", "02_generate", "03_evaluate", "04_analyze")


def notebooks_dir(project_root: Path) -> Path:
    return project_root / "notebooks"


class StageFailed(RuntimeError):
    """A notebook stopped with an error; the message is its last line, the notebook has the rest."""


def run(
    params_file: str, force: bool = False, stages: tuple[str, ...] = NOTEBOOKS, dataset_path: str | None = None
) -> Path:
    """Execute the notebooks headlessly into outputs/<run_id>/notebooks/ and render report.html."""
    import papermill

    params = load_params(params_file)
    root = Path(params.project_root)
    out_dir = params.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"run {params.run_id} -> {params.run_dir}")
    for stage in stages:
        print(f"== {stage}")
        parameters = {"params_file": params.source_file, "force": force}
        if stage == "01_select" and dataset_path:
            parameters["dataset_path"] = str(Path(dataset_path).resolve())
        try:
            papermill.execute_notebook(
                str(notebooks_dir(root) / f"{stage}.ipynb"),
                str(out_dir / f"{stage}.ipynb"),
                parameters=parameters,
                cwd=str(root),
                progress_bar=False,
                log_output=True,
                kernel_name="python3",
            )
        except papermill.PapermillExecutionError as exc:
            raise StageFailed(
                f"{stage} failed ({out_dir / f'{stage}.ipynb'} has the details): {exc.ename}: {exc.evalue}"
            ) from None
    if "04_analyze" in stages:
        # report.html itself is written by 04_analyze through swelab.analyze.report (self-contained, plotly.js once);
        # the executed notebook is also exported without its code, for readers who want the notebook view.
        export_without_inputs(out_dir / "04_analyze.ipynb")
        print(f"report: {params.run_dir / 'report.html'}")
    print_leaderboard(params.run_dir / "leaderboard.csv")
    return params.run_dir


SUMMARY_COLUMNS = ("model", "attempted", "attempts", "resolved", "pass@1", "run_failure_rate", "note")


def print_leaderboard(path: Path) -> None:
    """The few columns a reader needs at the end of a run; the full table is in the CSV and the report."""
    if not path.exists():
        return
    import pandas as pd

    board = pd.read_csv(path)
    pass_k = [c for c in board.columns if c.startswith("pass@") and c[5:].isdigit() and c != "pass@1"]
    columns = [c for c in (*SUMMARY_COLUMNS[:5], *pass_k, *SUMMARY_COLUMNS[5:]) if c in board.columns]
    print(board[columns].to_string(index=False))


def export_without_inputs(notebook: Path) -> Path:
    import nbconvert
    import nbformat

    exporter = nbconvert.HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    from swelab.io import atomic_write_text

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
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        from swelab.generate.serve import serve_main

        return serve_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in NOTEBOOKS]
    if unknown:
        parser.error(f"unknown stage {unknown[0]} (known: {', '.join(NOTEBOOKS)})")
    try:
        run(args.params_file, force=args.force, stages=stages, dataset_path=args.dataset)
    except ParamsError as exc:
        print(f"swelab: {exc}", file=sys.stderr)
        return 2
    except StageFailed as exc:
        print(f"swelab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
