"""Import predictions made elsewhere into a run: cells (mode "import") and official predictions files.

Formats (`detect_format` tells them apart):
- "swebench": a SWE-bench predictions JSONL (`instance_id`, `model_name_or_path`, `model_patch`) or a JSON
  list of those;
- "mini-swe-agent": its `preds.json` ({instance_id: {model_name_or_path, instance_id, model_patch}}),
  with the trajectories `<dir>/<instance_id>/<instance_id>.traj.json` next to it (or in `trajectories`)
  giving exit status, steps, actions, API calls, cost and token usage;
- "openhands": OpenHands' `output.jsonl` (`instance_id`, `test_result.git_patch`, `history`, `metrics`,
  `error`).

What a format does not report stays null in the cell (never a guessed 0). A params model entry
`{name: X, kind: import, options: {path: P, format: auto, attempt: 1}}` (or `paths: [P1, P2]`, one per
attempt) is imported by `import_for_params`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from swelab import io
from swelab.rundir import USAGE_FIELDS, CellRecord, RunLayout, Usage
from swelab.workspace.patches import size_refusal

FORMATS = ("swebench", "mini-swe-agent", "openhands")


class ImportFormatError(ValueError):
    """A predictions file that cannot be imported; the message names the file and the entry."""


@dataclass
class Imported:
    """One instance's imported attempt, before it becomes a cell."""

    instance_id: str
    model_patch: str
    status: str = "ok"
    error: str | None = None
    error_kind: str | None = None
    steps: int | None = None
    tool_calls: int | None = None
    n_calls: int | None = None
    usage: dict = field(default_factory=lambda: dict.fromkeys(USAGE_FIELDS))
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None


@dataclass
class ImportSummary:
    model: str
    attempt: int
    source: str
    format: str
    written: list[str]
    not_in_run: list[str]
    missing: list[str]
    predictions_path: Path | None


# ---------------------------------------------------------------- reading


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise ImportFormatError(f"{path}: file not found")
    if path.suffix == ".json":
        data = _load_json(path)
        return "mini-swe-agent" if isinstance(data, dict) else "swebench"
    first = next((line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()), None)
    if first is None:
        raise ImportFormatError(f"{path}: no predictions in the file")
    try:
        entry = json.loads(first)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}:1: not valid JSON ({exc.msg})") from exc
    if isinstance(entry, dict) and ("test_result" in entry or "history" in entry):
        return "openhands"
    return "swebench"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc.msg})") from exc


def _jsonl(path: Path) -> list[dict]:
    try:
        rows = io.read_jsonl(path)
    except ValueError as exc:
        raise ImportFormatError(str(exc)) from exc
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("instance_id"), str):
            raise ImportFormatError(f"{path}:{number}: entry has no instance_id")
    return rows


def read_swebench(path: Path) -> list[Imported]:
    rows = _load_json(path) if path.suffix == ".json" else _jsonl(path)
    out = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "instance_id" not in row or "model_patch" not in row:
            raise ImportFormatError(f"{path}: entry {number} lacks instance_id or model_patch")
        out.append(Imported(row["instance_id"], row["model_patch"] or ""))
    return out


def read_mini(path: Path, trajectories: Path | None = None) -> list[Imported]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ImportFormatError(f"{path}: a mini-swe-agent preds.json maps instance ids to predictions")
    traj_root = Path(trajectories) if trajectories else path.parent
    out = []
    for iid, entry in sorted(data.items()):
        if not isinstance(entry, dict) or "model_patch" not in entry:
            raise ImportFormatError(f"{path}: entry {iid} lacks model_patch")
        item = Imported(iid, entry.get("model_patch") or "")
        traj = traj_root / iid / f"{iid}.traj.json"
        if traj.exists():
            _apply_mini_trajectory(item, _load_json(traj))
        out.append(item)
    return out


_MINI_STATUS = {"Submitted": "ok", "TimeExceeded": "timeout"}


def _apply_mini_trajectory(item: Imported, traj: dict) -> None:
    info = traj.get("info") or {}
    exit_status = info.get("exit_status") or ""
    item.status = _MINI_STATUS.get(exit_status, "error" if exit_status else "ok")
    if item.status != "ok":
        item.error_kind = exit_status
        item.error = f"mini-swe-agent exit status {exit_status}"
    stats = info.get("model_stats") or {}
    item.n_calls = stats.get("api_calls")
    assistant = [m for m in traj.get("messages") or [] if isinstance(m, dict) and m.get("role") == "assistant"]
    item.steps = len(assistant)
    actions = [len((m.get("extra") or {}).get("actions") or []) for m in assistant]
    item.tool_calls = sum(actions) if any("actions" in (m.get("extra") or {}) for m in assistant) else None
    usages = [((m.get("extra") or {}).get("response") or {}) for m in assistant]
    usages = [r.get("usage") for r in usages if isinstance(r, dict) and isinstance(r.get("usage"), dict)]
    if usages:
        item.usage["prompt_tokens"] = sum(u.get("prompt_tokens") or 0 for u in usages)
        item.usage["completion_tokens"] = sum(u.get("completion_tokens") or 0 for u in usages)
        cached = [(u.get("prompt_tokens_details") or {}).get("cached_tokens") for u in usages]
        reasoning = [(u.get("completion_tokens_details") or {}).get("reasoning_tokens") for u in usages]
        item.usage["cached_tokens"] = sum(c for c in cached if c) if any(c is not None for c in cached) else None
        item.usage["reasoning_tokens"] = (
            sum(r for r in reasoning if r) if any(r is not None for r in reasoning) else None
        )
    if stats.get("instance_cost") is not None:
        item.usage["cost_usd"] = float(stats["instance_cost"])
    stamps = [(m.get("extra") or {}).get("timestamp") for m in traj.get("messages") or [] if isinstance(m, dict)]
    stamps = [s for s in stamps if isinstance(s, (int, float))]
    if len(stamps) >= 2:
        item.started_at, item.finished_at = _iso(min(stamps)), _iso(max(stamps))
        item.duration_s = round(max(stamps) - min(stamps), 3)


def read_openhands(path: Path) -> list[Imported]:
    out = []
    for row in _jsonl(path):
        result = row.get("test_result") or {}
        item = Imported(row["instance_id"], result.get("git_patch") or "")
        if row.get("error"):
            item.status, item.error_kind = "error", "agent_error"
            item.error = str(row["error"]).strip().splitlines()[0][:300] if str(row["error"]).strip() else "error"
        history = row.get("history")
        if isinstance(history, list):
            actions = [e for e in history if isinstance(e, dict) and e.get("action") and e.get("source") == "agent"]
            item.steps = len(actions)
            item.tool_calls = sum(1 for e in actions if e.get("tool_call_metadata"))
        metrics = row.get("metrics") or {}
        if metrics.get("accumulated_cost") is not None:
            item.usage["cost_usd"] = float(metrics["accumulated_cost"])
        tokens = metrics.get("accumulated_token_usage") or {}
        for ours, theirs in (
            ("prompt_tokens", "prompt_tokens"),
            ("completion_tokens", "completion_tokens"),
            ("cached_tokens", "cache_read_tokens"),
        ):
            if tokens.get(theirs) is not None:
                item.usage[ours] = int(tokens[theirs])
        if isinstance(metrics.get("costs"), list):
            item.n_calls = len(metrics["costs"])
        out.append(item)
    return out


def read_predictions(path: str | Path, fmt: str = "auto", trajectories: str | Path | None = None) -> list[Imported]:
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "swebench":
        items = read_swebench(path)
    elif fmt == "mini-swe-agent":
        items = read_mini(path, Path(trajectories) if trajectories else None)
    elif fmt == "openhands":
        items = read_openhands(path)
    else:
        raise ImportFormatError(f"{path}: unknown format {fmt!r} (known: auto, {', '.join(FORMATS)})")
    seen: set[str] = set()
    for item in items:
        if item.instance_id in seen:
            raise ImportFormatError(f"{path}: instance {item.instance_id} appears twice")
        seen.add(item.instance_id)
    return items


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------- writing


def cell_record(item: Imported, model: str, repo: str, attempt: int) -> CellRecord:
    """An imported attempt as the run folder's cell record, mode "import"."""
    return CellRecord(
        model=model,
        instance_id=item.instance_id,
        repo=repo,
        attempt=attempt,
        mode="import",
        status=item.status,
        error_kind=item.error_kind,
        error=item.error,
        model_patch=item.model_patch,
        oracle=False,
        started_at=item.started_at,
        finished_at=item.finished_at,
        duration_s=item.duration_s,
        steps=item.steps,
        tool_calls=item.tool_calls,
        n_calls=item.n_calls,
        usage=Usage.from_mapping(item.usage),
    )


def import_predictions(
    run_dir: str | Path,
    model: str,
    source: str | Path,
    instances: list[dict],
    attempt: int = 1,
    fmt: str = "auto",
    trajectories: str | Path | None = None,
) -> ImportSummary:
    """Write one cell per run instance found in `source` and the official predictions file for
    (model, attempt). Instances outside the run are left out and listed; run instances absent from the
    source get no cell (listed as missing)."""
    layout = RunLayout(run_dir)
    fmt_used = detect_format(source) if fmt == "auto" else fmt
    items = read_predictions(source, fmt_used, trajectories)
    repos = {row["instance_id"]: row["repo"] for row in instances}
    written, predictions = [], []
    for item in sorted(items, key=lambda i: i.instance_id):
        if item.instance_id not in repos:
            continue
        too_large = size_refusal(item.model_patch)
        if too_large:  # the source file keeps the one copy; the run folder keeps the reason
            item = dataclasses.replace(item, model_patch="", status="malformed", error=too_large,
                                       error_kind="patch_too_large")
        layout.write_cell(cell_record(item, model, repos[item.instance_id], attempt))
        predictions.append(
            {"instance_id": item.instance_id, "model_name_or_path": model, "model_patch": item.model_patch}
        )
        written.append(item.instance_id)
    found = {item.instance_id for item in items}
    path = layout.write_predictions(model, attempt, predictions) if predictions else None
    return ImportSummary(
        model=model,
        attempt=attempt,
        source=str(source),
        format=fmt_used,
        written=written,
        not_in_run=sorted(found - set(repos)),
        missing=sorted(set(repos) - found),
        predictions_path=path,
    )


def import_for_params(params: Any, instances: list[dict], run_dir: str | Path | None = None) -> list[ImportSummary]:
    """Import every `kind: import` model of the params (options: path or paths, format, trajectories)."""
    run_dir = Path(run_dir or params.run_dir)
    summaries = []
    for model in params.models:
        if model.kind != "import":
            continue
        options = model.options
        paths = options.paths or ([options.path] if options.path else [])
        if not paths:
            raise ImportFormatError(f"{params.source_file}: model {model.name}: options.path or options.paths needed")
        first = options.attempt
        for offset, source in enumerate(paths):
            summaries.append(
                import_predictions(
                    run_dir,
                    model.name,
                    params.resolve_path(source),
                    instances,
                    attempt=first + offset,
                    fmt=options.format,
                    trajectories=params.resolve_path(options.trajectories) if options.trajectories else None,
                )
            )
    return summaries
