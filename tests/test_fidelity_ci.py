"""The official verdicts on real SWE-bench Lite rows, reproduced without Docker, on every `make test`.

The 9 requests and flask rows of Lite at their exact base commits (the small mirrors in ../shared/data/repos/),
through the product's own path: a params file outside the project, `runner.generate` with the gold and empty
agents, `evaluate_run` on the local backend. The official harness resolves all 9 gold patches; with no patch 7
stay unresolved, and requests-863 and -2674 pass their FAIL_TO_PASS tests unpatched (non-discriminating).

Environments need PyPI (pip installs during an environment build are trusted set-up). One environment per
environment identity is built once per session and shared by both prediction sets.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from swelab.evaluate.backends import evaluate_run
from swelab.generate import runner
from swelab.io import read_json
from swelab.params import load_params
from swelab.sandbox import eval_sandbox_available, sandbox_problem
from swelab.select.instances import resolve_instances, write_run_instances
from swelab.workspace import recipes
from swelab.workspace.repos import Workspace

SHARED = Path(os.environ.get("SWELAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
REPOS = {"psf/requests": "psf__requests.git.tar.gz", "pallets/flask": "pallets__flask.git.tar.gz"}
ROWS = [
    "pallets__flask-4045", "pallets__flask-4992", "pallets__flask-5063",
    "psf__requests-1963", "psf__requests-2148", "psf__requests-2317", "psf__requests-2674",
    "psf__requests-3362", "psf__requests-863",
]
NON_DISCRIMINATING = {"psf__requests-863", "psf__requests-2674"}  # the official harness's no-patch runs agree


def _missing() -> str | None:
    if not (SHARED / "swe-bench-lite-test.jsonl").exists():
        return f"no SWE-bench Lite file at {SHARED} (set SWELAB_SHARED_DATA)"
    absent = [name for name in REPOS.values() if not (SHARED / "repos" / name).exists()]
    if absent:
        return f"no repository mirror {absent[0]} in {SHARED / 'repos'}"
    if not eval_sandbox_available():
        return f"no evaluation sandbox here: {sandbox_problem(evaluation=True)}"
    pythons = {recipes.RECIPES[(repo, v)].python for repo, v in _versions()}
    lacking = sorted(p for p in pythons if recipes.find_python(p) is None)
    if lacking:
        return f"no Python {', '.join(lacking)} on this machine (the recipes need it)"
    return None


def _versions() -> set[tuple[str, str]]:
    rows = [json.loads(line) for line in (SHARED / "swe-bench-lite-test.jsonl").read_text().splitlines()]
    return {(row["repo"], row["version"]) for row in rows if row["instance_id"] in ROWS}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[dict, dict, Path]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("fidelity")
    sources = {}
    for repo, archive in REPOS.items():
        subprocess.run(["tar", "-xzf", str(SHARED / "repos" / archive), "-C", str(root)], check=True)
        sources[repo] = str(root / archive.removesuffix(".tar.gz").split("__", 1)[1])
    params_file = root / "fidelity.yaml"  # outside the project: a params file anywhere works
    params_file.write_text(json.dumps({
        "name": "fidelity-ci",
        "dataset": str(SHARED / "swe-bench-lite-test.jsonl"),
        "instances": ROWS,
        "attempts": 1,
        "workers": 2,
        "eval_workers": 2,
        "outputs_dir": str(root / "outputs"),
        "repo_sources": sources,
        "models": [{"name": "gold", "kind": "gold"}, {"name": "no-patch", "kind": "empty"}],
    }))
    params = load_params(params_file, environ={})
    rows = resolve_instances(params)
    write_run_instances(params.run_dir, rows)
    runner.generate(params, rows, progress=False)
    workspace = Workspace(cache_dir=root / "cache", repo_sources=sources)
    summaries = {s["model"]: s for s in evaluate_run(params, workspace=workspace, progress=False)}
    return summaries, read_json(params.run_dir / "eval" / "discrimination.json"), params.run_dir


def test_gold_patches_resolve_all_nine_rows_as_the_official_harness(graded):
    summaries, _, run_dir = graded
    gold = summaries["gold"]
    failed = sorted(set(ROWS) - set(gold["resolved_ids"]))
    assert not failed, f"gold unresolved: {failed} (logs under {run_dir / 'eval'})"
    assert gold["resolved"] == 9 and gold["errors"] == 0 and not gold["unsupported"]


def test_no_patch_leaves_seven_unresolved_and_flags_the_other_two(graded):
    summaries, flags, _ = graded
    empty = summaries["no-patch"]
    assert set(empty["resolved_ids"]) <= NON_DISCRIMINATING
    assert {iid for iid, flag in flags.items() if flag["non_discriminating"]} == NON_DISCRIMINATING
    assert len(set(ROWS) - set(empty["resolved_ids"]) - NON_DISCRIMINATING) == 7
