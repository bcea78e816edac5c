"""Caseless comparison of user-entered text."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable


def _key(text: str) -> str:
    """The form two strings share when they differ only by case or Unicode composition."""
    return unicodedata.normalize("NFC", text).lower()


def equals_ignore_case(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` are the same text ignoring case, for every script.

    "Résumé" (composed) and "RE\u0301SUME\u0301" (combining accents) compare equal.
    """
    return _key(a) == _key(b)


def unique_words(words: Iterable[str]) -> list[str]:
    """The words in first-seen order, dropping later duplicates that differ only by case."""
    seen: set[str] = set()
    result: list[str] = []
    for word in words:
        key = _key(word)
        if key not in seen:
            seen.add(key)
            result.append(word)
    return result
