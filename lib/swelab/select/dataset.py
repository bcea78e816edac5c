"""Load task instances: the bundled `minibench`, a local JSON/JSONL/parquet file, or a SWE-bench dataset.

Hub datasets go through `datasets.load_dataset` with a pinned revision: the constant in `PINNED_REVISIONS`
unless the params name another. The old `princeton-nlp/...` names and short aliases map to the current
`SWE-bench/...` names, so a manifest always records one spelling per dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from swelab import minibench

REQUIRED_FIELDS = (
    "instance_id",
    "repo",
    "base_commit",
    "patch",
    "test_patch",
    "problem_statement",
    "version",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
)
# Fields swebench 5.x reads in make_test_spec; rows without them are "old schema" (see swelab.workspace.recipes).
GRADING_FIELDS = ("image", "eval_script", "log_parser", "eval_type")
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")

LITE = "SWE-bench/SWE-bench_Lite"
VERIFIED = "SWE-bench/SWE-bench_Verified"
FULL = "SWE-bench/SWE-bench"
ALIASES = {
    "princeton-nlp/swe-bench_lite": LITE,
    "princeton-nlp/swe-bench_verified": VERIFIED,
    "princeton-nlp/swe-bench": FULL,
    "swe-bench/swe-bench_lite": LITE,
    "swe-bench/swe-bench_verified": VERIFIED,
    "swe-bench/swe-bench": FULL,
    "lite": LITE,
    "swe-bench-lite": LITE,
    "verified": VERIFIED,
    "swe-bench-verified": VERIFIED,
    "full": FULL,
    "swe-bench": FULL,
}
# The hub commit each dataset is loaded at unless the params name a revision. None means "not pinned yet":
# the hub was unreachable when this table was written, so no commit could be read and none is invented here.
# Fill in the commit sha (datasets' `HfApi().dataset_info(name).sha`) on first access with a network; until
# then `dataset_info` records revision None and the content fingerprint is the identity that counts.
PINNED_REVISIONS: dict[str, str | None] = {LITE: None, VERIFIED: None, FULL: None}


class DatasetError(ValueError):
    """A dataset that cannot be used, with the source and instance named."""


def is_local(source: str) -> bool:
    return Path(source).suffix in LOCAL_SUFFIXES


def canonical_name(source: str) -> str:
    """`princeton-nlp/SWE-bench_Lite`, `lite`, ... -> `SWE-bench/SWE-bench_Lite`; paths unchanged."""
    if source == "minibench" or is_local(source):
        return source
    return ALIASES.get(source.lower(), source)


def pinned_revision(source: str, revision: str | None = None) -> str | None:
    """The revision to load: the one asked for, else the pinned constant (local files have none)."""
    if revision is not None:
        return revision
    if source == "minibench" or is_local(source):
        return None
    return PINNED_REVISIONS.get(canonical_name(source))


def load_instances(source: str, split: str = "test", revision: str | None = None) -> list[dict]:
    """Rows in the SWE-bench schema (FAIL_TO_PASS/PASS_TO_PASS as JSON strings), sorted by instance_id."""
    if source == "minibench":
        rows = minibench.load_tasks()
    elif is_local(source):
        rows = _load_local(Path(source))
    else:
        rows = _load_hub(canonical_name(source), split, pinned_revision(source, revision))
    rows = [normalize_row(row) for row in rows]
    seen: set[str] = set()
    for row in rows:
        validate_row(row, source)
        if row["instance_id"] in seen:
            raise DatasetError(f"{source}: instance {row['instance_id']} appears twice")
        seen.add(row["instance_id"])
    return sorted(rows, key=lambda row: row["instance_id"])


def normalize_row(row: dict) -> dict:
    """One representation per value, so fingerprints do not depend on the file format the rows came in."""
    out = {}
    for key, value in row.items():
        if hasattr(value, "tolist"):  # numpy arrays / scalars from parquet
            value = value.tolist()
        if key in ("FAIL_TO_PASS", "PASS_TO_PASS") and isinstance(value, (list, tuple)):
            value = json.dumps(list(value))
        out[key] = value
    return out


def validate_row(row: dict, source: str) -> None:
    missing = [field for field in REQUIRED_FIELDS if field not in row]
    if missing:
        name = row.get("instance_id", "<no instance_id>")
        raise DatasetError(f"{source}: instance {name} lacks field(s) {', '.join(missing)}")
    for field in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        value = row[field]
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{source}: instance {row['instance_id']} field {field} is not a JSON list ({exc.msg})"
                ) from exc
            if not isinstance(parsed, list):
                raise DatasetError(f"{source}: instance {row['instance_id']} field {field} is not a JSON list")


def test_lists(row: dict) -> tuple[list[str], list[str]]:
    """FAIL_TO_PASS and PASS_TO_PASS as lists, whichever way the row stores them."""

    def as_list(value: Any) -> list[str]:
        return json.loads(value) if isinstance(value, str) else list(value)

    return as_list(row["FAIL_TO_PASS"]), as_list(row["PASS_TO_PASS"])


def has_grading_fields(row: dict) -> bool:
    """True for swebench 5.x rows; old-schema rows need swelab.workspace.recipes before make_test_spec."""
    return all(row.get(field) for field in GRADING_FIELDS)


def _load_local(path: Path) -> list[dict]:
    if not path.exists():
        raise DatasetError(f"{path}: dataset file not found")
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc.msg})") from exc
        rows = list(data if isinstance(data, list) else data.values())
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    bad = [i for i, row in enumerate(rows) if not isinstance(row, dict)]
    if bad:
        raise DatasetError(f"{path}: entry {bad[0]} is not an object")
    return rows


def _load_hub(name: str, split: str, revision: str | None) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as exc:  # the hub raises many types; one clear line is what a researcher needs
        raise DatasetError(f"dataset {name} (split {split}, revision {revision}): cannot load: {exc}") from exc
    return [dict(row) for row in ds]


def fingerprint(rows: list[dict]) -> str:
    """sha256 over the canonical JSON of the rows: the content identity recorded in manifests."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["instance_id"]):
        digest.update(json.dumps(row, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()


def dataset_info(source: str, revision: str | None, rows: list[dict], split: str = "test") -> dict:
    """What the manifest records about the dataset: its name, revision and content fingerprint.

    A local file is recorded by its path as given (not resolved: a manifest must not depend on where
    the checkout lives) and its rows' fingerprint.
    """
    return {
        "source": canonical_name(source),
        "split": split,
        "revision": pinned_revision(source, revision),
        "fingerprint": fingerprint(rows),
        "n_rows": len(rows),
    }
