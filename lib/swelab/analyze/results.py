"""Read a run directory into tidy pandas frames (the only place analysis touches files).

Every path and record comes from `swelab.rundir.RunLayout` (the run folder's one owner).
"""

from __future__ import annotations

import dataclasses
import io
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from swelab.io import atomic_write_bytes, atomic_write_text, read_json
from swelab.paths import project_root
from swelab.rundir import USAGE_FIELDS, CellRecord, RunLayout

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- cells


def _cell_row(cell: CellRecord) -> dict[str, Any]:
    row = {name: getattr(cell, name) for name in CELL_COLUMNS if name not in USAGE_FIELDS and name != "has_patch"}
    row.update({name: getattr(cell.usage, name) for name in USAGE_FIELDS})
    row["has_patch"] = bool(cell.model_patch.strip())
    return row


def _typed(frame: pd.DataFrame, ints: list[str], floats: list[str]) -> pd.DataFrame:
    for name in ints:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    for name in floats:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame


def load_cells(run_dir: str | Path) -> pd.DataFrame:
    """One row per finished attempt (cell json); an empty frame with the columns when there are none."""
    rows = [_cell_row(cell) for cell in RunLayout(run_dir).cells()]
    frame = pd.DataFrame(rows, columns=CELL_COLUMNS)
    frame = _typed(frame, ["attempt", "steps", "tool_calls", "n_calls", "prompt_tokens", "completion_tokens",
                           "cached_tokens", "reasoning_tokens"], ["duration_s", "cost_usd"])
    frame["oracle"] = frame["oracle"].astype(bool)
    frame["has_patch"] = frame["has_patch"].astype(bool)
    for name in ("started_at", "finished_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True, errors="coerce", format="ISO8601")
    return frame.sort_values(["model", "instance_id", "attempt"], ignore_index=True)


# ---------------------------------------------------------------- calls


def load_calls(run_dir: str | Path) -> pd.DataFrame:
    """All model calls of the run's current attempts, one row per calls.jsonl line, tagged with
    model/instance/attempt from the cell that owns them."""
    frame = pd.DataFrame(RunLayout(run_dir).calls())
    frame = frame.reindex(columns=CALL_COLUMNS + [c for c in frame.columns if c not in CALL_COLUMNS])
    return _typed(frame, ["attempt", "call_index", "prompt_tokens", "completion_tokens", "cached_tokens",
                          "reasoning_tokens", "retries"],
                  ["started_at", "ended_at", "latency_s", "ttft_s", "cost_usd"])


# ---------------------------------------------------------------- verdicts


def load_verdicts(run_dir: str | Path) -> pd.DataFrame:
    """Official per-instance verdicts: model, attempt, instance_id, resolved, patch_applied, eval_label."""
    rows = [dataclasses.asdict(v) for v in RunLayout(run_dir).verdicts()]
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
    path = RunLayout(run_dir).manifest
    return read_json(path) if path.is_file() else {}


def load_resolved_params(run_dir: str | Path) -> dict[str, Any]:
    """The resolved params the run was made with (kept in its manifest), or {}."""
    return load_manifest(run_dir).get("params") or {}


def load_profiles(run_dir: str | Path) -> pd.DataFrame:
    """ThunderAgent per-program time breakdown from ``thunderagent/profiles.json`` (empty when absent).

    Accepts a list of objects with ``program_id`` or an object keyed by program id (ThunderAgent's GET
    /profiles); phase times are read from ``prefill``/``decode``/``pause``/``tool`` with or without an ``_s`` /
    ``_time`` suffix. Never raises on what a router answered: entries it cannot read (a router's error answer, a
    string, a value that is no number, a file that is no JSON) are left out, logged, and listed, each naming the
    file, in ``frame.attrs["unreadable"]``.
    """
    path = RunLayout(run_dir).thunderagent_dir / "profiles.json"
    columns = ["program_id", "prefill_s", "decode_s", "pause_s", "tool_s"]
    rows: list[dict[str, Any]] = []
    unreadable: list[str] = []
    if path.is_file():
        try:
            rows, unreadable = _profile_rows(path, read_json(path))
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            unreadable = [f"{path}: not readable as JSON ({exc})"]
    for problem in unreadable:
        log.warning("ThunderAgent profiles: %s", problem)
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["unreadable"] = unreadable
    return frame


def _profile_rows(path: Path, data: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows that could be read, and one line per thing that could not."""
    items = data.get("programs", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        if set(items) == {"error"}:
            return [], [f"{path}: the router answered an error, not profiles: {str(items['error'])[:200]}"]
        items = [{"program_id": key, **value} if isinstance(value, dict) else value for key, value in items.items()]
    if not isinstance(items, list):
        return [], [f"{path}: expected a list of program profiles or an object keyed by program_id, "
                    f"found {type(data).__name__}"]
    rows, problems = [], []
    for index, item in enumerate(items):
        try:
            rows.append(_profile_row(path, item))
        except (TypeError, ValueError) as exc:
            problems.append(f"{path}: entry {index} left out: {str(exc).removeprefix(f'{path}: ')[:200]}")
    return rows, problems


def _profile_row(path: Path, item: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(item, dict) or "program_id" not in item:
        raise ValueError(f"{path}: each program profile needs a 'program_id', found {str(item)[:80]!r}")
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
    path = project_root() / "params" / "pricing.yaml"
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


def silent_models(run_dir: str | Path) -> dict[str, str]:
    """Models that call a model (a provider in their entry) whose attempts of this run completed not one call,
    each with the reason its cells give (the most frequent error): a demo whose embedded model crashed, or a
    hosted model without a key, must not pass for a model that answered and failed."""
    entries = {m["name"]: m for m in load_resolved_params(run_dir).get("models", []) if m.get("provider")}
    cells = load_cells(run_dir)
    calls = load_calls(run_dir)
    answered = set(calls.loc[calls["error_kind"].isna(), "model"]) if not calls.empty else set()
    silent = {}
    for name in entries:
        mine = cells[cells["model"] == name]
        if mine.empty or name in answered:
            continue
        errors = mine["error"].dropna()
        kinds = mine["error_kind"].dropna()
        reason = errors.mode().iloc[0] if not errors.empty else "no call was made"
        silent[name] = f"{kinds.mode().iloc[0]}: {reason}" if not kinds.empty else reason
    return silent
