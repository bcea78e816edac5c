"""swelab.select.dataset: local files in every format, hub arguments (monkeypatched), aliases, dataset_info."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from swelab.select import dataset
from swelab.select.dataset import DatasetError, dataset_info, fingerprint, load_instances

FIXTURE = Path(__file__).parent / "fixtures" / "swebench_lite_sample.jsonl"
SHARED_LITE = Path(__file__).resolve().parents[2] / "shared" / "data" / "swe-bench-lite-test.jsonl"


def fixture_rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_jsonl_json_and_parquet_give_the_same_rows_and_fingerprint(tmp_path):
    rows = fixture_rows()
    as_json = tmp_path / "rows.json"
    as_json.write_text(json.dumps(list(reversed(rows))))
    as_dict_json = tmp_path / "by_id.json"
    as_dict_json.write_text(json.dumps({row["instance_id"]: row for row in rows}))
    as_parquet = tmp_path / "rows.parquet"
    frame = pd.DataFrame(rows)
    # parquet copies on the hub store the test lists as arrays, not JSON strings
    frame["FAIL_TO_PASS"] = [json.loads(v) for v in frame["FAIL_TO_PASS"]]
    frame.to_parquet(as_parquet)

    loaded = [load_instances(str(p)) for p in (FIXTURE, as_json, as_dict_json, as_parquet)]
    ids = [row["instance_id"] for row in loaded[0]]
    assert ids == sorted(ids) and len(ids) == len(rows)
    assert {fingerprint(rows) for rows in loaded} == {fingerprint(loaded[0])}
    assert isinstance(loaded[3][0]["FAIL_TO_PASS"], str)


def test_missing_field_names_file_and_instance(tmp_path):
    rows = fixture_rows()[:2]
    del rows[1]["test_patch"]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match=rf"bad.jsonl.*{rows[1]['instance_id']}.*test_patch"):
        load_instances(str(path))


def test_bad_json_line_and_bad_test_list_are_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(fixture_rows()[0]) + "\n{not json\n")
    with pytest.raises(DatasetError, match="broken.jsonl:2"):
        load_instances(str(path))
    row = dict(fixture_rows()[0], FAIL_TO_PASS="[oops")
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match="FAIL_TO_PASS"):
        load_instances(str(path))


def test_duplicate_ids_are_refused(tmp_path):
    row = fixture_rows()[0]
    path = tmp_path / "dup.jsonl"
    path.write_text((json.dumps(row) + "\n") * 2)
    with pytest.raises(DatasetError, match="twice"):
        load_instances(str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.jsonl"):
        load_instances(str(tmp_path / "nowhere.jsonl"))


@pytest.mark.parametrize(
    ("asked", "loaded"),
    [
        ("princeton-nlp/SWE-bench_Lite", "SWE-bench/SWE-bench_Lite"),
        ("princeton-nlp/SWE-bench_Verified", "SWE-bench/SWE-bench_Verified"),
        ("princeton-nlp/SWE-bench", "SWE-bench/SWE-bench"),
        ("SWE-bench/SWE-bench_Lite", "SWE-bench/SWE-bench_Lite"),
        ("lite", "SWE-bench/SWE-bench_Lite"),
    ],
)
def test_hub_names_are_mapped_and_the_revision_is_passed(monkeypatch, asked, loaded):
    calls = []

    def fake_load_dataset(name, split=None, revision=None):
        calls.append((name, split, revision))
        return fixture_rows()

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_instances(asked, split="dev", revision="abc123")
    assert calls == [(loaded, "dev", "abc123")]
    assert len(rows) == len(fixture_rows())


def test_hub_uses_the_pinned_constant_unless_overridden(monkeypatch):
    calls = []
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, revision: calls.append(revision) or [])
    monkeypatch.setitem(dataset.PINNED_REVISIONS, dataset.LITE, "pinned-sha")
    load_instances("princeton-nlp/SWE-bench_Lite")
    load_instances("SWE-bench/SWE-bench_Lite", revision="override")
    assert calls == ["pinned-sha", "override"]
    info = dataset_info("princeton-nlp/SWE-bench_Lite", None, fixture_rows())
    assert info["source"] == dataset.LITE and info["revision"] == "pinned-sha"


def test_hub_failure_is_one_clear_line(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetError, match=r"SWE-bench/SWE-bench_Verified .*no route"):
        load_instances("princeton-nlp/SWE-bench_Verified")


def test_dataset_info_changes_with_content():
    rows = fixture_rows()
    info = dataset_info(str(FIXTURE), None, rows)
    assert set(info) >= {"source", "revision", "fingerprint"}
    assert info["revision"] is None and info["n_rows"] == len(rows)
    changed = [dict(rows[0], patch=rows[0]["patch"] + "\n"), *rows[1:]]
    assert dataset_info(str(FIXTURE), None, changed)["fingerprint"] != info["fingerprint"]


def test_grading_fields_and_test_lists():
    row = fixture_rows()[0]
    assert not dataset.has_grading_fields(row)
    f2p, p2p = dataset.test_lists(row)
    assert f2p == json.loads(row["FAIL_TO_PASS"]) and isinstance(p2p, list)


@pytest.mark.skipif(not SHARED_LITE.exists(), reason="shared SWE-bench Lite copy absent")
def test_real_lite_copy_loads():
    rows = load_instances(str(SHARED_LITE))
    assert len(rows) == 300
    assert len({row["repo"] for row in rows}) == 12
    assert all(not dataset.has_grading_fields(row) for row in rows)
