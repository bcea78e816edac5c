"""Fail when a committed notebook carries outputs, execution counts or saved widget state.

Usage: python tests/check_notebooks_clean.py [NOTEBOOK_OR_FOLDER ...]   (default: notebooks/)
Clear them with `jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

PROJECT = Path(__file__).resolve().parents[1]


def problems(path: Path) -> list[str]:
    """One line per dirty cell of a notebook, naming the file and the cell."""
    notebook = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            found.append(f"{path}: cell {index} has {len(cell.outputs)} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"{path}: cell {index} has execution count {cell.execution_count}")
    if notebook.metadata.get("widgets"):
        found.append(f"{path}: notebook metadata holds saved widget state")
    return found


def notebooks(targets: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for target in targets:
        if not target.exists():
            raise SystemExit(f"{target}: no such notebook or folder")
        paths.extend(sorted(target.glob("*.ipynb")) if target.is_dir() else [target])
    return paths


def main(argv: list[str] | None = None) -> int:
    targets = [Path(a) for a in (sys.argv[1:] if argv is None else argv)] or [PROJECT / "notebooks"]
    found = [line for path in notebooks(targets) for line in problems(path)]
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print("clear them: jupyter nbconvert --clear-output --inplace <notebook>", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
