"""Where the swelab project is: the checkout this package was installed from, else the working directory.

Never guessed from where a params file sits, so a params file in /tmp finds the same notebooks, params/models and
pricing as one in params/.
"""

from __future__ import annotations

from pathlib import Path

# lib/swelab in a checkout (an editable install); site-packages/swelab otherwise
PACKAGE_DIR = Path(__file__).resolve().parent
STAGE_NOTEBOOKS = ("01_select", "02_generate", "03_evaluate", "04_analyze")


class ProjectNotFound(FileNotFoundError):
    """No swelab project (its notebooks/) where this package or the working directory is."""


def package_project(package_dir: Path | None = None) -> Path | None:
    """The checkout that holds this package as lib/swelab, or None for a non-editable install."""
    package_dir = package_dir or PACKAGE_DIR
    root = package_dir.parent.parent
    if package_dir.parent.name == "lib" and (root / "pyproject.toml").is_file():
        return root
    return None


def project_root(cwd: Path | None = None, package_dir: Path | None = None) -> Path:
    """The installed package's checkout when there is one, else the working directory."""
    return package_project(package_dir) or (cwd or Path.cwd()).resolve()


def notebooks_dir(cwd: Path | None = None, package_dir: Path | None = None) -> Path:
    """The stage notebooks: <project_root>/notebooks; the error names every place looked at."""
    tried = [root / "notebooks" for root in dict.fromkeys(
        p for p in (package_project(package_dir), (cwd or Path.cwd()).resolve()) if p is not None)]
    for folder in tried:
        if (folder / f"{STAGE_NOTEBOOKS[0]}.ipynb").is_file():
            return folder
    raise ProjectNotFound(
        f"no swelab notebooks found (looked for {STAGE_NOTEBOOKS[0]}.ipynb in {', '.join(map(str, tried))}): "
        "install swelab from its checkout (pip install -e .) or run from the project folder")
