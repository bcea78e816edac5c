"""The run's instance set: which rows of the dataset a params file names, written once into the run dir.

Which ids the params pin and which rows they name are decided in swelab.select.selection (next to the
seeded draw); this module reads and writes the run's copy."""

from __future__ import annotations

from pathlib import Path

from swelab.io import read_jsonl, write_jsonl
from swelab.params import RunParams
from swelab.select.selection import instance_ids_from, resolve_instances

__all__ = [
    "ensure_run_instances",
    "instance_ids_from",
    "read_run_instances",
    "resolve_instances",
    "write_run_instances",
]


def ensure_run_instances(params: RunParams) -> list[dict]:
    """The run's instance set: what 01_select wrote, or (a notebook run alone) the params' set, written now."""
    try:
        return read_run_instances(params.run_dir)
    except FileNotFoundError:
        rows = resolve_instances(params)
        write_run_instances(params.run_dir, rows)
        return rows


def write_run_instances(run_dir: Path, rows: list[dict]) -> Path:
    return write_jsonl(Path(run_dir) / "instances.jsonl", rows)


def read_run_instances(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "instances.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no instance set yet; run 01_select (or `swelab run`) first")
    return read_jsonl(path)
