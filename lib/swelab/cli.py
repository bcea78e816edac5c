"""`swelab run PARAMS.yaml`: the four notebooks through papermill, then the report; `swelab serve …`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swelab.params import ParamsError, load_params

NOTEBOOKS = ("01_select", "02_generate", "03_evaluate", "04_analyze")


def notebooks_dir(project_root: Path) -> Path:
    return project_root / "notebooks"


def run(params_file: str, force: bool = False, stages: tuple[str, ...] = NOTEBOOKS) -> Path:
    """Execute the notebooks headlessly into outputs/<run_id>/notebooks/ and render report.html."""
    import papermill

    params = load_params(params_file)
    root = Path(params.project_root)
    out_dir = params.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"run {params.run_id} -> {params.run_dir}")
    for stage in stages:
        print(f"== {stage}")
        papermill.execute_notebook(
            str(notebooks_dir(root) / f"{stage}.ipynb"),
            str(out_dir / f"{stage}.ipynb"),
            parameters={"params_file": params.source_file, "force": force},
            cwd=str(root),
            progress_bar=False,
            log_output=True,
            kernel_name="python3",
        )
    if "04_analyze" in stages:
        from swelab.report import render_report

        report = render_report(params.run_dir)
        print(f"report: {report}")
    leaderboard = params.run_dir / "leaderboard.csv"
    if leaderboard.exists():
        print(leaderboard.read_text())
    return params.run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swelab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the four notebooks for a params file")
    run_parser.add_argument("params_file")
    run_parser.add_argument("--force", action="store_true", help="redo finished cells and verdicts")
    run_parser.add_argument("--stages", default=",".join(NOTEBOOKS), help="comma-separated notebook names")
    commands.add_parser("serve", help="start vLLM (and optionally ThunderAgent)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        from swelab.serve import serve_main

        return serve_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in NOTEBOOKS]
    if unknown:
        parser.error(f"unknown stage {unknown[0]} (known: {', '.join(NOTEBOOKS)})")
    try:
        run(args.params_file, force=args.force, stages=stages)
    except ParamsError as exc:
        print(f"swelab: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
