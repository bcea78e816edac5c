"""Sphinx rows take their Verified siblings' official image pins (swelab.workspace.recipes.sibling_environment),
and tests/fidelity/derive_pins.py records the instance versions that rule needs. No network."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from swelab.workspace import recipes
from swelab.workspace.environments import environment_identity, environment_key

sys.path.insert(0, str(Path(__file__).parent / "fidelity"))
import derive_pins  # noqa: E402 - tests/fidelity/derive_pins.py (a script, outside pytest's collection)

FIXTURE = Path(__file__).parent / "fixtures" / "swebench_lite_sample.jsonl"


def sphinx_row(instance_id: str, version: str) -> dict:
    """A Lite-shaped sphinx row: the fields the recipes read."""
    return {"instance_id": instance_id, "repo": "sphinx-doc/sphinx", "version": version,
            "base_commit": "0" * 40, "environment_setup_commit": "1" * 40}


@pytest.fixture
def table(monkeypatch):
    """Replace the recorded images by a small table (and forget the cached sibling choices around it)."""
    def use(entries: dict) -> None:
        monkeypatch.setattr(recipes, "_verified_pins", lambda: entries)
        recipes.sibling_environment.cache_clear()

    yield use
    recipes.sibling_environment.cache_clear()


def test_a_lite_row_without_its_own_record_takes_a_verified_siblings_pins():
    row = sphinx_row("sphinx-doc__sphinx-8435", "3.4")  # Lite, not Verified
    official = recipes.official_environment(row)
    assert official["sibling"] == "sphinx-doc__sphinx-8548"  # 8548 and 8551 share a set; 8459, 8475 differ
    assert "docutils==0.21.2" in official["pins"] and "pytest==8.3.3" in official["pins"]
    assert recipes.instance_pins(row) == tuple(recipes._verified_pins()["sphinx-doc__sphinx-8548"]["pins"])
    sibling = sphinx_row("sphinx-doc__sphinx-8548", "3.4")
    assert environment_key(row) == environment_key(sibling)  # one environment for the row and its sibling
    assert environment_identity(row) == environment_identity(sibling)
    steps = [argv for argv, _ in recipes.environment_steps(row, "/py", Path("/env"), None, Path("/src"))]
    assert any("docutils==0.21.2" in argv for argv in steps)


def test_every_lite_sphinx_version_has_a_verified_sibling_of_that_version():
    for version in "3.1 3.2 3.3 3.4 3.5 4.0 5.0 5.1".split():
        official = recipes.official_environment(sphinx_row("sphinx-doc__sphinx-1", version))
        assert official is not None, version
        assert recipes._verified_pins()[official["sibling"]]["version"] == version


def test_a_rows_own_record_wins_over_its_siblings():
    row = [json.loads(line) for line in FIXTURE.read_text().splitlines()
           if '"sphinx-doc__sphinx-8721"' in line][0]  # Verified itself
    official = recipes.official_environment(row)
    assert "sibling" not in official
    assert official["pins"] == recipes._verified_pins()["sphinx-doc__sphinx-8721"]["pins"]


def test_the_pin_set_most_siblings_share_wins_then_the_lowest_instance_number(table):
    table({
        "sphinx-doc__sphinx-30": {"python": "3.9", "pins": ["a==2"], "version": "3.4"},
        "sphinx-doc__sphinx-100": {"python": "3.9", "pins": ["a==1"], "version": "3.4"},
        "sphinx-doc__sphinx-200": {"python": "3.9", "pins": ["a==1"], "version": "3.4"},
        "sphinx-doc__sphinx-9": {"python": "3.9", "pins": ["a==9"], "version": "3.5"},
        "sphinx-doc__sphinx-8": {"python": "3.9", "pins": ["a==8"], "version": "3.5"},
        "sphinx-doc__sphinx-1": {"python": "3.9", "pins": ["a==0"]},  # no version recorded: never a sibling
    })
    assert recipes.sibling_environment("sphinx-doc/sphinx", "3.4") == {
        "python": "3.9", "pins": ["a==1"], "sibling": "sphinx-doc__sphinx-100"}
    assert recipes.sibling_environment("sphinx-doc/sphinx", "3.5")["sibling"] == "sphinx-doc__sphinx-8"  # a tie
    assert recipes.sibling_environment("sphinx-doc/sphinx", "4.0") is None
    assert recipes.instance_pins(sphinx_row("sphinx-doc__sphinx-5", "4.0")) == ()  # no sibling: the spec's


def test_only_recipes_that_ask_take_sibling_pins(table):
    table({"psf__requests-1": {"python": "3.9", "pins": ["pytest==7.4.4"], "version": "2.4"},
           "sphinx-doc__sphinx-2": {"python": "3.9", "pins": ["x==1"], "version": "2.4"}})
    assert not recipes.RECIPES[("psf/requests", "2.4")].sibling_pins
    assert recipes.RECIPES[("sphinx-doc/sphinx", "3.4")].sibling_pins
    requests = {"instance_id": "psf__requests-2", "repo": "psf/requests", "version": "2.4"}
    assert recipes.official_environment(requests) is None
    assert recipes.sibling_environment("psf/requests", "2.4")["sibling"] == "psf__requests-1"  # repo prefix kept
    assert recipes.official_environment(sphinx_row("sphinx-doc__sphinx-3", "2.4"))["sibling"] == "sphinx-doc__sphinx-2"


def test_derive_pins_records_versions_and_keeps_those_it_is_not_given(tmp_path):
    folder = tmp_path / "og"
    for name, number in (("sphinx-doc__sphinx", "10"), ("sphinx-doc__sphinx", "11")):
        (folder / name / number).mkdir(parents=True)
        (folder / name / number / "environment.yml").write_text(
            "dependencies:\n  - python=3.9.20=h1\n  - setuptools=75.1.0=py39h0\n  - pip:\n      - docutils==0.21.2\n")
    previous = {"sphinx-doc__sphinx-10": {"python": "3.9", "pins": [], "version": "3.4"}}
    table = derive_pins.derive(folder, {"sphinx-doc__sphinx-11": "3.5"}, previous)
    assert table["sphinx-doc__sphinx-10"] == {"python": "3.9", "pins": ["docutils==0.21.2", "setuptools==75.1.0"],
                                              "version": "3.4"}
    assert table["sphinx-doc__sphinx-11"]["version"] == "3.5"
    assert "version" not in derive_pins.derive(folder, {}, {})["sphinx-doc__sphinx-11"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"instance_id": "a", "version": "1.0"}) + "\n" + json.dumps({"instance_id": "b"}) + "\n")
    assert derive_pins.read_versions(rows) == {"a": "1.0"}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"a": "2.0"}))
    assert derive_pins.read_versions(mapping) == {"a": "2.0"}


def test_the_committed_table_records_versions_of_verified_sphinx_instances_only():
    recorded = json.loads(recipes.VERIFIED_PINS.read_text())
    versions = {iid: entry["version"] for iid, entry in recorded.items()
                if isinstance(entry, dict) and "version" in entry}
    # 7462 and 10449 were merged across a version bump: their base commits say 3.1 and 5.1
    assert versions["sphinx-doc__sphinx-8548"] == "3.4" and versions["sphinx-doc__sphinx-10449"] == "5.1"
    assert versions["sphinx-doc__sphinx-7462"] == "3.1"
    assert all(iid.startswith("sphinx-doc__sphinx-") for iid in versions)


def test_sphinx_environments_get_the_jsmath_of_the_2024_images_before_the_install(tmp_path):
    row = sphinx_row("sphinx-doc__sphinx-8474", "3.4")
    steps = recipes.environment_steps(row, "/py", tmp_path, None, tmp_path / "src")
    commands = [" ".join(argv) for argv, _ in steps]
    jsmath = next(i for i, command in enumerate(commands) if "sphinxcontrib-jsmath==1.0.1" in command)
    install = next(i for i, command in enumerate(commands) if command.endswith("install -e .[test]"))
    assert jsmath < install and steps[jsmath][1] == tmp_path / "src"  # ../bin/python: the environment's
    assert recipes.RECIPES[("sphinx-doc/sphinx", "7.1")].pre_install[-1] == recipes._SPHINX_JSMATH
    assert recipes._SPHINX_JSMATH not in recipes.RECIPES[("sphinx-doc/sphinx", "1.8")].pre_install
