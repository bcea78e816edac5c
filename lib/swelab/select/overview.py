"""What 01_select shows about a recomputed selection: one sentence, the chosen rows, the ids to browse."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from swelab.select.selection import Selection

SHOWN_COLUMNS = ["instance_id", "repo", "patch_hunks", "patch_lines", "n_fail_to_pass", "numeric_heavy"]
BROWSE_LIMIT = 50


@dataclass(frozen=True)
class SelectionOverview:
    text: str
    """How the redraw went and how it compares with the pinned list."""
    table: pd.DataFrame | None
    """The chosen candidates' statistics; None when the params have no selection block."""
    browse_ids: list[str]
    """The ids for the candidate browser: the selection, else the first candidates."""


def selection_overview(selection: Selection | None, check: dict, stats: pd.DataFrame,
                       limit: int = BROWSE_LIMIT) -> SelectionOverview:
    """Summarise recompute_selection's result (selection, compare_with_pinned's check) for display."""
    if selection is None:
        return SelectionOverview("no selection block in the params: the run takes the instances they list",
                                 None, [str(i) for i in stats["instance_id"][:limit]])
    if not check.get("pinned"):
        verdict = "the params pin no list to compare with"
    elif check.get("matches"):
        verdict = "matches the pinned list"
    else:
        verdict = (f"differs from the pinned list: only recomputed {check.get('only_recomputed')}, "
                   f"only pinned {check.get('only_pinned')}")
    text = f"recomputed {len(selection.ids)} ids; shortfall {selection.shortfall or 'none'}; {verdict}"
    table = stats[stats["instance_id"].isin(selection.ids)][SHOWN_COLUMNS]
    return SelectionOverview(text, table, list(selection.ids))
