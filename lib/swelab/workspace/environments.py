"""One Python environment per (repo, version): what it is built from, and how."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from swelab.workspace import recipes

# What a test process may see of our environment: nothing that could hold a secret.
SAFE_ENV_KEYS = ("LANG", "LC_ALL", "TZ", "TERM")
# A row may ask for the plain pure-Python environment (what the bundled tasks use) with env_recipe.
PYTEST_VENV = "pytest-venv"


@dataclass(frozen=True)
class Environment:
    """A Python environment for one (repo, version): its interpreter's bin dir goes first on PATH."""

    key: str
    path: Path
    variables: tuple[tuple[str, str], ...] = ()  # what the recipe wants set for every command

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    def readable_paths(self) -> list[Path]:
        """Host folders a sandboxed command needs to see to use this environment: the environment itself and
        any folder its .pth files add (a sandbox may hide them, e.g. under a private /tmp)."""
        paths = [self.path]
        for pth in self.path.glob("lib/python*/site-packages/*.pth"):
            for line in pth.read_text(encoding="utf-8").splitlines():
                candidate = Path(line.strip())
                if candidate.is_absolute() and candidate.is_dir():
                    paths.append(candidate)
        return paths

    def process_env(self, home: Path) -> dict[str, str]:
        env = {key: os.environ[key] for key in SAFE_ENV_KEYS if key in os.environ}
        env.update(
            PATH=f"{self.bin_dir}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
            VIRTUAL_ENV=str(self.path),
            HOME=str(home),
            PYTHONDONTWRITEBYTECODE="1",
            GIT_CONFIG_NOSYSTEM="1",
        )
        env.update(self.variables)
        return env


def uses_pytest_venv(instance: dict) -> bool:
    """The bundled tasks, and any row that asks for it, run in the plain pure-Python environment."""
    return instance["repo"].startswith("minibench/") or instance.get("env_recipe") == PYTEST_VENV


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def one_line(message: str, limit: int = 400) -> str:
    """An error as one readable line: ANSI escapes (pip's colours) removed, lines joined, cut to `limit`."""
    text = " | ".join(line.strip() for line in ANSI_ESCAPE.sub("", message).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def environment_key(instance: dict) -> str:
    """The folder an instance's environment lives in: one per (repo, version), and one per distinct pin set
    where a row carries its own pins (instances that pin the same set share it)."""
    key = f"{instance['repo'].replace('/', '__')}__{instance['version']}"
    pins = recipes.instance_pins(instance)
    if pins:
        key += "__" + hashlib.sha256(json.dumps(pins).encode()).hexdigest()[:10]
    if recipes.install_commit(instance):
        key += "__" + recipes.install_commit(instance)[:10]
    return key


def environment_identity(instance: dict) -> str:
    """What an environment was built from; a change means a rebuild."""
    if uses_pytest_venv(instance):
        return f"{PYTEST_VENV} {sys.executable} {_pytest_home()}\n"
    # the recipe itself too: a changed recipe (a pin, a step) rebuilds the environments made by the old one
    recipe = recipes.RECIPES.get((instance["repo"], str(instance["version"])))
    content = [repr(recipe), recipes.instance_pins(instance), instance.get("environment_setup_commit"),
               recipes.install_commit(instance)]
    if recipe is not None and recipe.identity_variables:
        content.append([os.environ.get(name, "") for name in recipe.identity_variables])
    fingerprint = hashlib.sha256(repr(content).encode()).hexdigest()[:12]
    return f"recipe {instance['repo']} {instance['version']} {fingerprint}\n"


def build_environment(instance: dict, path: Path, ensure_commit: Callable[[str, str], Path]) -> None:
    """Bundled tasks are pure Python with pytest: a venv that borrows the workbench's pytest, so the demo
    needs no network. Real repositories get their recipe from swelab.workspace.recipes."""
    shutil.rmtree(path, ignore_errors=True)
    if uses_pytest_venv(instance):
        _pytest_venv(path)
        return
    recipes.build_environment(instance, path, ensure_commit)


def _pytest_home() -> Path:
    """The site-packages folder that holds the workbench's pytest (found without importing it)."""
    spec = find_spec("pytest")
    if spec is None or spec.origin is None:
        raise RuntimeError("pytest is not installed: the bundled tasks' environment borrows it")
    return Path(spec.origin).resolve().parent.parent


def _pytest_venv(path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    site = next(path.glob("lib/python*/site-packages"))
    pytest_home = _pytest_home()
    (site / "swelab-pytest.pth").write_text(f"{pytest_home}\n")
    # The borrowed site-packages holds the workbench's own pytest plugins (nbval…): plain pytest is all the
    # bundled repos need, and loading those plugins costs seconds per test run.
    (path / "swelab-env.json").write_text(json.dumps({"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}))
