"""A ledger: an ordered list of entries, each an amount in integer cents with tags."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    description: str
    cents: int
    tags: tuple[str, ...] = ()


class Ledger:
    def __init__(self) -> None:
        self._entries: list[Entry] = []

    def add(self, description: str, cents: int, tags: list[str] = []) -> Entry:
        """Record ``cents`` (an integer number of cents; negative for money going out).

        Entries for money going out are tagged "debit" automatically.
        """
        cents = int(cents)  # accept any integral type (numpy ints, bools from spreadsheets)
        if cents < 0 and "debit" not in tags:
            tags.append("debit")
        entry = Entry(description.strip(), cents, tuple(tags))
        self._entries.append(entry)
        return entry

    def entries(self, tag: str | None = None) -> list[Entry]:
        """All entries in insertion order, or only those carrying ``tag``."""
        if tag is None:
            return list(self._entries)
        return [entry for entry in self._entries if tag in entry.tags]

    def balance(self) -> int:
        """The sum of all entries, in cents."""
        return sum(entry.cents for entry in self._entries)

    def totals_by_tag(self) -> dict[str, int]:
        """Cents per tag; an entry with several tags counts toward each of them."""
        totals: dict[str, int] = defaultdict(int)
        for entry in self._entries:
            for tag in entry.tags:
                totals[tag] += entry.cents
        return dict(totals)
