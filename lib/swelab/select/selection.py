"""Choose task instances: patch statistics, filters, a seeded deterministic draw, and the pinned files.

Selection config (the `selection:` block of a params file) is either one pool or a list of pools:

    selection: {count: 7, max_files: 1, max_hunks: 1, max_changed_lines: 4}
    selection:
      pools:
        - {name: easy, count: 7, max_hunks: 1, max_changed_lines: 4}
        - {name: multi_hunk, count: 7, min_hunks: 2}
        - {name: numeric, count: 4, numeric_heavy: true}

Each pool sorts its candidates by instance_id (after removing what earlier pools picked), shuffles them with
`random.Random(seed)` and takes them in that order, skipping a repo once it holds `max_per_repo` picks
(optional; it keeps one big repo from filling a small set), until it has `count`. So the same seed,
dataset and config always give the same ids, and a first pool with the same filters and count as another
config's first pool picks the same ids (i3's easy pool is i1's list).

Pinned files: `<name>.jsonl`, one `{"instance_id": ...}` object per line, sorted by id, and
`<name>_manifest.json` (seed, config, dataset identity, stats of what was picked); no timestamps, so
rewriting with the same inputs is byte-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from swelab import io
from swelab.params import ParamsError, RunParams, load_params
from swelab.select.dataset import DatasetError, dataset_info, load_instances, test_lists

DEFAULT_SEED = 42

# numpy/pandas-heavy: the gold patch or the test patch imports numpy or pandas on a diff line (added,
# removed or context), or their diff lines name np./numpy./pd./pandas. at least NUMERIC_MIN_REFS times.
# Diff context rarely reaches a file's imports, hence the second rule.
NUMERIC_IMPORT_RE = re.compile(r"^[ +\-]\s*(?:import|from)\s+(?:numpy|pandas)\b", re.M)
NUMERIC_REF_RE = re.compile(r"\b(?:np|numpy|pd|pandas)\.")
NUMERIC_MIN_REFS = 3
NUMERIC_DEFINITION = (
    "patch or test_patch has a diff line importing numpy/pandas, or >= "
    f"{NUMERIC_MIN_REFS} references to np./numpy./pd./pandas. on its diff lines"
)

# filter key -> (stats column, comparison)
_RANGE_FILTERS = {
    "max_files": ("patch_files", "le"),
    "min_files": ("patch_files", "ge"),
    "max_hunks": ("patch_hunks", "le"),
    "min_hunks": ("patch_hunks", "ge"),
    "max_changed_lines": ("patch_lines", "le"),
    "min_changed_lines": ("patch_lines", "ge"),
    "max_fail_to_pass": ("n_fail_to_pass", "le"),
    "min_fail_to_pass": ("n_fail_to_pass", "ge"),
    "max_pass_to_pass": ("n_pass_to_pass", "le"),
    "max_test_files": ("test_files", "le"),
    "max_problem_chars": ("problem_chars", "le"),
}
_LIST_FILTERS = ("repos_in", "repos_out", "exclude_ids")
FILTER_KEYS = (*_RANGE_FILTERS, *_LIST_FILTERS, "numeric_heavy")
POOL_KEYS = ("name", "count", "max_per_repo", *FILTER_KEYS)


class SelectionError(ValueError):
    """A selection config or instance list that cannot be used; the message names the field or id."""


# ---------------------------------------------------------------- statistics


def patch_stats(diff: str, where: str = "patch") -> dict:
    """Files, hunks, added and removed lines of a unified diff (unidiff)."""
    try:
        patch = PatchSet(diff or "")
    except UnidiffParseError as exc:
        raise SelectionError(f"{where}: not a unified diff ({exc})") from exc
    return {
        "files": len(patch),
        "hunks": sum(len(f) for f in patch),
        "added": sum(f.added for f in patch),
        "removed": sum(f.removed for f in patch),
        "paths": [f.path for f in patch],
    }


def numeric_usage(*diffs: str) -> tuple[int, int]:
    """(numpy/pandas import lines, np./pd. references) on the diff lines of the given diffs."""
    imports = refs = 0
    for diff in diffs:
        imports += len(NUMERIC_IMPORT_RE.findall(diff or ""))
        diff_lines = [line for line in (diff or "").splitlines() if line[:1] in (" ", "+", "-")]
        refs += sum(len(NUMERIC_REF_RE.findall(line)) for line in diff_lines)
    return imports, refs


def instance_stats(rows: list[dict]) -> pd.DataFrame:
    """One row per instance: gold and test patch statistics, test counts, the numpy/pandas tag."""
    records = []
    for row in rows:
        iid = row["instance_id"]
        gold = patch_stats(row["patch"], f"instance {iid} field patch")
        test = patch_stats(row["test_patch"], f"instance {iid} field test_patch")
        f2p, p2p = test_lists(row)
        imports, refs = numeric_usage(row["patch"], row["test_patch"])
        records.append(
            {
                "instance_id": iid,
                "repo": row["repo"],
                "version": str(row.get("version", "")),
                "created_at": str(row.get("created_at", "")),
                "patch_files": gold["files"],
                "patch_hunks": gold["hunks"],
                "patch_added": gold["added"],
                "patch_removed": gold["removed"],
                "patch_lines": gold["added"] + gold["removed"],
                "test_files": test["files"],
                "test_hunks": test["hunks"],
                "test_added": test["added"],
                "test_removed": test["removed"],
                "n_fail_to_pass": len(f2p),
                "n_pass_to_pass": len(p2p),
                "problem_chars": len(row.get("problem_statement") or ""),
                "numeric_imports": imports,
                "numeric_refs": refs,
                "numeric_heavy": bool(imports or refs >= NUMERIC_MIN_REFS),
            }
        )
    frame = pd.DataFrame.from_records(records)
    return frame.sort_values("instance_id").reset_index(drop=True) if len(frame) else frame


# ---------------------------------------------------------------- filters and pools


@dataclass(frozen=True)
class Pool:
    name: str
    count: int
    filters: dict = field(default_factory=dict)
    max_per_repo: int | None = None


def parse_selection(selection: dict | None, where: str = "selection") -> list[Pool]:
    """The pools of a `selection:` block, validated; errors name the field."""
    if not selection:
        raise SelectionError(f"{where}: empty; give a count and filters, or pools")
    if not isinstance(selection, dict):
        raise SelectionError(f"{where}: must be a mapping")
    if "pools" in selection:
        extra = sorted(set(selection) - {"pools"})
        if extra:
            raise SelectionError(f"{where}.{extra[0]}: put filters inside each pool when 'pools' is used")
        entries = selection["pools"]
        if not isinstance(entries, list) or not entries:
            raise SelectionError(f"{where}.pools: must be a non-empty list")
    else:
        entries = [dict(selection, name=selection.get("name", "main"))]
    pools, names = [], set()
    for i, entry in enumerate(entries):
        here = f"{where}.pools[{i}]" if "pools" in selection else where
        if not isinstance(entry, dict):
            raise SelectionError(f"{here}: must be a mapping")
        unknown = sorted(set(entry) - set(POOL_KEYS))
        if unknown:
            raise SelectionError(f"{here}.{unknown[0]}: unknown filter (known: {', '.join(POOL_KEYS)})")
        name = str(entry.get("name", f"pool{i}"))
        if name in names:
            raise SelectionError(f"{here}.name: duplicate pool name {name!r}")
        names.add(name)
        count = entry.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SelectionError(f"{here}.count: must be a whole number >= 1, got {count!r}")
        per_repo = entry.get("max_per_repo")
        if per_repo is not None and (isinstance(per_repo, bool) or not isinstance(per_repo, int) or per_repo < 1):
            raise SelectionError(f"{here}.max_per_repo: must be a whole number >= 1, got {per_repo!r}")
        filters = {k: v for k, v in entry.items() if k not in ("name", "count", "max_per_repo")}
        _check_filters(filters, here)
        pools.append(Pool(name=name, count=count, filters=filters, max_per_repo=per_repo))
    return pools


def _check_filters(filters: dict, where: str) -> None:
    for key, value in filters.items():
        if key in _RANGE_FILTERS and (isinstance(value, bool) or not isinstance(value, int)):
            raise SelectionError(f"{where}.{key}: must be a whole number, got {value!r}")
        if key in _LIST_FILTERS and not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise SelectionError(f"{where}.{key}: must be a list of strings, got {value!r}")
        if key == "numeric_heavy" and not isinstance(value, bool):
            raise SelectionError(f"{where}.numeric_heavy: must be true or false, got {value!r}")


def apply_filters(stats: pd.DataFrame, filters: dict) -> pd.DataFrame:
    """The rows of `stats` that pass every filter."""
    _check_filters(filters, "filters")
    mask = pd.Series(True, index=stats.index)
    for key, value in filters.items():
        if key in _RANGE_FILTERS:
            column, op = _RANGE_FILTERS[key]
            mask &= stats[column] <= value if op == "le" else stats[column] >= value
        elif key == "repos_in":
            mask &= stats["repo"].isin(value)
        elif key == "repos_out":
            mask &= ~stats["repo"].isin(value)
        elif key == "exclude_ids":
            mask &= ~stats["instance_id"].isin(value)
        elif key == "numeric_heavy":
            mask &= stats["numeric_heavy"] == value
        else:
            raise SelectionError(f"filters.{key}: unknown filter (known: {', '.join(FILTER_KEYS)})")
    return stats[mask]


def seeded_sample(
    ids: list[str],
    count: int,
    seed: int,
    repos: dict[str, str] | None = None,
    max_per_repo: int | None = None,
) -> list[str]:
    """Deterministic: sort, shuffle with `random.Random(seed)`, take in order, <= `max_per_repo` per repo."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    picked: list[str] = []
    per_repo: dict[str, int] = {}
    for iid in order:
        if len(picked) == count:
            break
        repo = (repos or {}).get(iid, "")
        if max_per_repo is not None and per_repo.get(repo, 0) >= max_per_repo:
            continue
        per_repo[repo] = per_repo.get(repo, 0) + 1
        picked.append(iid)
    return sorted(picked)


@dataclass
class Selection:
    ids: list[str]
    by_pool: dict[str, list[str]]
    candidates: dict[str, int]
    seed: int
    pools: list[Pool]
    stats: pd.DataFrame

    @property
    def shortfall(self) -> dict[str, int]:
        return {p.name: p.count - len(self.by_pool[p.name]) for p in self.pools if len(self.by_pool[p.name]) < p.count}


def select_instances(
    rows: list[dict], selection: dict | None, seed: int, stats: pd.DataFrame | None = None
) -> Selection:
    """Apply each pool's filters and draw its count; later pools never repeat an earlier pick."""
    pools = parse_selection(selection)
    stats = instance_stats(rows) if stats is None else stats
    repos = dict(zip(stats["instance_id"], stats["repo"], strict=True))
    taken: list[str] = []
    by_pool: dict[str, list[str]] = {}
    candidates: dict[str, int] = {}
    for pool in pools:
        passing = apply_filters(stats, pool.filters)
        taken_set = set(taken)
        ids = [iid for iid in passing["instance_id"] if iid not in taken_set]
        candidates[pool.name] = len(ids)
        by_pool[pool.name] = seeded_sample(ids, pool.count, seed, repos, pool.max_per_repo)
        taken.extend(by_pool[pool.name])
    return Selection(sorted(taken), by_pool, candidates, seed, pools, stats)


def default_seed(environ: dict | None = None) -> int:
    """SELECTION_SEED from the environment, else 42."""
    value = (os.environ if environ is None else environ).get("SELECTION_SEED")
    if not value:
        return DEFAULT_SEED
    try:
        return int(value)
    except ValueError:
        raise SelectionError(f"SELECTION_SEED must be a whole number, got {value!r}") from None


# ---------------------------------------------------------------- manifest and files


def selection_manifest(result: Selection, dataset: dict, selection: dict | None) -> dict:
    """Everything needed to recompute and to judge the pick; deterministic (no clock, no paths resolved)."""
    picked = result.stats[result.stats["instance_id"].isin(result.ids)]
    numeric_cols = [
        "patch_files",
        "patch_hunks",
        "patch_lines",
        "test_files",
        "n_fail_to_pass",
        "n_pass_to_pass",
    ]
    return {
        "seed": result.seed,
        "selection": selection,
        "method": "per pool: candidates (minus earlier pools' picks) sorted by instance_id, shuffled with "
        "random.Random(seed), taken in order with at most max_per_repo per repo until count",
        "numeric_heavy_definition": NUMERIC_DEFINITION,
        "dataset": dataset,
        "n_instances": len(result.ids),
        "instance_ids": result.ids,
        "pools": {
            pool.name: {
                "count": pool.count,
                "max_per_repo": pool.max_per_repo,
                "filters": pool.filters,
                "candidates": result.candidates[pool.name],
                "picked": result.by_pool[pool.name],
            }
            for pool in result.pools
        },
        "shortfall": result.shortfall,
        "stats": {
            "repos": {repo: int(n) for repo, n in sorted(picked["repo"].value_counts().items())},
            "numeric_heavy": int(picked["numeric_heavy"].sum()),
            **{
                col: {
                    "min": int(picked[col].min()) if len(picked) else None,
                    "median": float(picked[col].median()) if len(picked) else None,
                    "max": int(picked[col].max()) if len(picked) else None,
                }
                for col in numeric_cols
            },
        },
    }


def manifest_path(instances_path: str | Path) -> Path:
    path = Path(instances_path)
    return path.with_name(f"{path.stem}_manifest.json")


def write_selection(instances_path: str | Path, result: Selection, manifest: dict) -> tuple[Path, Path]:
    """`<name>.jsonl` (one {"instance_id": ...} per line, sorted) and `<name>_manifest.json`, atomically."""
    path = Path(instances_path)
    if path.suffix != ".jsonl":
        raise SelectionError(f"{path}: pinned instance lists are .jsonl files")
    io.write_jsonl(path, [{"instance_id": iid} for iid in result.ids])
    return path, io.write_json(manifest_path(path), manifest)


def read_instance_ids(path: str | Path) -> list[str]:
    """Ids from a .jsonl (objects with instance_id, or strings), a .txt (one per line) or a .json list."""
    path = Path(path)
    if not path.exists():
        raise SelectionError(f"{path}: instance list not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        ids = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    else:
        try:
            if path.suffix == ".json":
                entries = json.loads(text)
            else:
                entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise SelectionError(f"{path}: not valid JSON ({exc.msg})") from exc
        ids = []
        for number, entry in enumerate(entries, start=1):
            iid = entry.get("instance_id") if isinstance(entry, dict) else entry
            if not isinstance(iid, str):
                raise SelectionError(f"{path}: entry {number} has no instance_id")
            ids.append(iid)
    duplicated = sorted({iid for iid in ids if ids.count(iid) > 1})
    if duplicated:
        raise SelectionError(f"{path}: instance {duplicated[0]} listed twice")
    return ids


def instance_ids_from(params: RunParams) -> list[str] | None:
    """The ids the params pin (a list, or a .jsonl/.txt/.json file read by read_instance_ids), or None for all."""
    value = params.instances
    if value == "all":
        return None
    if isinstance(value, list | tuple):
        return list(value)
    path = params.resolve_path(value)
    if not path.exists():
        raise ParamsError(params.source_file, "instances", f"file {value} not found")
    try:
        return read_instance_ids(path)
    except SelectionError as exc:
        raise ParamsError(params.source_file, "instances", str(exc)) from None


def resolve_instances(params: RunParams, rows: list[dict] | None = None) -> list[dict]:
    """Load the dataset and keep the pinned (or drawn) instances, in the order of the dataset (sorted by id)."""
    if rows is None:
        source = params.dataset.source
        if source != "minibench" and Path(source).suffix in {".json", ".jsonl", ".parquet"}:
            source = str(params.resolve_path(source))
        rows = load_instances(source, params.dataset.split, params.dataset.revision)
    wanted = instance_ids_from(params)
    if wanted is None and params.selection:
        chosen = select_instances(rows, params.selection, params.selection_seed)
        return rows_for_ids(rows, chosen.ids, "selection")
    if wanted is None:
        return rows
    by_id = {row["instance_id"]: row for row in rows}
    missing = [iid for iid in wanted if iid not in by_id]
    if missing:
        raise DatasetError(
            f"{params.dataset.source}: instance {missing[0]} (named in 'instances') is not in the dataset"
        )
    return [by_id[iid] for iid in sorted(set(wanted))]


def rows_for_ids(rows: list[dict], ids: list[str], where: str) -> list[dict]:
    """The rows with these ids, in id order; an id the dataset lacks is an error naming it."""
    by_id = {row["instance_id"]: row for row in rows}
    missing = [iid for iid in ids if iid not in by_id]
    if missing:
        raise SelectionError(f"{where}: instance(s) not in the dataset: {', '.join(missing[:5])}")
    return [by_id[iid] for iid in sorted(ids)]


def compare_with_pinned(recomputed: list[str], pinned: list[str] | None) -> dict:
    """How a recomputed selection relates to the pinned list (None: the params pin nothing)."""
    if pinned is None:
        return {"pinned": False, "matches": None, "only_recomputed": [], "only_pinned": []}
    return {
        "pinned": True,
        "matches": sorted(recomputed) == sorted(pinned),
        "only_recomputed": sorted(set(recomputed) - set(pinned)),
        "only_pinned": sorted(set(pinned) - set(recomputed)),
    }


def recompute_selection(
    params: Any, rows: list[dict], info: dict, stats: pd.DataFrame, run_dir: str | Path
) -> tuple[Selection | None, dict]:
    """The params' selection redrawn from the loaded rows, written into the run dir with its manifest, and
    compared with the list the params pin. (None, {}) when the params have no selection block."""
    if not params.selection:
        return None, {}
    selection = select_instances(rows, params.selection, params.selection_seed, stats)
    manifest = selection_manifest(selection, info, params.selection)
    write_selection(Path(run_dir) / "selection" / "instances.jsonl", selection, manifest)
    return selection, compare_with_pinned(selection.ids, instance_ids_from(params))


def repo_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Per repository: candidates, median changed lines, multi-hunk and numpy/pandas-heavy counts."""
    return stats.groupby("repo").agg(
        instances=("instance_id", "size"),
        median_lines=("patch_lines", "median"),
        multi_hunk=("patch_hunks", lambda hunks: int((hunks > 1).sum())),
        numeric_heavy=("numeric_heavy", "sum"),
    )


def distribution_figures(stats: pd.DataFrame) -> list:
    """Histograms of the candidates' gold-patch size and FAIL_TO_PASS count, coloured by repository."""
    import plotly.express as px  # optional heavy dependency: only the notebook draws

    columns = (("patch_lines", "gold patch: changed lines"), ("patch_hunks", "gold patch: hunks"),
               ("n_fail_to_pass", "FAIL_TO_PASS tests"))
    return [px.histogram(stats, x=column, color="repo", title=title, height=320) for column, title in columns]


def candidate_browser(rows: list[dict], ids: list[str]):
    """An ipywidgets browser: pick an instance, read its issue, gold patch and tests (browser_html)."""
    import ipywidgets as widgets  # optional heavy dependency: only the notebook browses

    by_id = {row["instance_id"]: row for row in rows}
    picker = widgets.Dropdown(options=ids, description="instance")
    view = widgets.HTML(browser_html(by_id[ids[0]]) if ids else "")
    picker.observe(lambda change: setattr(view, "value", browser_html(by_id[change["new"]])), names="value")
    return widgets.VBox([picker, view])


def resolve_dataset_path(path: str, project_root: str | Path) -> str:
    """A local dataset path as given when it exists from here, else relative to the project root
    (notebooks may run from notebooks/ or from the root). Kept as given for the manifest when it exists."""
    if Path(path).exists():
        return path
    candidate = Path(project_root) / path
    return str(candidate) if candidate.exists() else path


def load_for_params(params: Any, dataset_path: str | None = None) -> tuple[list[dict], dict]:
    """The dataset rows a params file names (or a local override) and their `dataset_info`."""
    if dataset_path:
        source, revision = resolve_dataset_path(dataset_path, params.project_root), None
    else:
        source, revision = params.dataset.source, params.dataset.revision
        if Path(source).suffix in (".json", ".jsonl", ".parquet"):
            source = resolve_dataset_path(source, params.project_root)
    rows = load_instances(source, params.dataset.split, revision)
    info = dataset_info(dataset_path or params.dataset.source, revision, rows, params.dataset.split)
    return rows, info


def run_rows_for(params: Any, rows: list[dict], selection: Selection | None) -> list[dict]:
    """The run's rows: the selection when the params say `instances: all` and give one, else what they pin."""
    if params.instances == "all" and selection is not None:
        return rows_for_ids(rows, selection.ids, "selection")
    return resolve_instances(params, rows)


def browser_html(row: dict) -> str:
    """One instance as HTML for the notebook's candidate browser: issue, gold patch, test patch, tests."""
    f2p, p2p = test_lists(row)
    parts = [
        f"<h4>{escape(row['instance_id'])} <small>{escape(row['repo'])} {escape(str(row['version']))}</small></h4>",
        f"<details open><summary>issue</summary><pre>{escape(row.get('problem_statement') or '')}</pre></details>",
        f"<details><summary>gold patch</summary><pre>{escape(row['patch'])}</pre></details>",
        f"<details><summary>test patch</summary><pre>{escape(row['test_patch'])}</pre></details>",
        f"<p>FAIL_TO_PASS ({len(f2p)}): {escape(', '.join(f2p[:10]))}</p>",
        f"<p>PASS_TO_PASS: {len(p2p)} tests</p>",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------- command line


def pin_from_params(params: Any, dataset_path: str | None = None) -> tuple[Path, Path]:
    """Recompute the params' selection and write it to the file its `instances` names."""
    if not isinstance(params.instances, str) or not params.instances.endswith(".jsonl"):
        raise SelectionError(f"{params.source_file}: field 'instances' must name a .jsonl file to pin")
    rows, info = load_for_params(params, dataset_path)
    result = select_instances(rows, params.selection, params.selection_seed)
    manifest = selection_manifest(result, info, params.selection)
    return write_selection(params.resolve_path(params.instances), result, manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Recompute and pin the instance list of a params file.")
    parser.add_argument("params_file")
    parser.add_argument("--dataset", help="a local JSON/JSONL/parquet copy to use instead of the params' dataset")
    args = parser.parse_args(argv)
    instances, manifest = pin_from_params(load_params(args.params_file), args.dataset)
    print(f"wrote {instances} and {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
