"""Human-readable byte sizes in binary (1024-based) units."""

from __future__ import annotations

import re

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"]
_FACTORS = {unit.lower(): 1024**power for power, unit in enumerate(_UNITS)}
_SIZE = re.compile(r"(?P<value>\d+(\.\d+)?)\s*(?P<unit>[a-z]*)", re.IGNORECASE)


def format_size(n_bytes: int, precision: int = 1) -> str:
    """Format a byte count with the largest unit that keeps the number at or above 1.

    512 -> "512 B", 1536 -> "1.5 KiB", 3 * 1024**3 -> "3.0 GiB".
    """
    if n_bytes < 0:
        raise ValueError(f"size cannot be negative: {n_bytes}")
    if n_bytes <= 1024:
        return f"{n_bytes} B"
    size = n_bytes / 1024
    for unit in _UNITS[1:]:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{size:.{precision}f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """Parse "1.5 KiB", "10 mib", "512" or "512 B" into a whole number of bytes."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    unit = (match["unit"] or "B").lower()
    if unit not in _FACTORS:
        raise ValueError(f"unknown size unit in {text!r}")
    return round(float(match["value"]) * _FACTORS[unit])
