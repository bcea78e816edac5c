"""The run folder is a typed contract: `RunLayout` owns every path under `outputs/<run_id>/`, and the records
that cross between stages (`CellRecord`, `CallRecord`, `Verdict`) are written and read here and nowhere else.

Model and attempt are data: a predictions file is listed in `predictions/index.json` with its model and
attempt, and every evaluation folder holds a `meta.json` naming them. Nothing is parsed back from a file name.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swelab.io import append_jsonl, atomic_write_text, read_json, read_jsonl, write_json, write_jsonl

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd")
CELL_STATUSES = ("ok", "malformed", "timeout", "provider_error", "skipped", "error")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+@=-]*$")


class RunFolderError(ValueError):
    """A file of the run folder that does not hold what the contract says; the message names the file."""


def model_dirname(name: str) -> str:
    """A model's folder name: '/' (as in `Qwen/Qwen3-8B`) becomes '__'; anything that could leave the folder
    (`..`, absolute paths, other separators) is refused."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or not all(_SAFE_NAME.match(part) for part in parts):
        raise RunFolderError(f"model name {name!r} cannot be a folder name (letters, digits, . _ + @ = - and '/')")
    return "__".join(parts)


def _check_instance_id(instance_id: str) -> str:
    if not isinstance(instance_id, str) or not _SAFE_NAME.match(instance_id):
        raise RunFolderError(f"instance id {instance_id!r} cannot be a folder name")
    return instance_id


@dataclass
class Usage:
    """Tokens and cost of an attempt or a call; None where the provider did not report it."""

    prompt_tokens: int | None = None
    """Input tokens, as the provider reported them."""
    completion_tokens: int | None = None
    """Output tokens."""
    cached_tokens: int | None = None
    """Input tokens served from the provider's prompt cache."""
    reasoning_tokens: int | None = None
    """Output tokens spent on hidden reasoning."""
    cost_usd: float | None = None
    """Cost in US dollars as the provider reported it (OpenRouter), else None (analysis may price it)."""

    @classmethod
    def from_mapping(cls, data: Any) -> Usage:
        data = data if isinstance(data, dict) else {}
        return cls(**{name: data.get(name) for name in USAGE_FIELDS})

    def add(self, other: Usage) -> Usage:
        """The sum of two usages; a field stays None only where both are None."""
        def plus(a: Any, b: Any) -> Any:
            return b if a is None else a if b is None else a + b

        return Usage(**{name: plus(getattr(self, name), getattr(other, name)) for name in USAGE_FIELDS})


@dataclass
class CellRecord:
    """One finished attempt of one model on one instance: `cells/<model>/<instance>/<attempt>.json`."""

    model: str
    """The model entry's name (the leaderboard's row)."""
    instance_id: str
    """The SWE-bench instance attempted."""
    repo: str
    """owner/name of the instance's repository (for per-repo breakdowns)."""
    attempt: int
    """1-based attempt number, 1..K."""
    mode: str
    """How the patch was made: builtin | patch | shell | mini-swe-agent | import."""
    status: str
    """ok | malformed | timeout | provider_error | skipped | error; anything but ok is a run failure."""
    error_kind: str | None = None
    """The normalized reason of a failure (a provider error kind, server_crashed, model_unavailable…)."""
    error: str | None = None
    """One redacted line saying what went wrong, or None."""
    model_patch: str = ""
    """The unified diff submitted for grading ("" when none)."""
    oracle: bool = False
    """Saw what a real agent cannot (the gold patch or its files): kept out of fair comparisons."""
    started_at: str | None = None
    """ISO-8601 UTC time the attempt's clock started."""
    finished_at: str | None = None
    """ISO-8601 UTC time it ended."""
    duration_s: float = 0.0
    """Wall-clock seconds of the attempt."""
    steps: int = 0
    """Model turns."""
    tool_calls: int = 0
    """Tool or command executions (shell modes)."""
    n_calls: int = 0
    """Model API calls (including failed ones)."""
    usage: Usage = field(default_factory=Usage)
    """Tokens and cost summed over the attempt's calls."""
    program_id: str | None = None
    """The agent program id sent to a program-aware router (ThunderAgent), fresh for every redo."""
    probe_files: list[str] | None = None
    """Contamination probe cells only (kind probe): the files the model named from the issue text alone,
    scored against the gold patch's files in analysis; None for every other kind."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["usage"] = dataclasses.asdict(self.usage)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str | Path) -> CellRecord:
        if not isinstance(data, dict):
            raise RunFolderError(f"{where}: a cell must be a JSON object")
        for name in ("model", "instance_id", "attempt", "status"):
            if data.get(name) in (None, ""):
                raise RunFolderError(f"{where}: cell is missing required field {name!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("repo", "")
        values.setdefault("mode", "")
        values["attempt"] = int(values["attempt"])
        values["usage"] = Usage.from_mapping(data.get("usage"))
        values["model_patch"] = values.get("model_patch") or ""
        values["oracle"] = bool(values.get("oracle"))
        return cls(**values)


@dataclass
class CallRecord:
    """One logical model call (retries included): a line of `cells/<model>/<instance>/<attempt>/calls.jsonl`."""

    model: str
    """The model entry's name."""
    instance_id: str
    """The instance of the attempt that made the call."""
    attempt: int
    """The attempt number."""
    program_id: str
    """The agent program this call belongs to (one per attempt)."""
    call_index: int
    """1-based order of the call within the attempt."""
    started_at: float
    """Epoch seconds when the call started."""
    ended_at: float
    """Epoch seconds when it ended (after retries)."""
    latency_s: float | None = None
    """Seconds of the last HTTP attempt."""
    wall_s: float | None = None
    """Seconds including retries and backoff."""
    ttft_s: float | None = None
    """Time to first token (streaming only)."""
    prompt_tokens: int | None = None
    """Input tokens; None where unreported."""
    completion_tokens: int | None = None
    """Output tokens; None where unreported."""
    cached_tokens: int | None = None
    """Cached input tokens; None where unreported."""
    reasoning_tokens: int | None = None
    """Reasoning tokens; None where unreported."""
    cost_usd: float | None = None
    """Provider-reported cost, else None."""
    token_source: str | None = None
    """Where prompt/completion tokens came from: provider (reported usage) | tokenizer (the model's own, counted
    by swelab.generate.tokens) | approx (chars/4); None for a call with no tokens (a failed call)."""
    error_kind: str | None = None
    """Normalized error kind of a failed call."""
    error: str | None = None
    """One redacted line of the failure."""
    http_status: int | None = None
    """HTTP status of a failed call."""
    retries: int = 0
    """How many times the call was retried."""
    retried_for: list[str] = field(default_factory=list)
    """The kind of every failure that was retried, in order."""
    finish_reason: str | None = None
    """The model's finish reason (stop, length, tool_calls…)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Verdict:
    """The official grading of one prediction: `eval/<model>__a<k>/<instance>/report.json` + the set's meta."""

    model: str
    """The model entry's name."""
    attempt: int
    """The attempt whose patch was graded."""
    instance_id: str
    """The graded instance."""
    resolved: bool
    """swebench's verdict: every FAIL_TO_PASS and PASS_TO_PASS test passes."""
    patch_applied: bool
    """The patch applied with the official fallbacks."""
    eval_label: str | None = None
    """Which backend graded it (official harness in Docker, or the local environment)."""


@dataclass(frozen=True)
class PredictionSet:
    """One official predictions file: the patches of one model's attempt k."""

    model: str
    attempt: int
    path: Path


class RunLayout:
    """Every path of one run folder, and the one reader and writer of each record."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = threading.Lock()

    # -- fixed files ---------------------------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def instances(self) -> Path:
        return self.root / "instances.jsonl"

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def discrimination(self) -> Path:
        return self.eval_dir / "discrimination.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def thunderagent_dir(self) -> Path:
        return self.root / "thunderagent"

    @property
    def charts_dir(self) -> Path:
        return self.root / "charts"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def leaderboard_parquet(self) -> Path:
        return self.root / "leaderboard.parquet"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    # -- cells ---------------------------------------------------------------------------------------
    def cell_path(self, model: str, instance_id: str, attempt: int) -> Path:
        return self.cells_dir / model_dirname(model) / _check_instance_id(instance_id) / f"{int(attempt)}.json"

    def attempt_dir(self, model: str, instance_id: str, attempt: int) -> Path:
        """Where an attempt's calls.jsonl and trajectory.jsonl go."""
        return self.cell_path(model, instance_id, attempt).with_suffix("")

    def calls_path(self, model: str, instance_id: str, attempt: int) -> Path:
        return self.attempt_dir(model, instance_id, attempt) / "calls.jsonl"

    def server_log(self, model: str) -> Path:
        return self.logs_dir / f"{model_dirname(model)}-server.log"

    def write_cell(self, record: CellRecord) -> Path:
        return write_json(self.cell_path(record.model, record.instance_id, record.attempt), record.to_dict())

    def read_cell(self, model: str, instance_id: str, attempt: int) -> CellRecord | None:
        path = self.cell_path(model, instance_id, attempt)
        return self._load_cell(path) if path.exists() else None

    def _load_cell(self, path: Path) -> CellRecord:
        try:
            data = read_json(path)
        except json.JSONDecodeError as exc:
            raise RunFolderError(f"{path}: cell file is not valid JSON ({exc.msg})") from exc
        return CellRecord.from_dict(data, path)

    def cells(self) -> list[CellRecord]:
        """Every finished attempt of the run (cell files sit exactly three levels under cells/)."""
        paths = sorted(p for p in self.cells_dir.glob("*/*/*.json") if p.is_file())
        return [self._load_cell(path) for path in paths]

    def keep_previous_calls(self, model: str, instance_id: str, attempt: int) -> Path | None:
        """A redone attempt keeps the calls of the run it replaces (renamed calls.prev-N.jsonl), so nothing
        already paid for is lost; the new attempt starts a fresh calls.jsonl."""
        current = self.calls_path(model, instance_id, attempt)
        if not current.exists():
            return None
        n = 1
        while (kept := current.with_name(f"calls.prev-{n}.jsonl")).exists():
            n += 1
        current.rename(kept)
        return kept

    # -- calls ---------------------------------------------------------------------------------------
    @staticmethod
    def append_call(path: Path, record: CallRecord) -> None:
        append_jsonl(path, record.to_dict())

    def calls(self) -> list[dict[str, Any]]:
        """Every call of the run (current attempts only), each line as written (a CallRecord's fields)."""
        rows: list[dict[str, Any]] = []
        for record in self.cells():
            path = self.calls_path(record.model, record.instance_id, record.attempt)
            if path.exists():
                for line in read_jsonl(path):
                    rows.append({**line, "model": record.model, "instance_id": record.instance_id,
                                 "attempt": record.attempt})
        return rows

    # -- predictions ---------------------------------------------------------------------------------
    @property
    def predictions_index(self) -> Path:
        return self.predictions_dir / "index.json"

    def predictions_path(self, model: str, attempt: int) -> Path:
        return self.predictions_dir / f"{model_dirname(model)}__a{int(attempt)}.jsonl"

    def write_predictions(self, model: str, attempt: int, rows: list[dict]) -> Path:
        """An official predictions file, listed in the index with its model and attempt."""
        path = write_jsonl(self.predictions_path(model, attempt), rows)
        with self._lock:
            index = self._index()
            index[f"{model}\x00{attempt}"] = {"model": model, "attempt": int(attempt), "file": path.name}
            write_json(self.predictions_index, sorted(index.values(), key=lambda e: (e["model"], e["attempt"])))
        return path

    def _index(self) -> dict[str, dict]:
        if not self.predictions_index.exists():
            return {}
        entries = read_json(self.predictions_index)
        if not isinstance(entries, list):
            raise RunFolderError(f"{self.predictions_index}: must be a list of {{model, attempt, file}}")
        return {f"{e['model']}\x00{e['attempt']}": e for e in entries}

    def prediction_sets(self) -> list[PredictionSet]:
        """Every predictions file of the run with its model and attempt, from the index."""
        return [PredictionSet(e["model"], int(e["attempt"]), self.predictions_dir / e["file"])
                for e in sorted(self._index().values(), key=lambda e: (e["model"], e["attempt"]))]

    # -- verdicts ------------------------------------------------------------------------------------
    def eval_set_dir(self, model: str, attempt: int) -> Path:
        return self.eval_dir / f"{model_dirname(model)}__a{int(attempt)}"

    def verdict_dir(self, model: str, attempt: int, instance_id: str) -> Path:
        return self.eval_set_dir(model, attempt) / _check_instance_id(instance_id)

    def has_verdict(self, model: str, attempt: int, instance_id: str) -> bool:
        return (self.verdict_dir(model, attempt, instance_id) / "report.json").exists()

    def write_eval_meta(self, model: str, attempt: int, label: str, backend: str) -> Path:
        """Who the verdicts of one predictions file belong to, and which backend graded them."""
        return write_json(self.eval_set_dir(model, attempt) / "meta.json",
                          {"model": model, "attempt": int(attempt), "eval_label": label, "backend": backend})

    def write_verdict(self, model: str, attempt: int, instance_id: str, report: dict, log: str | None) -> Path:
        """swebench's get_eval_report entry for one instance (and the graded log when there is one)."""
        folder = self.verdict_dir(model, attempt, instance_id)
        if log is not None:
            atomic_write_text(folder / "test_output.txt", log)
        return write_json(folder / "report.json", {instance_id: report})

    def read_report(self, model: str, attempt: int, instance_id: str) -> dict | None:
        path = self.verdict_dir(model, attempt, instance_id) / "report.json"
        return _report_entry(path, instance_id) if path.exists() else None

    def verdicts(self) -> list[Verdict]:
        """Every graded prediction, model and attempt read from each evaluation folder's meta.json."""
        rows: list[Verdict] = []
        for meta_path in sorted(self.eval_dir.glob("*/meta.json")):
            meta = read_json(meta_path)
            for report in sorted(meta_path.parent.glob("*/report.json")):
                entry = _report_entry(report, report.parent.name)
                rows.append(Verdict(
                    model=meta["model"], attempt=int(meta["attempt"]), instance_id=report.parent.name,
                    resolved=bool(entry["resolved"]),
                    patch_applied=bool(entry.get("patch_successfully_applied", False)),
                    eval_label=meta.get("eval_label"),
                ))
        return rows


def _report_entry(path: Path, instance_id: str) -> dict:
    try:
        report = read_json(path)
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: eval report is not valid JSON ({exc.msg})") from exc
    if not isinstance(report, dict) or not report:
        raise RunFolderError(f"{path}: eval report must be a non-empty object keyed by instance_id")
    entry = report.get(instance_id)
    if entry is None and len(report) == 1:
        entry = next(iter(report.values()))
    if not isinstance(entry, dict) or "resolved" not in entry:
        raise RunFolderError(f"{path}: no entry with a 'resolved' field for instance {instance_id!r}")
    return entry
