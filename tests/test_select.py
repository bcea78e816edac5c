"""swelab.select.selection: patch statistics, filters, the seeded draw, byte-identical pinned files, instance lists."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from swelab.params import ParamsError, load_params
from swelab.select import selection as select
from swelab.select.dataset import dataset_info, load_instances
from swelab.select.instances import instance_ids_from
from swelab.select.selection import SelectionError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "swebench_lite_sample.jsonl"
SHARED_LITE = ROOT.parent / "shared" / "data" / "swe-bench-lite-test.jsonl"

TWO_FILE_DIFF = """diff --git a/pkg/a.py b/pkg/a.py
--- a/pkg/a.py
+++ b/pkg/a.py
@@ -1,3 +1,4 @@
 import os
-x = 1
+x = 2
+y = 3
 z = 4
@@ -10,1 +11,1 @@ def f():
-    return 1
+    return 2
diff --git a/pkg/b.py b/pkg/b.py
--- a/pkg/b.py
+++ b/pkg/b.py
@@ -1,1 +1,2 @@
 import numpy as np
+value = np.zeros(3)
"""


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load_instances(str(FIXTURE))


def test_patch_stats_counts_files_hunks_and_lines():
    stats = select.patch_stats(TWO_FILE_DIFF)
    assert (stats["files"], stats["hunks"], stats["added"], stats["removed"]) == (2, 3, 4, 2)
    assert stats["paths"] == ["pkg/a.py", "pkg/b.py"]
    assert select.patch_stats("")["files"] == 0


def test_numeric_tag_from_imports_or_references():
    assert select.numeric_usage(TWO_FILE_DIFF) == (1, 1)
    refs_only = "--- a/x.py\n+++ b/x.py\n@@ -1 +1,3 @@\n-a = pd.Series()\n+a = pd.DataFrame()\n+b = np.ones(2)\n"
    assert select.numeric_usage(refs_only) == (0, 3)
    assert select.numeric_usage("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n") == (0, 0)


def test_instance_stats_matches_unidiff_per_row(rows):
    stats = select.instance_stats(rows)
    assert list(stats["instance_id"]) == sorted(r["instance_id"] for r in rows)
    for row in rows:
        line = stats.set_index("instance_id").loc[row["instance_id"]]
        gold = select.patch_stats(row["patch"])
        assert line["patch_hunks"] == gold["hunks"]
        assert line["patch_lines"] == gold["added"] + gold["removed"]
        assert line["n_fail_to_pass"] == len(json.loads(row["FAIL_TO_PASS"]))
    # astropy-12907 builds numpy arrays in both patches; requests-2317 never touches numpy
    tags = dict(zip(stats["instance_id"], stats["numeric_heavy"], strict=True))
    assert tags["astropy__astropy-12907"] and not tags["psf__requests-2317"]


def test_filters_each_narrow_as_stated(rows):
    stats = select.instance_stats(rows)
    assert set(select.apply_filters(stats, {"max_hunks": 1})["patch_hunks"]) <= {1}
    assert (select.apply_filters(stats, {"min_hunks": 2})["patch_hunks"] >= 2).all()
    assert (select.apply_filters(stats, {"max_changed_lines": 3})["patch_lines"] <= 3).all()
    kept = select.apply_filters(stats, {"repos_in": ["psf/requests", "pallets/flask"]})
    assert set(kept["repo"]) == {"psf/requests", "pallets/flask"}
    dropped = select.apply_filters(stats, {"repos_out": ["django/django"]})
    assert "django/django" not in set(dropped["repo"]) and len(dropped) == len(stats) - 2
    assert select.apply_filters(stats, {"numeric_heavy": True})["numeric_heavy"].all()
    assert (select.apply_filters(stats, {"min_fail_to_pass": 2})["n_fail_to_pass"] >= 2).all()
    assert "psf__requests-2317" not in set(
        select.apply_filters(stats, {"exclude_ids": ["psf__requests-2317"]})["instance_id"]
    )


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"count": 3, "max_filez": 1}, r"selection\.max_filez: unknown filter"),
        ({"count": 0}, r"selection\.count"),
        ({"count": 2, "max_hunks": "one"}, r"selection\.max_hunks"),
        ({"pools": [{"name": "a", "count": 1}, {"name": "a", "count": 1}]}, r"pools\[1\]\.name: duplicate"),
        ({"pools": [{"count": 1}], "max_hunks": 1}, r"selection\.max_hunks"),
        ({"count": 2, "repos_in": "django/django"}, r"repos_in: must be a list"),
        ({}, "empty"),
    ],
)
def test_bad_selection_configs_name_the_field(selection, message):
    with pytest.raises(SelectionError, match=message):
        select.parse_selection(selection)


def test_draw_is_seeded_and_pools_do_not_overlap(rows):
    config = {"pools": [{"name": "one", "count": 3, "max_hunks": 1}, {"name": "rest", "count": 4}]}
    first = select.select_instances(rows, config, seed=42)
    again = select.select_instances(rows, config, seed=42)
    assert first.ids == again.ids and first.by_pool == again.by_pool
    assert not set(first.by_pool["one"]) & set(first.by_pool["rest"])
    assert len(first.ids) == 7 and first.ids == sorted(first.ids)
    others = {tuple(select.select_instances(rows, config, seed=s).ids) for s in range(1, 8)}
    assert len(others) > 1  # the seed matters
    # a pool with the same filters and count picks the same ids whatever follows it (i3 extends i1)
    alone = select.select_instances(rows, {"name": "one", "count": 3, "max_hunks": 1}, seed=42)
    assert alone.ids == first.by_pool["one"]


def test_max_per_repo_and_shortfall(rows):
    capped = select.select_instances(rows, {"count": 12, "max_per_repo": 1}, seed=3)
    repos = [row["repo"] for row in rows if row["instance_id"] in capped.ids]
    assert len(repos) == len(set(repos)) == len({row["repo"] for row in rows})
    assert capped.shortfall == {"main": 12 - len(repos)}


def test_seed_from_environment():
    assert select.default_seed({}) == 42
    assert select.default_seed({"SELECTION_SEED": "7"}) == 7
    with pytest.raises(SelectionError, match="SELECTION_SEED"):
        select.default_seed({"SELECTION_SEED": "seven"})


def _pin(rows, out: Path, seed: int) -> tuple[bytes, bytes]:
    config = {
        "pools": [
            {"name": "easy", "count": 3, "max_hunks": 1},
            {"name": "numeric", "count": 1, "numeric_heavy": True},
        ]
    }
    result = select.select_instances(rows, config, seed)
    manifest = select.selection_manifest(result, dataset_info(str(FIXTURE), None, rows), config)
    ids_path, manifest_path = select.write_selection(out / "demo.jsonl", result, manifest)
    return ids_path.read_bytes(), manifest_path.read_bytes()


def test_pinned_files_are_byte_identical_for_the_same_seed(tmp_path, rows):
    a = _pin(load_instances(str(FIXTURE)), tmp_path / "a", 42)
    b = _pin(list(reversed(rows)), tmp_path / "b", 42)
    assert a == b
    assert _pin(rows, tmp_path / "c", 5) != a
    lines = a[0].decode().splitlines()
    assert all(set(json.loads(line)) == {"instance_id"} for line in lines) and len(lines) == 4
    manifest = json.loads(a[1])
    assert (
        manifest["seed"] == 42
        and manifest["dataset"]["fingerprint"] == dataset_info(str(FIXTURE), None, rows)["fingerprint"]
    )
    assert manifest["instance_ids"] == [json.loads(line)["instance_id"] for line in lines]
    assert sum(manifest["stats"]["repos"].values()) == 4
    assert not list((tmp_path / "a").glob(".*.tmp"))  # atomic writes leave no temp files


def test_read_instance_ids_in_every_format(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instance_id": "x__y-1"}\n"x__y-2"\n')
    (tmp_path / "b.txt").write_text("# comment\nx__y-1\n\nx__y-2\n")
    (tmp_path / "c.json").write_text('["x__y-1", "x__y-2"]')
    for name in ("a.jsonl", "b.txt", "c.json"):
        assert select.read_instance_ids(tmp_path / name) == ["x__y-1", "x__y-2"]
    (tmp_path / "d.txt").write_text("x__y-1\nx__y-1\n")
    with pytest.raises(SelectionError, match="d.txt: instance x__y-1 listed twice"):
        select.read_instance_ids(tmp_path / "d.txt")
    (tmp_path / "e.jsonl").write_text('{"id": 3}\n')
    with pytest.raises(SelectionError, match="entry 1 has no instance_id"):
        select.read_instance_ids(tmp_path / "e.jsonl")


def test_compare_with_pinned_and_rows_for_ids(rows):
    same = select.compare_with_pinned(["b", "a"], ["a", "b"])
    assert same["matches"] and same["pinned"]
    diff = select.compare_with_pinned(["a", "c"], ["a", "b"])
    assert not diff["matches"] and diff["only_recomputed"] == ["c"] and diff["only_pinned"] == ["b"]
    assert select.compare_with_pinned(["a"], None)["matches"] is None
    picked = select.rows_for_ids(rows, ["psf__requests-2317", "pallets__flask-4992"], "ids.txt")
    assert [r["instance_id"] for r in picked] == ["pallets__flask-4992", "psf__requests-2317"]
    with pytest.raises(SelectionError, match="ids.txt: .*nope__nope-1"):
        select.rows_for_ids(rows, ["nope__nope-1"], "ids.txt")


def test_dataset_path_is_found_from_the_project_root(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text("")
    monkeypatch.chdir(tmp_path / "data")
    assert select.resolve_dataset_path("data/x.jsonl", tmp_path) == str(tmp_path / "data" / "x.jsonl")
    assert select.resolve_dataset_path("x.jsonl", tmp_path) == "x.jsonl"


def test_browser_html_escapes_and_shows_everything(rows):
    row = dict(rows[0], problem_statement="<script>alert(1)</script> fails")
    html = select.browser_html(row)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert row["instance_id"] in html and "gold patch" in html and "test patch" in html
    assert f"FAIL_TO_PASS ({len(json.loads(row['FAIL_TO_PASS']))})" in html


def _params_copy(tmp_path: Path, name: str) -> Path:
    """A params file like params/<name>.yaml whose models need no other file (the model sets are not mine)."""
    import yaml

    data = yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())
    data.pop("include_models")
    data["models"] = [{"name": "gold", "kind": "gold"}]
    data["instances"] = str(tmp_path / "instances" / Path(data["instances"]).name)
    (tmp_path / "params").mkdir(exist_ok=True)
    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "params" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.skipif(not SHARED_LITE.exists(), reason="shared SWE-bench Lite copy absent")
@pytest.mark.parametrize("name", ["i1", "i3"])
def test_committed_pins_are_reproduced_from_the_params(tmp_path, monkeypatch, name):
    monkeypatch.chdir(ROOT)  # the manifests record the dataset path as given, relative to the project root
    monkeypatch.delenv("SELECTION_SEED", raising=False)
    path = _params_copy(tmp_path, name)
    assert select.main([str(path), "--dataset", "../shared/data/swe-bench-lite-test.jsonl"]) == 0
    committed = ROOT / "params" / "instances" / f"{name}_instances_lite.jsonl"
    fresh = tmp_path / "instances" / committed.name
    assert fresh.read_bytes() == committed.read_bytes()
    assert select.manifest_path(fresh).read_bytes() == select.manifest_path(committed).read_bytes()
    ids = select.read_instance_ids(committed)
    assert (6 <= len(ids) <= 8) if name == "i1" else (15 <= len(ids) <= 20)


def test_i3_extends_i1():
    i1 = select.read_instance_ids(ROOT / "params" / "instances" / "i1_instances_lite.jsonl")
    i3 = select.read_instance_ids(ROOT / "params" / "instances" / "i3_instances_lite.jsonl")
    assert set(i1) < set(i3)


@pytest.mark.skipif(not SHARED_LITE.exists(), reason="shared SWE-bench Lite copy absent")
def test_01_select_notebook_reproduces_the_pinned_i1_list(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    import nbformat

    notebook = ROOT / "notebooks" / "01_select.ipynb"
    committed = nbformat.read(notebook, 4)
    assert all(not cell.get("outputs") for cell in committed.cells if cell.cell_type == "code")
    assert "parameters" in committed.cells[1].metadata.get("tags", [])
    params_file = _params_copy(tmp_path, "i1")
    # the copy pins the committed list, as params/i1.yaml does
    pinned = ROOT / "params" / "instances" / "i1_instances_lite.jsonl"
    (tmp_path / "instances").mkdir(exist_ok=True)
    (tmp_path / "instances" / pinned.name).write_bytes(pinned.read_bytes())
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("SELECTION_SEED", raising=False)
    papermill.execute_notebook(
        str(notebook),
        str(tmp_path / "out.ipynb"),
        parameters={"params_file": str(params_file), "dataset_path": "../shared/data/swe-bench-lite-test.jsonl"},
        progress_bar=False,
    )
    (run_dir,) = (tmp_path / "outputs").iterdir()
    assert (run_dir / "selection" / "instances.jsonl").read_bytes() == pinned.read_bytes()
    rows = [json.loads(line) for line in (run_dir / "instances.jsonl").read_text().splitlines()]
    assert [row["instance_id"] for row in rows] == select.read_instance_ids(pinned)
    assert all(row["patch"] and row["test_patch"] for row in rows)


def test_recompute_selection_writes_the_draw_and_compares_it_with_the_pin(tmp_path, rows):
    config = {"name": "one", "count": 3, "max_hunks": 1}
    drawn = select.select_instances(rows, config, seed=42).ids
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "params").mkdir()
    path = tmp_path / "params" / "s.yaml"
    path.write_text(f"selection: {json.dumps(config)}\ninstances: {json.dumps(drawn[:2])}\n"
                    "models: [{name: gold, kind: gold}]\n")
    params = load_params(path, environ={})
    info = {"source": "fixture", "revision": None, "fingerprint": "f"}
    selection, check = select.recompute_selection(params, rows, info, select.instance_stats(rows), tmp_path / "run")
    assert selection.ids == drawn
    assert check["matches"] is False and check["only_recomputed"] == drawn[2:]
    assert select.read_instance_ids(tmp_path / "run" / "selection" / "instances.jsonl") == drawn
    assert select.repo_summary(select.instance_stats(rows))["instances"].sum() == len(rows)
    assert len(select.distribution_figures(select.instance_stats(rows))) == 3


@pytest.mark.parametrize("name, text", [
    ("ids.json", '["x__y-2", "x__y-1"]'),
    ("ids.jsonl", '{"instance_id": "x__y-2"}\n"x__y-1"\n'),
    ("ids.txt", "# pinned\nx__y-2\nx__y-1\n"),
])
def test_params_pin_ids_in_every_list_format(tmp_path, name, text):
    # a .json id list used to come back as one id: the whole '[...]' line
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / name).write_text(text)
    path = tmp_path / "params" / "s.yaml"
    path.write_text(f"instances: params/{name}\nmodels: [{{name: gold, kind: gold}}]\n")
    assert instance_ids_from(load_params(path, environ={})) == ["x__y-2", "x__y-1"]


def test_a_bad_pinned_list_names_the_params_field(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "ids.json").write_text('["x__y-1", "x__y-1"]')
    path = tmp_path / "params" / "s.yaml"
    path.write_text("instances: params/ids.json\nmodels: [{name: gold, kind: gold}]\n")
    with pytest.raises(ParamsError, match=r"field 'instances': .*ids.json: instance x__y-1 listed twice"):
        instance_ids_from(load_params(path, environ={}))


def test_selection_does_not_import_the_run_instance_set():
    # the arrow goes one way: instances -> selection; every import of our modules at the top
    tree = ast.parse(Path(select.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "swelab.select.instances" not in imported
    nested = [node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
              for node in ast.walk(fn) if isinstance(node, ast.ImportFrom) and node.module.startswith("swelab")]
    assert nested == []
