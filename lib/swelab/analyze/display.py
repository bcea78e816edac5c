"""Notebook display helpers: the notebooks show what the library computed, with no loop of their own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import plotly.io as pio
from IPython.display import Markdown, display


def setup_notebook_plotting() -> None:
    """Figures in executed notebooks carry plotly.js inline once (offline) besides plotly's own mimetype, so
    the nbconvert export of a notebook shows its charts too, with no network."""
    pio.renderers.default = "plotly_mimetype+notebook"


def displayables(items: Mapping[str, Any] | Iterable[Any], empty: str = "", headings: bool = True) -> list[Any]:
    """What `show` displays, in order: a heading per named item, then the item; a str (a figure's reason for
    being absent, a note) becomes Markdown; `empty` stands in for an empty collection."""
    pairs = list(items.items()) if isinstance(items, Mapping) else [(None, item) for item in items]
    if not pairs:
        return [Markdown(empty)] if empty else []
    shown: list[Any] = []
    for name, item in pairs:
        if isinstance(item, str):
            shown.append(Markdown(f"**{name}**: {item}" if name is not None else item))
            continue
        if headings and name is not None:
            shown.append(Markdown(f"### {name}"))
        shown.append(item)
    return shown


def show(items: Mapping[str, Any] | Iterable[Any], empty: str = "", headings: bool = True) -> None:
    """Display tables, plotly figures (through the renderer setup_notebook_plotting chose) and sentences."""
    for item in displayables(items, empty, headings):
        display(item)

