"""Test helper: a throwaway project folder, laid out as swelab finds its project root."""

from __future__ import annotations

import shutil
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def write_params(root: Path, text: str, name: str = "p.yaml", notebooks: bool = False) -> Path:
    """root/pyproject.toml, root/params/<name> holding `text` (and root/notebooks when asked); the path."""
    (root / "pyproject.toml").write_text("")
    (root / "params").mkdir(exist_ok=True)
    if notebooks and not (root / "notebooks").exists():
        shutil.copytree(PROJECT / "notebooks", root / "notebooks")
    path = root / "params" / name
    path.write_text(text)
    return path
