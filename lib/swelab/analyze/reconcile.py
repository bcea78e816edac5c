"""Reconcile a run's recorded tokens and cost with a provider's usage export (the research plan's "validated
against provider dashboards/logs on a sample"): `swelab reconcile RUN_DIR --usage-export FILE.csv`.

The export is a CSV with one row per generation. Accepted columns (first name found wins; OpenRouter's activity
export uses the first ones):

    time        created_at | timestamp | time        ISO-8601 (UTC when no zone is given) or epoch seconds
    model       model | model_permaslug | model_id   the provider's model id
    prompt      tokens_prompt | prompt_tokens | native_tokens_prompt
    completion  tokens_completion | completion_tokens | native_tokens_completion
    cost        cost | cost_usd | usage              USD (optional)
    id          generation_id | id                   (optional, shown in the pairs)

Matching (an export carries no program id of ours): a run call and an export row pair when the model matches (the
export's model equals the entry's model_id or name, or ends with it after a '/', case-insensitive) and the row's
time falls within the call's [started_at - window, ended_at + window] (default 120 s: clocks and the provider's
own latency differ). Pairs are then taken closest first over all candidates -- smallest token difference, then
smallest time difference -- each call and each row at most once. Only overlapping calls are compared: failed
calls and export rows outside the run's time span are left out and counted.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from swelab.io import atomic_write_text, read_json
from swelab.rundir import RunLayout

COLUMNS = {
    "time": ("created_at", "timestamp", "time"),
    "model": ("model", "model_permaslug", "model_id"),
    "prompt": ("tokens_prompt", "prompt_tokens", "native_tokens_prompt"),
    "completion": ("tokens_completion", "completion_tokens", "native_tokens_completion"),
    "cost": ("cost", "cost_usd", "usage"),
    "id": ("generation_id", "id"),
}
REQUIRED = ("time", "model", "prompt", "completion")
DEFAULT_WINDOW_S = 120.0


class ExportError(ValueError):
    """A usage export that cannot be read; the message names the file and the column."""


@dataclass
class Reconciliation:
    pairs: pd.DataFrame
    """One row per matched (call, export row): model, instance_id, attempt, call_index, generation_id, tokens and
    cost on both sides, token_source of the run's numbers."""
    per_model: pd.DataFrame
    """Per model: matched calls, summed tokens and cost on both sides, differences (run - export) and in %."""
    unmatched_calls: int
    """Successful run calls with no export row (outside the export, or no row close enough)."""
    unmatched_export_rows: int
    """Export rows within the run's time span that matched no call."""
    export_rows_outside: int
    """Export rows outside the run's time span (another run, another day): not compared."""

    def text(self) -> str:
        lines = [f"matched {len(self.pairs)} call(s); run calls without an export row: {self.unmatched_calls}; "
                 f"export rows in the run's span without a call: {self.unmatched_export_rows}; "
                 f"export rows outside the run's span (ignored): {self.export_rows_outside}"]
        if not self.per_model.empty:
            lines.append(self.per_model.to_string(float_format=lambda v: f"{v:.6g}"))
            approx = self.pairs[self.pairs["token_source"].isin(["tokenizer", "approx"])]
            if len(approx):
                lines.append(f"{len(approx)} matched call(s) have counted, not provider-reported, tokens "
                             "(token_source tokenizer/approx): their differences measure the estimate")
        return "\n".join(lines)


def _column(frame: pd.DataFrame, key: str, path: Path) -> str | None:
    lowered = {c.lower().strip(): c for c in frame.columns}
    for name in COLUMNS[key]:
        if name in lowered:
            return lowered[name]
    if key in REQUIRED:
        raise ExportError(f"{path}: no {key} column (accepted: {', '.join(COLUMNS[key])}; found: "
                          f"{', '.join(map(str, frame.columns))})")
    return None


def _epoch(values: pd.Series, path: Path, name: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric.astype("float64")
    try:
        stamps = pd.to_datetime(values, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{path}: column {name}: not a time ({exc})") from None
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def read_export(path: str | Path) -> pd.DataFrame:
    """The export as columns time (epoch s), model, prompt, completion, cost, id."""
    path = Path(path)
    try:
        raw = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ExportError(f"{path}: cannot read the usage export ({exc})") from None
    names = {key: _column(raw, key, path) for key in COLUMNS}
    out = pd.DataFrame({"time": _epoch(raw[names["time"]], path, names["time"]),
                        "model": raw[names["model"]].astype(str)})
    for key in ("prompt", "completion", "cost"):
        out[key] = pd.to_numeric(raw[names[key]], errors="coerce") if names[key] else math.nan
    out["id"] = raw[names["id"]].astype(str) if names["id"] else ""
    return out


def _model_ids(run_dir: Path) -> dict[str, set[str]]:
    """Entry name -> the names the provider may call it (its model_id and its name), lower-cased."""
    manifest = RunLayout(run_dir).manifest
    models = (read_json(manifest).get("params") or {}).get("models") or [] if manifest.exists() else []
    return {m["name"]: {str(v).lower() for v in (m.get("model_id"), m["name"]) if v} for m in models}


def _same_model(export_model: str, names: set[str]) -> bool:
    low = export_model.lower()
    return any(low == n or low.endswith("/" + n) or n.endswith("/" + low) for n in names)


def reconcile(run_dir: str | Path, export_path: str | Path, window_s: float = DEFAULT_WINDOW_S) -> Reconciliation:
    run_dir = Path(run_dir)
    export = read_export(export_path)
    calls = pd.DataFrame(RunLayout(run_dir).calls())
    if calls.empty:
        calls = pd.DataFrame(columns=["model", "instance_id", "attempt", "call_index", "started_at", "ended_at",
                                      "prompt_tokens", "completion_tokens", "cost_usd", "error_kind"])
    for name in ("token_source", "error_kind", "cost_usd"):
        if name not in calls.columns:
            calls[name] = None
    calls = calls[calls["error_kind"].isna()].reset_index(drop=True)
    names = _model_ids(run_dir)
    span = (calls["started_at"].min() - window_s, calls["ended_at"].max() + window_s) if len(calls) else (0, -1)
    inside = export[(export["time"] >= span[0]) & (export["time"] <= span[1])]

    candidates = []  # (token distance, time distance, call index, export index)
    for model, model_calls in calls.groupby("model"):
        known = names.get(model, {str(model).lower()})
        rows = inside[inside["model"].map(lambda m, known=known: _same_model(m, known))].sort_values("time")
        times = rows["time"].to_numpy()
        for ci, call in model_calls.iterrows():
            low = times.searchsorted(call["started_at"] - window_s, side="left")
            high = times.searchsorted(call["ended_at"] + window_s, side="right")
            candidates += [_candidate(call, row, ci, ei) for ei, row in rows.iloc[low:high].iterrows()]
    used_calls, used_rows, pairs = set(), set(), []
    for _tokens, _moment, ci, ei in sorted(candidates):
        if ci in used_calls or ei in used_rows:
            continue
        used_calls.add(ci)
        used_rows.add(ei)
        call, row = calls.loc[ci], inside.loc[ei]
        pairs.append({
            "model": call["model"], "instance_id": call["instance_id"], "attempt": call["attempt"],
            "call_index": call["call_index"], "generation_id": row["id"], "token_source": call["token_source"],
            "run_prompt": call["prompt_tokens"], "export_prompt": row["prompt"],
            "run_completion": call["completion_tokens"], "export_completion": row["completion"],
            "run_cost": call["cost_usd"], "export_cost": row["cost"],
        })
    pair_frame = pd.DataFrame(pairs, columns=[
        "model", "instance_id", "attempt", "call_index", "generation_id", "token_source", "run_prompt",
        "export_prompt", "run_completion", "export_completion", "run_cost", "export_cost"])
    return Reconciliation(pairs=pair_frame, per_model=_per_model(pair_frame),
                          unmatched_calls=len(calls) - len(used_calls),
                          unmatched_export_rows=len(inside) - len(used_rows),
                          export_rows_outside=len(export) - len(inside))


def _candidate(call: pd.Series, row: pd.Series, ci: int, ei: int) -> tuple[float, float, int, int]:
    tokens = abs(_num(call["prompt_tokens"]) - _num(row["prompt"])) + abs(
        _num(call["completion_tokens"]) - _num(row["completion"]))
    moment = min(abs(row["time"] - call["started_at"]), abs(row["time"] - call["ended_at"]))
    return tokens, moment, ci, ei


def _num(value: object) -> float:
    return 0.0 if value is None or pd.isna(value) else float(value)


def _per_model(pairs: pd.DataFrame) -> pd.DataFrame:
    columns = ["calls", "run_prompt", "export_prompt", "prompt_diff", "prompt_diff_%", "run_completion",
               "export_completion", "completion_diff", "completion_diff_%", "run_cost", "export_cost", "cost_diff"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    numeric = pairs.assign(**{c: pd.to_numeric(pairs[c], errors="coerce") for c in pairs.columns[6:]})
    grouped = numeric.groupby("model")
    frame = pd.DataFrame({"calls": grouped.size()})
    for side in ("prompt", "completion", "cost"):
        frame[f"run_{side}"] = grouped[f"run_{side}"].sum(min_count=1)
        frame[f"export_{side}"] = grouped[f"export_{side}"].sum(min_count=1)
        frame[f"{side}_diff"] = frame[f"run_{side}"] - frame[f"export_{side}"]
        if side != "cost":
            frame[f"{side}_diff_%"] = 100.0 * frame[f"{side}_diff"] / frame[f"export_{side}"].replace(0, math.nan)
    return frame[columns]


def main(argv: list[str] | None = None) -> int:
    """`swelab reconcile RUN_DIR --usage-export FILE.csv [--window-s S] [--pairs OUT.csv]`: prints the
    differences; 2 when the run or the export cannot be read."""
    parser = argparse.ArgumentParser(prog="swelab reconcile", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the run folder (outputs/<run_id>)")
    parser.add_argument("--usage-export", required=True, help="the provider's usage export (CSV)")
    parser.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_S,
                        help=f"seconds around a call an export row may be (default {DEFAULT_WINDOW_S:g})")
    parser.add_argument("--pairs", help="also write the matched pairs to this CSV")
    args = parser.parse_args(argv)
    if not (Path(args.run_dir) / "cells").is_dir():
        print(f"swelab reconcile: {args.run_dir}: not a run folder (no cells/)", file=sys.stderr)
        return 2
    try:
        result = reconcile(args.run_dir, args.usage_export, args.window_s)
    except ExportError as exc:
        print(f"swelab reconcile: {exc}", file=sys.stderr)
        return 2
    print(result.text())
    if args.pairs:
        atomic_write_text(args.pairs, result.pairs.to_csv(index=False))
    return 0
