"""Truncating and wrapping text to a fixed width."""

from __future__ import annotations


def truncate(text: str, width: int, suffix: str = "…") -> str:
    """Shorten ``text`` to at most ``width`` characters, ending with ``suffix`` when it had to be cut.

    Text that already fits is returned unchanged. Whitespace just before the suffix is dropped.
    """
    if width < len(suffix):
        raise ValueError(f"width {width} is smaller than the suffix {suffix!r}")
    if len(text) <= width:
        return text
    keep = width - len(suffix) + 1
    return text[:keep].rstrip() + suffix


def wrap(text: str, width: int) -> list[str]:
    """Greedily wrap ``text`` into lines of at most ``width`` characters.

    Words are never split; a word longer than ``width`` gets a line of its own.
    """
    if width <= 0:
        raise ValueError("width must be positive")
    lines: list[str] = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current = f"{current} {word}"
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines
