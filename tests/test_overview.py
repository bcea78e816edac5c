"""swelab.select.overview: what 01_select shows about a recomputed selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from swelab.select import selection as select
from swelab.select.dataset import load_instances
from swelab.select.overview import BROWSE_LIMIT, SHOWN_COLUMNS, selection_overview

FIXTURE = Path(__file__).with_name("fixtures") / "swebench_lite_sample.jsonl"


@pytest.fixture(scope="module")
def stats():
    return select.instance_stats(load_instances(str(FIXTURE)))


@pytest.fixture(scope="module")
def drawn(stats):
    rows = load_instances(str(FIXTURE))
    return select.select_instances(rows, {"name": "one", "count": 3}, seed=42, stats=stats)


def test_without_a_selection_block_the_first_candidates_are_browsed(stats):
    overview = selection_overview(None, {}, stats, limit=2)
    assert overview.table is None and "no selection block" in overview.text
    assert overview.browse_ids == list(stats["instance_id"][:2])
    assert len(selection_overview(None, {}, stats).browse_ids) == min(len(stats), BROWSE_LIMIT)


def test_a_matching_pin_is_said_and_the_chosen_rows_shown(stats, drawn):
    check = select.compare_with_pinned(drawn.ids, list(reversed(drawn.ids)))
    overview = selection_overview(drawn, check, stats)
    assert overview.text == "recomputed 3 ids; shortfall none; matches the pinned list"
    assert sorted(overview.table["instance_id"]) == sorted(drawn.ids) and list(overview.table) == SHOWN_COLUMNS
    assert overview.browse_ids == drawn.ids


def test_a_differing_pin_names_the_ids_on_each_side(stats, drawn):
    check = select.compare_with_pinned(drawn.ids, [*drawn.ids[:2], "other__other-1"])
    text = selection_overview(drawn, check, stats).text
    assert "differs from the pinned list" in text and drawn.ids[2] in text and "other__other-1" in text


def test_no_pin_is_not_reported_as_a_difference(stats, drawn):
    text = selection_overview(drawn, select.compare_with_pinned(drawn.ids, None), stats).text
    assert "pin no list" in text and "differs" not in text
