"""The run's instance set: which rows of the dataset a params file names, written once into the run dir."""

from __future__ import annotations

import json
from pathlib import Path

from swelab.io import read_jsonl, write_jsonl
from swelab.params import ParamsError, RunParams
from swelab.select.dataset import DatasetError, load_instances


def instance_ids_from(params: RunParams) -> list[str] | None:
    """The ids the params pin, or None for all."""
    value = params.instances
    if value == "all":
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    path = params.resolve_path(value)
    if not path.exists():
        raise ParamsError(params.source_file, "instances", f"file {value} not found")
    text = path.read_text(encoding="utf-8")
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                ids.append(json.loads(line)["instance_id"])
            except (json.JSONDecodeError, KeyError):
                raise ParamsError(params.source_file, "instances", f"{value}:{number}: no instance_id") from None
        else:
            ids.append(line)
    return ids


def resolve_instances(params: RunParams, rows: list[dict] | None = None) -> list[dict]:
    """Load the dataset and keep the pinned instances, in the order of the dataset (sorted by id)."""
    if rows is None:
        source = params.dataset.source
        if source != "minibench" and Path(source).suffix in {".json", ".jsonl", ".parquet"}:
            source = str(params.resolve_path(source))
        rows = load_instances(source, params.dataset.split, params.dataset.revision)
    wanted = instance_ids_from(params)
    if wanted is None and params.selection:
        from swelab.select import selection as select

        chosen = select.select_instances(rows, params.selection, params.selection_seed)
        return select.rows_for_ids(rows, chosen.ids, "selection")
    if wanted is None:
        return rows
    by_id = {row["instance_id"]: row for row in rows}
    missing = [iid for iid in wanted if iid not in by_id]
    if missing:
        raise DatasetError(
            f"{params.dataset.source}: instance {missing[0]} (named in 'instances') is not in the dataset"
        )
    return [by_id[iid] for iid in sorted(set(wanted))]


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
