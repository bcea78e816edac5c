"""Derive swelab's per-instance pins from swebench's own record of the official images.

The SWE-bench repository (MIT licence; tag v4.1.0, not in the PyPI wheel) keeps, for each of the 500 Verified
instances, the `conda env export` of its official image: swebench/resources/swebench-og/<repo>/<number>/
environment.yml. This script turns them into lib/swelab/workspace/verified_pins.json:
{instance_id: {"python": "3.9", "pins": ["name==version", ...]}}: the exact Python packages of the image
(conda's Python packages, recognised by their py* build string, then the pip section, which wins on a clash),
minus what the local backend manages itself (the interpreter, pip, wheel) and conda-only Qt bindings.

An entry may also carry the instance's dataset "version": the (repo, version) whose official environment image it
shares, so a row of the same (repo, version) without pins of its own can take a sibling's
(swelab.workspace.recipes.sibling_environment). The environment.yml files do not say it: `--versions FILE` gives
it (a JSON {instance_id: version} map, or dataset rows as JSON lines with instance_id and version); versions
already in the output file are kept for the instances FILE does not name, so a regeneration never loses them.

    git -C MIRROR archive v4.1.0 swebench/resources/swebench-og | tar -x -C /tmp/og
    .venv/bin/python tests/fidelity/derive_pins.py /tmp/og/swebench/resources/swebench-og [--versions FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[2] / "lib" / "swelab" / "workspace" / "verified_pins.json"
# conda-only: no PyPI distribution of that name (the image's extras for a few xarray/matplotlib tests)
SKIP = {"python", "pip", "wheel", "sip", "pyqt", "pyqt5-sip", "conda", "conda-package-handling", "numpy-base",
        "pyarrow-core", "cdat_info", "cdms2", "cdtime", "distarray", "esmpy", "libcf", "pygobject", "wxpython"}
SOURCE = ("derived by tests/fidelity/derive_pins.py from SWE-bench's swebench/resources/swebench-og (tag v4.1.0), "
          "MIT License, Copyright (c) 2023 Carlos E Jimenez, John Yang, Alexander Wettig, Shunyu Yao, Kexin Pei, "
          "Ofir Press, Karthik R Narasimhan")
RENAME = {"matplotlib-base": "matplotlib", "python-tzdata": "tzdata", "python-fastjsonschema": "fastjsonschema",
          "pkgutil-resolve-name": "pkgutil_resolve_name", "importlib_resources": "importlib-resources",
          "brotli-python": "brotli", "msgpack-python": "msgpack", "nbconvert-core": "nbconvert",
          "seaborn-base": "seaborn", "python-eccodes": "eccodes", "python-xxhash": "xxhash", "iris": "scitools-iris",
          "antlr-python-runtime": "antlr4-python3-runtime"}
# a backport of a module the standard library has from that Python on: conda-forge ships a stub for the newer
# Pythons, PyPI's sdist does not build there (backports.zoneinfo 0.2.1 on 3.10), and nothing imports it
STDLIB_FROM = {"backports.zoneinfo": (3, 9), "backports-zoneinfo": (3, 9)}


def pins_of(environment: dict) -> tuple[str, list[str]]:
    python, pins = "", {}
    for item in environment.get("dependencies", []):
        if isinstance(item, dict):
            for line in item.get("pip") or []:
                match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip())
                if match:
                    pins[match.group(1).lower()] = f"{match.group(1)}=={match.group(2)}"
            continue
        name, version, build = (str(item).split("=") + ["", ""])[:3]
        if name == "python":
            python = ".".join(version.split(".")[:2])
        elif build.startswith("py") and name not in SKIP:
            name = RENAME.get(name, name)
            pins.setdefault(name.lower(), f"{name}=={version}")
    for name, since in STDLIB_FROM.items():
        if name in pins and python and tuple(int(x) for x in python.split(".")) >= since:
            pins[name] += f'; python_version < "{since[0]}.{since[1]}"'
    return python, sorted(pins.values(), key=str.lower)


def read_versions(path: Path) -> dict[str, str]:
    """{instance_id: version} from a JSON map or from dataset rows (JSON lines, or one JSON list)."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # JSON lines
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    return {row["instance_id"]: str(row["version"]) for row in data if row.get("version") is not None}


def derive(folder: Path, versions: dict[str, str], previous: dict) -> dict:
    """The whole table: every environment.yml under `folder`, with its version from `versions`, else the one
    `previous` (the current output file) recorded."""
    table: dict = {"_source": SOURCE}
    for path in sorted(Path(folder).glob("*/*/environment.yml")):
        instance_id = f"{path.parent.parent.name}-{path.parent.name}"
        python, pins = pins_of(yaml.safe_load(path.read_text()))
        table[instance_id] = {"python": python, "pins": pins}
        version = versions.get(instance_id) or (previous.get(instance_id) or {}).get("version")
        if version:
            table[instance_id]["version"] = version
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="swebench/resources/swebench-og of SWE-bench v4.1.0")
    parser.add_argument("--versions", type=Path, help="instance versions: JSON map or dataset rows")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    table = derive(args.folder, read_versions(args.versions) if args.versions else {}, previous)
    args.out.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"{len(table) - 1} instances -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
