"""The iteration memo: the research plan's exit criteria, checked from the run's data, at the top of the report.

    1. best model vs the no-patch baseline  the best contender's pass@1 is above the `empty` model's, and the
                                            paired exact McNemar test says it is more than chance
    2. reproducibility                      the redrawn selection is byte-identical to the pinned list, and
                                            repeated gold / no-patch verdicts agree (eval_repeats > 1)
    3. artifact completeness                predictions, evaluator reports, test logs, trajectories and call
                                            records for every cell that should have them

Each criterion is `met`, `not met` or `not measurable`, with why. The criteria are pure functions over the tidy
frames (and small evidence records); `selection_evidence` and `artifact_inventory` at the bottom are the only
code here that looks at files, and only to list what exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from swelab.analyze import metrics
from swelab.io import read_json, read_jsonl
from swelab.params import find_project_root
from swelab.paths import project_root
from swelab.rundir import RunLayout

MET, NOT_MET, NOT_MEASURABLE = "met", "not met", "not measurable"
ALPHA = 0.05
ARTIFACTS = ("prediction", "evaluator report", "test log", "trajectory", "calls", "server log")
PLURALS = {"prediction": "predictions", "evaluator report": "evaluator reports", "test log": "test logs",
           "trajectory": "trajectories", "calls": "call records", "server log": "server logs"}
INVENTORY_COLUMNS = ["model", "instance_id", "attempt", "artifact", "expected", "present"]


@dataclass(frozen=True)
class Criterion:
    """One exit criterion of the plan, judged from the data."""

    name: str
    """What is checked, in the plan's words."""
    status: str
    """met | not met | not measurable."""
    why: str
    """The numbers behind the status, in one or two sentences."""


@dataclass(frozen=True)
class SelectionEvidence:
    """How the run's redrawn selection compares with the list the params pin."""

    state: str
    """identical | differs | absent (no selection block, or nothing pinned to compare with)."""
    detail: str
    """What was compared, in words."""


# ---------------------------------------------------------------- the criteria (pure)


def _pct(value: float) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.1%}"


def best_vs_baseline(attempts: pd.DataFrame, board: pd.DataFrame, baselines: Iterable[str]) -> Criterion:
    """The best contender (highest pass@1; oracle rows and baselines left out) against the first baseline the
    board holds: met when its pass@1 is higher AND the exact McNemar test on attempt 1 gives p < 0.05."""
    name = "best model beats the no-patch baseline"
    baselines = list(baselines)
    if board.empty:
        return Criterion(name, NOT_MEASURABLE, "no attempt has finished in this run")
    graded = board.dropna(subset=["pass@1"])
    base = graded[graded["model"].isin(baselines)]
    contenders = graded[~graded["oracle"].astype(bool) & ~graded["model"].isin(baselines)]
    if base.empty:
        return Criterion(name, NOT_MEASURABLE, "the run has no graded no-patch baseline (a model of kind `empty`)")
    if contenders.empty:
        return Criterion(name, NOT_MEASURABLE, "the run has no graded contender besides the baseline and oracles")
    best = contenders.sort_values("pass@1", ascending=False, kind="stable").iloc[0]
    baseline = base.iloc[0]
    test = metrics.compare_models(attempts, best["model"], baseline["model"], attempt=1)
    numbers = (f"{best['model']} {_pct(best['pass@1'])} vs {baseline['model']} {_pct(baseline['pass@1'])} "
               f"pass@1; exact McNemar on attempt 1 over {test['n']} shared instances: {test['a_only']} resolved "
               f"only by {best['model']}, {test['b_only']} only by the baseline, p = {test['p_value']:.3g}")
    if test["n"] == 0:
        return Criterion(name, NOT_MEASURABLE, f"{best['model']} and {baseline['model']} share no graded instance")
    if best["pass@1"] <= baseline["pass@1"]:
        return Criterion(name, NOT_MET, f"the best model is not above the baseline: {numbers}")
    if not test["p_value"] < ALPHA:
        return Criterion(name, NOT_MET, f"higher, but the paired test cannot tell it from chance: {numbers}")
    return Criterion(name, MET, numbers)


def _combine(parts: list[tuple[str, str]]) -> str:
    states = [state for state, _ in parts]
    if NOT_MET in states:
        return NOT_MET
    return MET if MET in states else NOT_MEASURABLE


def reproducibility(selection: SelectionEvidence, flags: pd.DataFrame) -> Criterion:
    """Met when every measurable part holds: the selection redraw is byte-identical to the pinned list, and the
    repeated gold / no-patch verdicts (eval_repeats > 1) agree on every instance; not measurable when neither
    could be checked."""
    name = "runs are reproducible"
    parts: list[tuple[str, str]] = []
    if selection.state == "identical":
        parts.append((MET, f"selection: {selection.detail}"))
    elif selection.state == "differs":
        parts.append((NOT_MET, f"selection: {selection.detail}"))
    else:
        parts.append((NOT_MEASURABLE, f"selection: {selection.detail}"))
    repeated = flags[flags["repeats"].fillna(1).astype(int) > 1] if not flags.empty else flags
    if repeated.empty:
        parts.append((NOT_MEASURABLE, "verdicts: no verdict was graded twice (eval_repeats is 1 and no "
                                      "repeated evaluation is recorded)"))
    else:
        flaky = sorted(repeated.loc[repeated["flaky"].astype(bool), "instance_id"])
        repeats = int(repeated["repeats"].max())
        if flaky:
            parts.append((NOT_MET, f"verdicts: {len(flaky)} of {len(repeated)} instances gave different gold or "
                                   f"no-patch verdicts over {repeats} repeats ({', '.join(flaky[:5])})"))
        else:
            parts.append((MET, f"verdicts: gold and no-patch verdicts identical over {repeats} repeats on "
                               f"{len(repeated)} instances"))
    return Criterion(name, _combine(parts), "; ".join(text for _, text in parts))


def completeness(inventory: pd.DataFrame) -> Criterion:
    """Met when every expected artifact of every cell is present (artifact_inventory says what is expected)."""
    name = "artifacts are complete"
    expected = inventory[inventory["expected"].astype(bool)] if not inventory.empty else inventory
    if expected.empty:
        return Criterion(name, NOT_MEASURABLE, "no cell of this run expects an artifact yet")
    missing = expected[~expected["present"].astype(bool)]
    totals = expected.groupby("artifact").size()
    if missing.empty:
        counts = ", ".join(f"{int(totals[a])} {PLURALS[a] if totals[a] != 1 else a}" for a in ARTIFACTS if a in totals)
        return Criterion(name, MET, f"every expected artifact is present: {counts}")
    gaps = []
    for artifact, group in missing.groupby("artifact", sort=False):
        first = group.iloc[0]
        where = f"{first['model']}" + (f" / {first['instance_id']} / attempt {first['attempt']}"
                                       if first["instance_id"] else "")
        gaps.append(f"{len(group)} of {int(totals[artifact])} {PLURALS.get(artifact, artifact)} missing "
                    f"(first: {where})")
    return Criterion(name, NOT_MET, "; ".join(gaps))


def exit_criteria(attempts: pd.DataFrame, board: pd.DataFrame, baselines: Iterable[str],
                  selection: SelectionEvidence, flags: pd.DataFrame, inventory: pd.DataFrame) -> list[Criterion]:
    """The plan's three exit criteria, in the plan's order."""
    return [best_vs_baseline(attempts, board, baselines), reproducibility(selection, flags),
            completeness(inventory)]


def memo_frame(criteria: list[Criterion]) -> pd.DataFrame:
    """The memo as a table (criterion, status, why) for the notebook."""
    return pd.DataFrame([{"criterion": c.name, "status": c.status, "why": c.why} for c in criteria],
                        columns=["criterion", "status", "why"])


def baseline_models(params: dict[str, Any]) -> list[str]:
    """The no-patch baselines of a run: its model entries of kind `empty` (from the resolved params)."""
    return [str(m.get("name")) for m in params.get("models") or [] if m.get("kind") == "empty"]


# ---------------------------------------------------------------- evidence from the run folder


def _pinned_path(manifest: dict[str, Any]) -> Path | None:
    pinned = (manifest.get("params") or {}).get("instances")
    if not isinstance(pinned, str) or pinned == "all":
        return None
    path = Path(pinned)
    if path.is_absolute():
        return path
    params_file = manifest.get("params_file")
    root = find_project_root(Path(params_file).parent) if params_file else project_root()
    return root / path


def selection_evidence(run_dir: str | Path, manifest: dict[str, Any]) -> SelectionEvidence:
    """Compare the selection 01_select redrew into `<run>/selection/instances.jsonl` with the file the params pin,
    byte for byte (a pinned list of ids, or none, is compared by ids, or not at all)."""
    redrawn = RunLayout(run_dir).root / "selection" / "instances.jsonl"
    if not redrawn.is_file():
        return SelectionEvidence("absent", "the params have no selection block, so there is no draw to repeat")
    pinned = _pinned_path(manifest)
    ids = [row["instance_id"] for row in read_jsonl(redrawn)]
    if pinned is not None and pinned.suffix == ".jsonl" and pinned.is_file():
        same = pinned.read_bytes() == redrawn.read_bytes()
        detail = (f"the redraw is byte-identical to {pinned.name}" if same
                  else f"the redraw ({len(ids)} ids) is not byte-identical to {pinned.name}")
        return SelectionEvidence("identical" if same else "differs", detail)
    listed = (manifest.get("params") or {}).get("instances")
    if isinstance(listed, list | tuple):
        same = sorted(ids) == sorted(map(str, listed))
        return SelectionEvidence("identical" if same else "differs",
                                 f"the redraw {'gives' if same else 'does not give'} the {len(listed)} listed ids")
    return SelectionEvidence("absent", f"the redraw picked {len(ids)} ids, but the params pin no list to compare")


def _unsupported(layout: RunLayout, model: str, attempt: int) -> set[str]:
    path = layout.eval_set_dir(model, attempt) / "report.json"
    if not path.is_file():
        return set()
    report = read_json(path)
    return set((report.get("unsupported") or {}) if isinstance(report, dict) else {})


def artifact_inventory(run_dir: str | Path, cells: pd.DataFrame, no_patch_models: Iterable[str] = (),
                       local_servers: Iterable[Iterable[str]] = ()) -> pd.DataFrame:
    """One row per (cell, artifact) with whether it is expected and present:
      prediction        every cell of a model whose kind submits a patch (not the probe),
      evaluator report  every prediction, unless the backend refused its instance,
      test log          every evaluator report (the graded test_output.txt),
      trajectory, calls every cell that made a model call (n_calls > 0),
      server log        once per embedded server whose entries made calls (`local_servers`: the model names
                        each server answered, local_server_models)."""
    layout = RunLayout(run_dir)
    no_patch = set(no_patch_models)
    predicted: dict[tuple[str, int], set[str]] = {}
    for pset in layout.prediction_sets():
        predicted[(pset.model, pset.attempt)] = ({row["instance_id"] for row in read_jsonl(pset.path)}
                                                 if pset.path.is_file() else set())
    refused: dict[tuple[str, int], set[str]] = {}
    rows = []
    for cell in cells.to_dict("records"):
        model, iid, attempt = cell["model"], cell["instance_id"], int(cell["attempt"])
        key = (model, attempt)
        wants_prediction = model not in no_patch
        has_prediction = iid in predicted.get(key, set())
        if key not in refused:
            refused[key] = _unsupported(layout, model, attempt)
        wants_report = wants_prediction and has_prediction and iid not in refused[key]
        has_report = layout.has_verdict(model, attempt, iid)
        called = not pd.isna(cell.get("n_calls")) and int(cell.get("n_calls") or 0) > 0
        folder = layout.attempt_dir(model, iid, attempt)
        checks = [("prediction", wants_prediction, has_prediction),
                  ("evaluator report", wants_report, has_report),
                  ("test log", wants_report and has_report,
                   (layout.verdict_dir(model, attempt, iid) / "test_output.txt").is_file()),
                  ("trajectory", called, (folder / "trajectory.jsonl").is_file()),
                  ("calls", called, (folder / "calls.jsonl").is_file())]
        rows += [{"model": model, "instance_id": iid, "attempt": attempt, "artifact": artifact,
                  "expected": expected, "present": expected and present} for artifact, expected, present in checks]
    for server in local_servers:  # one embedded server per model id; its log is named after one of its entries
        names = sorted(server)
        mine = cells[cells["model"].isin(names)] if not cells.empty else cells
        called = bool(not mine.empty and pd.to_numeric(mine["n_calls"], errors="coerce").fillna(0).gt(0).any())
        rows.append({"model": names[0], "instance_id": "", "attempt": 0, "artifact": "server log",
                     "expected": called,
                     "present": called and any(layout.server_log(name).is_file() for name in names)})
    return pd.DataFrame(rows, columns=INVENTORY_COLUMNS)


def local_server_models(params: dict[str, Any]) -> list[list[str]]:
    """The entries of each embedded server (provider local, no base_url; one server per model_id): each server
    leaves one log, named after the entry that started it."""
    servers: dict[str, list[str]] = {}
    for m in params.get("models") or []:
        if m.get("provider") == "local" and not m.get("base_url"):
            servers.setdefault(str(m.get("model_id")), []).append(str(m.get("name")))
    return list(servers.values())
