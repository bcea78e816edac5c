"""The Verified image pins (lib/swelab/workspace/verified_pins.json, made by tests/fidelity/derive_pins.py): what
pip is given is what the image held. No network."""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from swelab.workspace import recipes

sys.path.insert(0, str(Path(__file__).parent / "fidelity"))
import derive_pins  # noqa: E402 - tests/fidelity/derive_pins.py (a script, outside pytest's collection)


def _export(python: str) -> dict:
    return {"dependencies": [f"python={python}.13=h955ad1f_0", "backports.zoneinfo=0.2.1=py310hff52083_9",
                             "numpy=1.23.0=py310h53a5b5f_0", {"pip": ["cf-units==3.2.0"]}]}


def test_a_stdlib_backport_is_pinned_only_for_the_pythons_without_the_module():
    python, pins = derive_pins.pins_of(_export("3.10"))
    assert python == "3.10"
    assert pins == ['backports.zoneinfo==0.2.1; python_version < "3.9"', "cf-units==3.2.0", "numpy==1.23.0"]
    _, older = derive_pins.pins_of(_export("3.8"))
    assert "backports.zoneinfo==0.2.1" in older  # Python 3.8 has no zoneinfo: the backport is the real one


def test_every_committed_pin_is_a_requirement_pip_reads_and_no_backport_lands_on_a_python_that_has_the_module():
    table = recipes._verified_pins()
    assert len(table) == 500
    for instance_id, entry in table.items():
        environment = dict(default_environment(), python_version=entry["python"],
                           python_full_version=entry["python"] + ".0")
        for pin in entry["pins"]:
            requirement = Requirement(pin)  # raises on anything pip would refuse to parse
            installed = requirement.marker is None or requirement.marker.evaluate(environment)
            if requirement.name.lower().replace("-", ".") == "backports.zoneinfo":
                assert installed == (entry["python"] in ("3.6", "3.7", "3.8")), (instance_id, pin)
