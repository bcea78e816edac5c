"""Django's local recipes against swebench 4.1.0's SPECS_DJANGO, and how tests/near_base_check.py picks the source
release that stands in for a Django row (no network: PyPI's listing and the downloads are stood in)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from swelab.workspace import recipes

sys.path.insert(0, str(Path(__file__).parent))  # tests/, for near_base_check
import near_base_check  # noqa: E402

REPO = "django/django"
# swebench v4.1.0 harness/constants/python.py, SPECS_DJANGO: the Python of each version SWE-bench Lite has
SPEC_PYTHON = {"3.0": "3.6", "3.1": "3.6", "3.2": "3.6", "4.0": "3.8", "4.1": "3.9", "4.2": "3.9", "5.0": "3.11"}


def row(version: str, created: str = "2019-03-03T00:00:00Z", iid: str = "django__django-1") -> dict:
    return {"repo": REPO, "version": version, "instance_id": iid, "created_at": created, "test_patch": "T",
            "patch": "P", "base_commit": "0" * 40}


@pytest.mark.parametrize("version", sorted(SPEC_PYTHON))
def test_recipe_follows_the_spec(version: str) -> None:
    recipe = recipes.recipe_for(row(version))
    assert recipe.python == SPEC_PYTHON[version]
    assert recipe.install == "python -m pip install -e ."
    assert recipe.requirements and recipes.REQS_PATHS[REPO] == ("tests/requirements/py3.txt",)
    # only 3.x's spec sets the en_US.UTF-8 locale (its eval_commands); the environment builds it when missing
    assert (recipe.locale == "en_US.UTF-8") == version.startswith("3.")


def test_eval_script_runs_the_touched_modules_by_name() -> None:
    stand_in = dict(row("3.0"), test_patch=(
        "diff --git a/tests/model_fields/test_durationfield.py b/tests/model_fields/test_durationfield.py\n"
        "--- a/tests/model_fields/test_durationfield.py\n+++ b/tests/model_fields/test_durationfield.py\n"
        "@@ -1 +1 @@\n-a\n+b\n"))
    script = recipes.eval_script_for(stand_in)
    assert f"{recipes.TEST_DJANGO} model_fields.test_durationfield\n" in script
    assert "export LC_ALL=en_US.UTF-8" in script and "locale-gen" not in script  # the machine is left alone


def test_line_before() -> None:
    lines = ["1.11", "2.0", "2.1", "2.2", "3.0", "3.1", "10.0"]
    assert near_base_check.line_before("3.0", lines) == "2.2"
    assert near_base_check.line_before("3.10", ["3.2", "3.9", "3.10"]) == "3.9"  # numeric, not text, order
    assert near_base_check.line_before("1.11", lines) is None


def test_nearest_release_tries_the_line_before_ahead_of_older_lines(monkeypatch, tmp_path) -> None:
    """A 3.0 row made in March 2019 (3.0 was released in December): no 3.0.x release takes its patches, so the
    2.2 line (forked from the branch that became 3.0) comes before 2.1.7/2.0.13, which merely came out nearest."""
    releases = [("2019-02-11T10:00:00", "Django-2.0.13.tar.gz", "u/2.0.13"),
                ("2019-02-11T11:00:00", "Django-2.1.7.tar.gz", "u/2.1.7"),
                ("2019-04-01T10:00:00", "Django-2.2.tar.gz", "u/2.2"),
                ("2019-12-02T10:00:00", "Django-3.0.tar.gz", "u/3.0"),
                ("2020-01-02T10:00:00", "Django-3.0.2.tar.gz", "u/3.0.2")]
    tried: list[str] = []
    monkeypatch.setattr(near_base_check, "source_releases", lambda name: releases)
    monkeypatch.setattr(near_base_check, "repository_from",
                        lambda url, folder: (tmp_path / url.rsplit("/", 1)[-1], "c" + url.rsplit("/", 1)[-1]))

    def applies(repo: Path, *patches: str) -> bool:
        tried.append(repo.name)
        return repo.name in ("2.0.13", "2.2")

    monkeypatch.setattr(near_base_check, "applies", applies)
    found = near_base_check.nearest_release(row("3.0"), tmp_path)
    assert found == ("Django-2.2.tar.gz", tmp_path / "2.2", "c2.2")
    assert tried == ["3.0", "3.0.2", "2.2"]  # the row's own line first, nearest its creation first
