"""A trajectory browser for notebooks: pick model / instance / attempt, read the steps, the diff, the
evaluation log. The text it shows is built by pure functions (testable without a kernel); only
`trajectory_browser` touches ipywidgets.

Paths come from `swelab.rundir.RunLayout`: the cell, its trajectory.jsonl, the graded log.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from swelab.rundir import RunLayout

MAX_SHOWN_CHARS = 4000  # per tool output in the step view; the files keep everything


def list_models(run_dir: Path) -> list[str]:
    return sorted({cell.model for cell in RunLayout(run_dir).cells()})


def list_instances(run_dir: Path, model: str) -> list[str]:
    return sorted({cell.instance_id for cell in RunLayout(run_dir).cells() if cell.model == model})


def list_attempts(run_dir: Path, model: str, instance_id: str) -> list[int]:
    return sorted({cell.attempt for cell in RunLayout(run_dir).cells()
                   if cell.model == model and cell.instance_id == instance_id})


def load_cell(run_dir: Path, model: str, instance_id: str, attempt: int) -> dict | None:
    record = RunLayout(run_dir).read_cell(model, instance_id, attempt)
    return None if record is None else record.to_dict()


def load_trajectory(run_dir: Path, model: str, instance_id: str, attempt: int) -> list[dict]:
    """The trajectory rows; a line that is not JSON (a run killed mid-write) becomes a note row."""
    path = RunLayout(run_dir).attempt_dir(model, instance_id, attempt) / "trajectory.jsonl"
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append({"event": "unreadable", "line": number})
    return rows


def eval_log_path(run_dir: Path, model: str, instance_id: str, attempt: int) -> Path:
    return RunLayout(run_dir).verdict_dir(model, attempt, instance_id) / "test_output.txt"


def _clip(text: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}\n[... {len(text) - limit} characters not shown ...]\n{text[-limit // 2:]}"


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    if isinstance(arguments, dict) and set(arguments) == {"command"}:
        return str(arguments["command"])
    return json.dumps(arguments, indent=1, ensure_ascii=False)


def format_step(row: dict) -> str:
    """One trajectory row as plain text."""
    event = row.get("event", "step")
    if event == "start":
        lines = [f"=== start ({row.get('mode', '?')} mode; tools: {', '.join(row.get('tools') or []) or '-'})"]
        for message in row.get("messages") or []:
            lines.append(f"--- {message.get('role')}\n{_clip(message.get('content'))}")
        return "\n".join(lines)
    if event == "end":
        notes = "; ".join(row.get("notes") or [])
        return (f"=== end: {row.get('exit_reason')} -> status {row.get('status')}"
                f" ({row.get('steps')} steps, {row.get('tool_calls')} tool calls, "
                f"{row.get('patch_bytes')} patch bytes)"
                + (f"\nerror: {row['error']}" if row.get("error") else "")
                + (f"\nnotes: {notes}" if notes else ""))
    if event == "unreadable":
        return f"=== line {row.get('line')} of trajectory.jsonl is not valid JSON"
    message = row.get("message") or {}
    lines = [f"=== step {row.get('step')} [{row.get('mode', '')}]"
             + (f" finish={row['finish_reason']}" if row.get("finish_reason") else "")]
    if row.get("reasoning"):
        lines.append(f"(reasoning) {_clip(row['reasoning'], 1500)}")
    if message.get("content"):
        lines.append(_clip(message["content"]))
    for action in row.get("actions") or []:
        status = "killed (timeout)" if action.get("timed_out") else f"exit {action.get('exit_code')}"
        lines.append(f"$ {action.get('tool')}: {_arguments_text(action.get('arguments'))}")
        lines.append(f"  [{status}, {action.get('duration_s')} s]")
        lines.append(_clip(action.get("output")))
    if row.get("note"):
        lines.append(f"(note) {row['note']}")
    return "\n".join(lines)


def format_trajectory(rows: list[dict]) -> str:
    return "\n\n".join(format_step(row) for row in rows) if rows else "(no trajectory for this attempt)"


def format_cell_summary(cell: dict | None) -> str:
    if cell is None:
        return "(no cell file: the attempt has not finished)"
    usage = cell.get("usage") or {}
    fields = [
        ("status", cell.get("status")), ("mode", cell.get("mode")), ("error", cell.get("error")),
        ("steps", cell.get("steps")), ("tool calls", cell.get("tool_calls")), ("model calls", cell.get("n_calls")),
        ("duration s", cell.get("duration_s")), ("prompt tokens", usage.get("prompt_tokens")),
        ("completion tokens", usage.get("completion_tokens")), ("cost usd", usage.get("cost_usd")),
    ]
    return "\n".join(f"{name}: {value}" for name, value in fields if value is not None)


def render_attempt(run_dir: Path, model: str, instance_id: str, attempt: int) -> dict[str, str]:
    """Everything the browser shows for one attempt, as plain text: summary, steps, diff, eval_log."""
    cell = load_cell(run_dir, model, instance_id, attempt)
    log_path = eval_log_path(run_dir, model, instance_id, attempt)
    diff = (cell or {}).get("model_patch") or "(empty patch)"
    if log_path.is_file():
        eval_log = log_path.read_text(encoding="utf-8", errors="replace")
    else:
        eval_log = f"(no evaluation log at {log_path.relative_to(run_dir)})"
    return {
        "summary": format_cell_summary(cell),
        "steps": format_trajectory(load_trajectory(run_dir, model, instance_id, attempt)),
        "diff": diff,
        "eval_log": eval_log,
    }


def _pre(text: str) -> str:
    return ("<pre style='white-space: pre-wrap; max-height: 600px; overflow-y: auto; font-size: 12px'>"
            f"{html.escape(text)}</pre>")


def trajectory_browser(run_dir: str | Path):
    """An ipywidgets UI: dropdowns model / instance / attempt; tabs summary, steps, diff, eval log."""
    import ipywidgets as widgets

    run_dir = Path(run_dir)
    model_box = widgets.Dropdown(description="model", options=list_models(run_dir))
    instance_box = widgets.Dropdown(description="instance")
    attempt_box = widgets.Dropdown(description="attempt")
    panes = {name: widgets.HTML() for name in ("summary", "steps", "diff", "eval_log")}
    tabs = widgets.Tab(children=list(panes.values()))
    for index, title in enumerate(("summary", "steps", "diff", "eval log")):
        tabs.set_title(index, title)

    def show(*_: Any) -> None:
        if model_box.value and instance_box.value and attempt_box.value is not None:
            texts = render_attempt(run_dir, model_box.value, instance_box.value, attempt_box.value)
        else:
            texts = dict.fromkeys(panes, "(nothing selected)")
        for name, pane in panes.items():
            pane.value = _pre(texts[name])

    def on_attempt(*_: Any) -> None:
        show()

    def on_instance(*_: Any) -> None:
        attempts = list_attempts(run_dir, model_box.value, instance_box.value) if instance_box.value else []
        attempt_box.options = attempts
        attempt_box.value = attempts[0] if attempts else None
        show()

    def on_model(*_: Any) -> None:
        instances = list_instances(run_dir, model_box.value) if model_box.value else []
        instance_box.options = instances
        instance_box.value = instances[0] if instances else None
        on_instance()

    model_box.observe(on_model, names="value")
    instance_box.observe(on_instance, names="value")
    attempt_box.observe(on_attempt, names="value")
    on_model()
    return widgets.VBox([widgets.HBox([model_box, instance_box, attempt_box]), tabs])
