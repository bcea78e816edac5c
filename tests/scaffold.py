"""Test helper: a throwaway project folder, laid out as swelab finds its project root."""

from __future__ import annotations

import shutil
import subprocess
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


def chromium_dom(browser: str, page_uri: str, profile: Path, budget_ms: int = 15000) -> str:
    """The DOM of a page after headless Chromium ran its scripts for `budget_ms` of virtual time."""
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
         f"--virtual-time-budget={budget_ms}", "--dump-dom", page_uri],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
