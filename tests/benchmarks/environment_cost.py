"""What the local backend costs on real repositories: environment build time and disk, and warm grading throughput.

    .venv/bin/python tests/benchmarks/environment_cost.py [--rounds N] [--cache DIR ...]

1. Builds, cold and one at a time, the environments of the 9 requests and flask Lite rows whose exact base commits
   ../shared/data/repos/ holds (a fresh cache: PyPI downloads come from pip's own cache when warm), timing each.
2. Grades every row's gold patch `--rounds` times with warm environments (evaluations per minute per core: one
   evaluation runs its tests on one core); the baseline, measured in the same run, is the time the tests take by
   themselves (pytest's own summary line in each log), so the ratio is what grading adds around the tests: the
   worktree, the sandbox, the stand-in services, the parse. Every gold verdict must be resolved.
3. With `--cache DIR` (the fidelity runs' cache, say), lists the build time and disk of every environment built
   there (Workspace records each build's seconds in the environment's .swelab-build.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from swelab import sandbox
from swelab.evaluate import local
from swelab.workspace.repos import BUILD_RECORD, Workspace

SHARED = Path(os.environ.get("SWELAB_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
ARCHIVES = {"psf/requests": "psf__requests.git.tar.gz", "pallets/flask": "pallets__flask.git.tar.gz"}
ROWS = ["pallets__flask-4045", "pallets__flask-4992", "pallets__flask-5063", "psf__requests-1963",
        "psf__requests-2148", "psf__requests-2317", "psf__requests-2674", "psf__requests-3362", "psf__requests-863"]


def pytest_seconds(log: str) -> float:
    """The run time pytest reports for itself on its summary line ("== 12 passed in 3.21s ==")."""
    found = re.findall(r"=+ .*? in ([0-9.]+)s(?: \([0-9:]+\))? =+", log)
    if not found:
        sys.exit(f"no pytest summary line in the log:\n{log[-1500:]}")
    return float(found[-1])


def disk_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1024 if out else 0.0


def cached_builds(cache: Path) -> list[tuple[str, str, float, float]]:
    """(repo, version, build seconds, disk MB) of every environment in `cache` with a build record."""
    found = []
    for record in sorted((cache / "envs").glob(f"*/{BUILD_RECORD}")):
        data = json.loads(record.read_text())
        found.append((data["repo"], data["version"], data["seconds"], disk_mb(record.parent)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, action="append", default=[], help="also list this cache's builds")
    args = parser.parse_args()
    problem = sandbox.sandbox_problem(evaluation=True)
    if problem:
        sys.exit(f"no evaluation sandbox here: {problem}")
    if not all((SHARED / "repos" / name).exists() for name in ARCHIVES.values()):
        sys.exit(f"no requests/flask mirrors under {SHARED / 'repos'} (set SWELAB_SHARED_DATA)")
    rows = {r["instance_id"]: r for r in map(json.loads, (SHARED / "swe-bench-lite-test.jsonl").open())
            if r["instance_id"] in ROWS}
    root = Path(tempfile.mkdtemp(prefix="swelab-envcost-"))
    sources = {}
    for repo, archive in ARCHIVES.items():
        subprocess.run(["tar", "-xzf", str(SHARED / "repos" / archive), "-C", str(root)], check=True)
        sources[repo] = str(root / archive.removesuffix(".tar.gz").split("__", 1)[1])
    workspace = Workspace(cache_dir=root / "cache", repo_sources=sources)

    print("1. environment builds (cold, one at a time)")
    built: dict[str, tuple[float, float]] = {}
    for iid in ROWS:
        row = local.grading_row(rows[iid])
        key = workspace.environment_key(row)
        if key in built:
            continue
        started = time.perf_counter()
        environment = workspace.environment(row)
        built[key] = (time.perf_counter() - started, disk_mb(environment.path))
        print(f"   {row['repo']} {row['version']}: {built[key][0]:.0f} s, {built[key][1]:.0f} MB")

    print(f"2. warm grading, {args.rounds} rounds of {len(ROWS)} gold patches")
    graded, tests_only = [], []
    for _ in range(args.rounds):
        for iid in ROWS:
            started = time.perf_counter()
            verdict = local.evaluate_local(rows[iid], rows[iid]["patch"], workspace, timeout_s=1800)
            graded.append(time.perf_counter() - started)
            if not verdict.resolved:
                sys.exit(f"{iid}: the gold patch did not resolve:\n{verdict.log[-2000:]}")
            tests_only.append(pytest_seconds(verdict.log))
    median_graded, median_tests = statistics.median(graded), statistics.median(tests_only)
    print(f"   graded (worktree, sandbox, stand-ins, swebench grading): median {median_graded:.2f} s per evaluation, "
          f"{60 / median_graded:.1f} evaluations per minute per core")
    print(f"   the tests themselves (pytest's own summary time in the same logs): median {median_tests:.2f} s")
    print(f"   ratio graded / tests (medians): {median_graded / median_tests:.2f}x")

    for cache in args.cache:
        print(f"3. environments built in {cache}")
        per_repo: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
        for repo, version, seconds, mb in cached_builds(cache):
            per_repo[repo].append((version, seconds, mb))
        for repo, entries in sorted(per_repo.items()):
            listed = ", ".join(f"{v}: {s:.0f} s / {mb:.0f} MB" for v, s, mb in entries)
            print(f"   {repo}: {listed}")


if __name__ == "__main__":
    main()
