"""Exercise the local backend on real psf/requests, pallets/flask, sympy, pylint and django code where
GitHub is out of reach.

Not a test (pytest does not collect it) and not the official reproduction: that needs each row's exact
base commit. Here each Lite row's repository is stood in by the PyPI source release nearest its base commit
(the newest one before the row was created, else the first after it, whichever both the test patch and the
gold patch apply to), made into a one-commit git repository and handed to the local backend through
`repo_sources`. Gold and no-patch runs are then graded by swebench as usual, and every listed test whose
outcome differs from what the official verdict implies (gold: every FAIL_TO_PASS and PASS_TO_PASS test
passes; no patch: some FAIL_TO_PASS test fails) is printed, so what is left can be read as code drift
between the release and the base commit, or as an environment fault of ours.

    .venv/bin/python tests/near_base_check.py ../shared/data/swe-bench-lite-test.jsonl [INSTANCE ...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

from swelab.evaluate.local import evaluate_local
from swelab.select import dataset
from swelab.workspace import recipes
from swelab.workspace.repos import Workspace

PYPI_NAMES = {
    "psf/requests": "requests", "pallets/flask": "flask", "sympy/sympy": "sympy", "pylint-dev/pylint": "pylint",
    "django/django": "django", "scikit-learn/scikit-learn": "scikit-learn", "matplotlib/matplotlib": "matplotlib",
    "astropy/astropy": "astropy",
}
# sympy's source releases leave out bin/test, the runner its eval script calls; this is the part of it that
# matters here (-C turns the cache off before sympy is imported, --verbose prints one line per test).
SYMPY_BIN_TEST = """#!/usr/bin/env python
# written by swelab's tests/near_base_check.py: the source release has no bin/test
import os
import sys

options = [a for a in sys.argv[1:] if a.startswith("-")]
if "-C" in options or "--no-cache" in options:
    os.environ["SYMPY_USE_CACHE"] = "no"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sympy.utilities.runtests import test

paths = [a for a in sys.argv[1:] if not a.startswith("-")]
sys.exit(0 if test(*paths, verbose="--verbose" in options) else 1)
"""
SIMPLE = "https://pypi.org/simple/{name}/"


def source_releases(name: str) -> list[tuple[str, str, str]]:
    """(upload time, file name, URL) of every final source release on PyPI, oldest first."""
    request = urllib.request.Request(SIMPLE.format(name=name),
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    found = []
    for item in files:
        filename = item["filename"]
        version = filename[len(name) + 1: -len(".tar.gz")] if filename.endswith(".tar.gz") else ""
        if version and all(part.isdigit() for part in version.split(".")) and item.get("upload-time"):
            found.append((item["upload-time"], filename, item["url"]))
    return sorted(found)


def repository_from(url: str, folder: Path) -> tuple[Path, str]:
    """Download a source release and commit it as a one-commit repository; returns (path, commit)."""
    archive = folder / url.rsplit("/", 1)[-1]
    if not archive.exists():
        urllib.request.urlretrieve(url, archive)
    repo = folder / archive.name.removesuffix(".tar.gz")
    if not (repo / ".git").exists():
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        for generated in [repo / "PKG-INFO", *repo.glob("*.egg-info"), *repo.glob("src/*.egg-info")]:
            shutil.rmtree(generated) if generated.is_dir() else generated.unlink()
        if archive.name.startswith("sympy-") and not (repo / "bin" / "test").exists():
            (repo / "bin" / "test").write_text(SYMPY_BIN_TEST)
            (repo / "bin" / "test").chmod(0o755)
        if archive.name.startswith("scikit-learn-"):
            drop_cython_outputs(repo)
        env = {"GIT_AUTHOR_NAME": "sdist", "GIT_AUTHOR_EMAIL": "sdist@pypi", "GIT_COMMITTER_NAME": "sdist",
               "GIT_COMMITTER_EMAIL": "sdist@pypi", "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
               "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z", "PATH": "/usr/bin:/bin"}
        # -f: the release ships sources its own .gitignore names (astropy's tracked bls.c under "*.c")
        for argv in (["git", "init", "-q"], ["git", "add", "-A", "-f"], ["git", "commit", "-qm", archive.name]):
            subprocess.run(argv, cwd=repo, env=env, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
    return repo, commit.stdout.strip()


def drop_cython_outputs(repo: Path) -> None:
    """Remove what a scikit-learn sdist ships pre-generated and its git tree does not track: the .c/.cpp Cython
    made from each .pyx, and the .pyx/.pxd made from each Tempita .tp. Left in, whether a build regenerates them
    depends on file times (a `git archive` keeps them, a checkout may not), so the environment's build and the
    worktree's would compile different C (another Cython's) and their compiler cache would never hit."""
    for template in repo.rglob("*.tp"):
        template.with_suffix("").unlink(missing_ok=True)
    for source in [*repo.rglob("*.pyx"), *repo.rglob("*.pyx.tp")]:
        stem = source.with_suffix("").with_suffix("") if source.suffix == ".tp" else source.with_suffix("")
        for generated in (stem.with_suffix(".c"), stem.with_suffix(".cpp")):
            generated.unlink(missing_ok=True)


def applies(repo: Path, *patches: str) -> bool:
    return all(
        subprocess.run(["git", "apply", "--check", "-"], cwd=repo, input=patch, text=True,
                       capture_output=True).returncode == 0
        for patch in patches
    )


def nearest_release(row: dict, folder: Path) -> tuple[str, Path, str] | None:
    """The release the row's patches apply to: releases of the row's own version line first (nearest its
    creation first), then of the line just before it, then the newest before its creation, then the first after.

    The line before comes second because a row of version X.Y is usually made on the development branch that
    becomes X.Y, which was forked from the branch of the line before shortly earlier (Django's 2.2.x for a 3.0
    row): its releases are closer to the base commit than an older line's that merely came out near the row's
    creation (2.0.13, the same day as 2.1.7)."""
    name = PYPI_NAMES[row["repo"]]
    releases = source_releases(name)
    created = row["created_at"][:19].replace(" ", "T")

    def line(filename: str) -> str:
        return ".".join(filename[len(name) + 1: -len(".tar.gz")].split(".")[:2])

    def distance(release: tuple[str, str, str]) -> float:
        parse = datetime.datetime.fromisoformat
        return abs((parse(release[0][:19]) - parse(created)).total_seconds())

    same_line = sorted((r for r in releases if line(r[1]) == row["version"]), key=distance)[:3]
    previous = line_before(row["version"], [line(r[1]) for r in releases])
    previous_line = sorted((r for r in releases if line(r[1]) == previous), key=distance)[:3]
    before = [r for r in releases if r[0] < created][::-1][:3]
    after = [r for r in releases if r[0] >= created][:3]
    candidates = list(dict.fromkeys(same_line + previous_line + before + after))
    for _, filename, url in candidates:
        repo, commit = repository_from(url, folder)
        if applies(repo, row["test_patch"], row["patch"]):
            return filename, repo, commit
    return None


def line_before(version: str, lines: list[str]) -> str | None:
    """The newest version line older than `version` ("2.2" for "3.0" among 1.11, 2.0, 2.1, 2.2, 3.0, 3.1)."""

    def key(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split(".") if part.isdigit())

    older = [candidate for candidate in set(lines) if key(candidate) < key(version)]
    return max(older, key=key, default=None)


def disagreements(verdict, gold: bool) -> list[str]:
    status = verdict.report.get("tests_status")
    if not status:
        return ["no test result in the log"]

    def named(kind: str, test: str) -> str:
        # swebench counts a test missing from the log as failed: here that means the release lacks it
        ran = test in verdict.log or test.split("::", 1)[-1].replace("::", ".") in verdict.log
        return f"{kind} {test}" + ("" if ran else " (not in this release)")

    failed_f2p = status.get("FAIL_TO_PASS", {}).get("failure", [])
    failed_p2p = [named("P2P", t) for t in status.get("PASS_TO_PASS", {}).get("failure", [])]
    if gold:
        return [named("F2P", t) for t in failed_f2p] + failed_p2p
    notes = [] if failed_f2p else ["every FAIL_TO_PASS test passes without the fix (non-discriminating here)"]
    return notes + failed_p2p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="a SWE-bench dataset file in the original schema")
    parser.add_argument("instances", nargs="*", help="default: every row of those repositories")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "swelab-near-base")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [r for r in dataset.load_instances(args.dataset) if r["repo"] in PYPI_NAMES]
    if args.instances:
        rows = [r for r in rows if r["instance_id"] in args.instances]
    print("| instance | version | stood in by | gold resolved | no patch resolved | disagreements |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        ok, why = recipes.supported(row)
        if not ok:
            print(f"| {row['instance_id']} | {row['version']} | — | refused: {why} | | |")
            continue
        found = nearest_release(row, args.work)
        if found is None:
            print(f"| {row['instance_id']} | {row['version']} | no release takes both patches | | | |")
            continue
        filename, repo, commit = found
        stand_in = dict(row, base_commit=commit, environment_setup_commit=commit)
        workspace = Workspace(cache_dir=args.work / "cache", repo_sources={row["repo"]: str(repo)})
        start = time.monotonic()
        try:
            gold = evaluate_local(stand_in, row["patch"], workspace, timeout_s=900)
            empty = evaluate_local(stand_in, "", workspace, timeout_s=900)
        except Exception as error:  # noqa: BLE001 - one row's failure is reported, the others still run
            print(f"| {row['instance_id']} | {row['version']} | {filename} | error: {error} | | |")
            continue
        (args.work / f"{row['instance_id']}.gold.log").write_text(gold.log)
        (args.work / f"{row['instance_id']}.empty.log").write_text(empty.log)
        notes = [f"gold: {d}" for d in disagreements(gold, True)]
        notes += [f"no patch: {d}" for d in disagreements(empty, False)]
        print(f"| {row['instance_id']} | {row['version']} | {filename} | {gold.resolved} | {empty.resolved} | "
              f"{'; '.join(notes) or 'none'} ({time.monotonic() - start:.0f} s) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
