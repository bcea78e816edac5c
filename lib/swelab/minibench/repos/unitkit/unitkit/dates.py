"""Calendar arithmetic on datetime.date."""

from __future__ import annotations

import re
from datetime import date

_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year: int, month: int) -> int:
    if not 1 <= month <= 12:
        raise ValueError(f"month must be in 1..12, got {month}")
    return 29 if month == 2 and is_leap_year(year) else _DAYS[month - 1]


def add_months(day: date, months: int) -> date:
    """Move ``day`` by ``months`` calendar months (negative moves back).

    The day of the month is kept, clamped to the last day of a shorter month:
    Jan 31 + 1 month is Feb 29 in a leap year and Feb 28 otherwise.
    """
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    return day.replace(year=year, month=month + 1)


def parse_date(text: str) -> date:
    """Parse an ISO date "2024-03-09" (single-digit month and day allowed)."""
    match = _ISO.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO date: {text!r}")
    year, month, day_of_month = (int(group) for group in match.groups())
    if not 1 <= day_of_month <= days_in_month(year, month):
        raise ValueError(f"day out of range: {text!r}")
    return date(year, month, day_of_month)
