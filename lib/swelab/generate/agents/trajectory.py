"""Every file an agent writes into its attempt folder goes through here, redacted.

A reply can carry a key back (a gateway that echoes the Authorization header, a model that repeats what it
was shown), and from there a tool call's arguments, a command's output, mini-swe-agent's message history. So
no agent calls `append_jsonl` / `write_json` itself: `append_row`, `write_document` and `keep_refused_patch`
pass every string through `providers.redact` first (the values of the provider registry's key variables and
token-looking strings), as calls.jsonl does. tests/test_secrets_in_trajectories.py checks that the agents
write through this module only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swelab.generate.providers import redact
from swelab.io import append_jsonl, atomic_write_text, write_json
from swelab.workspace.patches import size_refusal

TRAJECTORY = "trajectory.jsonl"  # one row per step, every agent
MINI_TRAJECTORY = "mini_trajectory.json"  # mini-swe-agent's own serialisation of its run
REFUSED_PATCH = "refused_patch.diff"  # a patch over the size cap, kept once (not in the cell or predictions)


def redacted(value: Any) -> Any:
    """`value` with every string in it (mapping keys included) redacted. Numbers, booleans and None stay; any
    other object becomes its redacted str() here, not later in json.dumps(default=str), where no one redacts."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redacted(key) if isinstance(key, str) else key: redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def append_row(path: Path, row: dict) -> None:
    """One trajectory line, redacted."""
    append_jsonl(path, redacted(row))


def write_document(path: Path, data: Any) -> None:
    """A whole JSON file (mini-swe-agent's trajectory), redacted, written atomically."""
    write_json(path, redacted(data))


def keep_refused_patch(cell_dir: Path, patch: str) -> Path:
    """The one stored copy of a patch refused for its size (redacted like the rest of the folder)."""
    path = Path(cell_dir) / REFUSED_PATCH
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, redact(patch))
    return path


def stored_patch(cell_dir: Path, patch: str, max_bytes: int) -> str:
    """The patch as the cell record (and so the predictions) keeps it: "" when it is over the cap, and then
    kept once, in REFUSED_PATCH."""
    if size_refusal(patch, max_bytes) is None:
        return patch
    keep_refused_patch(cell_dir, patch)
    return ""
