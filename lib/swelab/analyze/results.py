"""Read a run directory into tidy pandas frames (the only place analysis touches files).

Layout (docs/ARCHITECTURE.md): ``cells/<model_dir>/<instance_id>/<attempt>.json`` (one attempt),
``cells/<model_dir>/<instance_id>/<attempt>/calls.jsonl`` (its model calls) and
``eval/<model_dir>__a<k>/<instance_id>/report.json`` (official ``get_eval_report`` output).
``model_dir`` is the model name with ``/`` replaced by ``__``; the ``model`` field inside a cell is the truth.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from swelab.io import atomic_write_bytes, atomic_write_text, read_json, read_jsonl

CELL_COLUMNS = [
    "model", "instance_id", "repo", "attempt", "mode", "status", "error_kind", "error", "oracle",
    "has_patch", "duration_s", "steps", "tool_calls", "n_calls", "prompt_tokens", "completion_tokens",
    "cached_tokens", "reasoning_tokens", "cost_usd", "started_at", "finished_at",
]
CALL_COLUMNS = [
    "model", "instance_id", "attempt", "program_id", "call_index", "started_at", "ended_at", "latency_s",
    "ttft_s", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd",
    "error_kind", "retries", "finish_reason",
]
VERDICT_COLUMNS = ["model", "attempt", "instance_id", "resolved", "patch_applied", "eval_label"]
USAGE_FIELDS = ["prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd"]
REQUIRED_CELL_FIELDS = ["model", "instance_id", "attempt", "status"]
_EVAL_DIR = re.compile(r"^(?P<model_dir>.+)__a(?P<attempt>\d+)$")


def model_dirname(name: str) -> str:
    """Directory name of a model: ``/`` is not allowed in one path component."""
    if not name:
        raise ValueError("model name is empty")
    return name.replace("/", "__")


# ---------------------------------------------------------------- cells


def _read_cell(path: Path) -> dict[str, Any]:
    try:
        cell = read_json(path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: cell file is not valid JSON ({exc.msg})") from exc
    if not isinstance(cell, dict):
        raise ValueError(f"{path}: cell file must hold a JSON object")
    for field in REQUIRED_CELL_FIELDS:
        if cell.get(field) in (None, ""):
            raise ValueError(f"{path}: cell is missing required field {field!r}")
    return cell


def _cell_row(cell: dict[str, Any]) -> dict[str, Any]:
    usage = cell.get("usage") or {}
    row = {name: cell.get(name) for name in CELL_COLUMNS if name not in USAGE_FIELDS}
    row.update({name: usage.get(name) for name in USAGE_FIELDS})
    row["attempt"] = int(cell["attempt"])
    row["oracle"] = bool(cell.get("oracle") or False)
    row["has_patch"] = bool((cell.get("model_patch") or "").strip())
    return row


def _cell_paths(run_dir: Path) -> list[Path]:
    # depth 3 exactly: calls.jsonl/trajectory.jsonl live one level deeper, in <attempt>/ folders
    return sorted(p for p in (run_dir / "cells").glob("*/*/*.json") if p.is_file())


def _typed(frame: pd.DataFrame, ints: list[str], floats: list[str]) -> pd.DataFrame:
    for name in ints:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    for name in floats:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame


def load_cells(run_dir: str | Path) -> pd.DataFrame:
    """One row per finished attempt (cell json); an empty frame with the columns when there are none."""
    rows = [_cell_row(_read_cell(path)) for path in _cell_paths(Path(run_dir))]
    frame = pd.DataFrame(rows, columns=CELL_COLUMNS)
    frame = _typed(frame, ["attempt", "steps", "tool_calls", "n_calls", "prompt_tokens", "completion_tokens",
                           "cached_tokens", "reasoning_tokens"], ["duration_s", "cost_usd"])
    frame["oracle"] = frame["oracle"].astype(bool)
    frame["has_patch"] = frame["has_patch"].astype(bool)
    for name in ("started_at", "finished_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True, errors="coerce", format="ISO8601")
    return frame.sort_values(["model", "instance_id", "attempt"], ignore_index=True)


# ---------------------------------------------------------------- calls


def _cell_identity(calls_path: Path) -> dict[str, Any]:
    """model/instance/attempt of the cell that owns a calls.jsonl, for lines that lack them."""
    attempt_dir = calls_path.parent
    cell_path = attempt_dir.with_suffix(".json")
    identity: dict[str, Any] = {"model": attempt_dir.parent.parent.name,
                                "instance_id": attempt_dir.parent.name}
    if attempt_dir.name.isdigit():
        identity["attempt"] = int(attempt_dir.name)
    if cell_path.is_file():
        cell = read_json(cell_path)
        identity.update({k: cell[k] for k in ("model", "instance_id", "attempt") if cell.get(k) is not None})
    return identity


def load_calls(run_dir: str | Path) -> pd.DataFrame:
    """All model calls of the run, one row per calls.jsonl line, tagged with model/instance/attempt."""
    rows: list[dict[str, Any]] = []
    for path in sorted((Path(run_dir) / "cells").glob("*/*/*/calls.jsonl")):
        identity = _cell_identity(path)
        for line in read_jsonl(path):
            rows.append({**identity, **{k: v for k, v in line.items() if v is not None or k not in identity}})
    frame = pd.DataFrame(rows)
    frame = frame.reindex(columns=CALL_COLUMNS + [c for c in frame.columns if c not in CALL_COLUMNS])
    return _typed(frame, ["attempt", "call_index", "prompt_tokens", "completion_tokens", "cached_tokens",
                          "reasoning_tokens", "retries"],
                  ["started_at", "ended_at", "latency_s", "ttft_s", "cost_usd"])


# ---------------------------------------------------------------- verdicts


def _verdict_entry(path: Path, instance_id: str) -> dict[str, Any]:
    try:
        report = read_json(path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: eval report is not valid JSON ({exc.msg})") from exc
    if not isinstance(report, dict) or not report:
        raise ValueError(f"{path}: eval report must be a non-empty object keyed by instance_id")
    if instance_id in report:
        entry = report[instance_id]
    elif len(report) == 1:
        entry = next(iter(report.values()))
    else:
        raise ValueError(f"{path}: no entry for instance {instance_id!r}")
    if not isinstance(entry, dict) or "resolved" not in entry:
        raise ValueError(f"{path}: entry for {instance_id!r} has no 'resolved' field")
    return entry


def _eval_meta(eval_dir: Path) -> dict[str, Any]:
    """Label of the verdicts: verdict_meta.json, else the run report's label / evaluation_backend."""
    meta: dict[str, Any] = {}
    run_report = eval_dir / "report.json"
    if run_report.is_file():
        report = read_json(run_report)
        label = report.get("label") or report.get("evaluation_backend")
        meta = {"eval_label": label} if label else {}
    path = eval_dir / "verdict_meta.json"
    return {**meta, **(read_json(path) if path.is_file() else {})}


def _verdict_rows(eval_dir: Path, names: dict[str, str]) -> list[dict[str, Any]]:
    match = _EVAL_DIR.match(eval_dir.name)
    if not match:
        return []
    meta = _eval_meta(eval_dir)
    model = meta.get("model") or names.get(match["model_dir"], match["model_dir"])
    attempt = int(meta.get("attempt") or match["attempt"])
    label = meta.get("eval_label") or meta.get("backend")
    rows = []
    for report in sorted(eval_dir.glob("*/report.json")):
        entry = _verdict_entry(report, report.parent.name)
        rows.append({"model": model, "attempt": attempt, "instance_id": report.parent.name,
                     "resolved": bool(entry["resolved"]),
                     "patch_applied": bool(entry.get("patch_successfully_applied", False)),
                     "eval_label": label})
    return rows


def _model_names(run_dir: Path) -> dict[str, str]:
    """model_dir -> true model name, from the predictions files and then the cells (the truth)."""
    names: dict[str, str] = {}
    for path in sorted((run_dir / "predictions").glob("*.jsonl")):
        match = _EVAL_DIR.match(path.stem)
        rows = read_jsonl(path)
        if match and rows and rows[0].get("model_name_or_path"):
            names[match["model_dir"]] = rows[0]["model_name_or_path"]
    for path in _cell_paths(run_dir):
        model = read_json(path).get("model")
        if model:
            names[model_dirname(model)] = model
    return names


def load_verdicts(run_dir: str | Path) -> pd.DataFrame:
    """Official per-instance verdicts: model, attempt, instance_id, resolved, patch_applied, eval_label."""
    run_dir = Path(run_dir)
    names = _model_names(run_dir)
    rows: list[dict[str, Any]] = []
    for eval_dir in sorted(p for p in (run_dir / "eval").glob("*") if p.is_dir()):
        rows.extend(_verdict_rows(eval_dir, names))
    frame = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    frame["attempt"] = frame["attempt"].astype("Int64")
    frame["resolved"] = frame["resolved"].astype("boolean")
    frame["patch_applied"] = frame["patch_applied"].astype("boolean")
    return frame


# ---------------------------------------------------------------- joined view


def attempt_table(run_dir: str | Path) -> pd.DataFrame:
    """Cells left-joined with verdicts; `resolved` is False for run failures and <NA> while not evaluated.

    `outcome` names each attempt: resolved | wrong | <failure status> | pending.
    """
    cells, verdicts = load_cells(run_dir), load_verdicts(run_dir)
    table = cells.merge(verdicts, on=["model", "instance_id", "attempt"], how="left")
    failed = table["status"] != "ok"
    table["evaluated"] = table["resolved"].notna() & ~failed
    table.loc[failed, "resolved"] = False
    table["resolved"] = table["resolved"].astype("boolean")
    table["outcome"] = "pending"
    table.loc[table["resolved"].fillna(False).astype(bool), "outcome"] = "resolved"
    table.loc[~failed & (table["resolved"] == False), "outcome"] = "wrong"  # noqa: E712 (nullable compare)
    table.loc[failed, "outcome"] = table.loc[failed, "status"]
    return table


# ---------------------------------------------------------------- run metadata and pricing


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run manifest, or {} when the run has none yet."""
    path = Path(run_dir) / "manifest.json"
    return read_json(path) if path.is_file() else {}


def load_resolved_params(run_dir: str | Path) -> dict[str, Any]:
    """The resolved params the run was made with (kept in its manifest), or {}."""
    return load_manifest(run_dir).get("params") or {}


def load_profiles(run_dir: str | Path) -> pd.DataFrame:
    """ThunderAgent per-program time breakdown from ``thunderagent/profiles.json`` (empty when absent).

    Accepts a list of objects with ``program_id`` or an object keyed by program id; phase times are read
    from ``prefill``/``decode``/``pause``/``tool`` with or without an ``_s`` / ``_time`` suffix.
    """
    path = Path(run_dir) / "thunderagent" / "profiles.json"
    columns = ["program_id", "prefill_s", "decode_s", "pause_s", "tool_s"]
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    data = read_json(path)
    items = data.get("programs", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        items = [{"program_id": key, **value} for key, value in items.items()]
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of program profiles or an object keyed by program_id")
    return pd.DataFrame([_profile_row(path, item) for item in items], columns=columns)


def _profile_row(path: Path, item: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(item, dict) or "program_id" not in item:
        raise ValueError(f"{path}: each program profile needs a 'program_id'")
    row: dict[str, Any] = {"program_id": str(item["program_id"])}
    item = {**(item.get("profile") or {}), **item}  # GET /programs nests the profile
    steps = float(item.get("step_count") or 0)
    for phase, averaged in (("prefill", "prefill"), ("decode", "decode"), ("pause", "pause"), ("tool", "tool_call")):
        value = next((item[k] for k in (f"{phase}_s", f"{phase}_time", phase) if k in item), None)
        if value is None and f"avg_{averaged}_s" in item:  # ThunderAgent's GET /profiles: per-step averages
            value = float(item[f"avg_{averaged}_s"] or 0.0) * steps
        row[f"{phase}_s"] = float(value or 0.0)
    return row


def default_pricing_path() -> Path | None:
    """params/pricing.yaml of the project checkout, when there is one."""
    path = Path(__file__).resolve().parents[3] / "params" / "pricing.yaml"
    return path if path.is_file() else None


def load_pricing(path: str | Path) -> dict[str, dict[str, float]]:
    """``{model: {"input": $/1M, "output": $/1M}}`` from a pricing YAML (see params/pricing.yaml)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ValueError(f"{path}: 'models' must be a mapping of model name to prices")
    pricing = {}
    for name, prices in models.items():
        try:
            pricing[str(name)] = {"input": float(prices["input"]), "output": float(prices["output"])}
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: models.{name} needs numeric 'input' and 'output' ($/1M)") from exc
    return pricing


# ---------------------------------------------------------------- outputs


def write_leaderboards(run_dir: str | Path, leaderboard: pd.DataFrame,
                       name: str = "leaderboard") -> list[Path]:
    """Write ``<name>.csv`` and ``<name>.parquet`` (pyarrow) into the run dir, each atomically."""
    run_dir = Path(run_dir)
    csv_path = atomic_write_text(run_dir / f"{name}.csv", leaderboard.to_csv(index=False))
    buffer = io.BytesIO()
    leaderboard.to_parquet(buffer, engine="pyarrow", index=False)
    parquet_path = atomic_write_bytes(run_dir / f"{name}.parquet", buffer.getvalue())
    return [csv_path, parquet_path]
