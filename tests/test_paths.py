"""swelab.paths: the project is the checkout the package was installed from, else the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from swelab import paths

PROJECT = Path(__file__).resolve().parents[1]


def test_the_editable_install_names_this_checkout(tmp_path):
    assert paths.package_project() == PROJECT
    assert paths.project_root(cwd=tmp_path) == PROJECT          # wherever the command runs from
    assert paths.notebooks_dir(cwd=tmp_path) == PROJECT / "notebooks"


def test_an_installed_package_falls_back_to_the_working_directory(tmp_path):
    site = tmp_path / "site-packages" / "swelab"
    assert paths.package_project(site) is None
    assert paths.project_root(cwd=tmp_path, package_dir=site) == tmp_path.resolve()
    with pytest.raises(paths.ProjectNotFound, match="01_select.ipynb") as error:
        paths.notebooks_dir(cwd=tmp_path, package_dir=site)
    assert str(tmp_path / "notebooks") in str(error.value)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_select.ipynb").write_text("{}")
    assert paths.notebooks_dir(cwd=tmp_path, package_dir=site) == tmp_path.resolve() / "notebooks"
