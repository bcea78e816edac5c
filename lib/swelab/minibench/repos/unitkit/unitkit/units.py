"""The unit table, unit names and quantity parsing."""

from __future__ import annotations

import re


class UnknownUnitError(ValueError):
    """A unit name that is neither a symbol nor a known alias."""


class IncompatibleUnitsError(ValueError):
    """A conversion between units of different dimensions (e.g. metres to kilograms)."""


# symbol -> (dimension, how many base units of that dimension one of it is)
UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 0.001),
    "cm": ("length", 0.01),
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "in": ("length", 0.0254),
    "ft": ("length", 0.3048),
    "mi": ("length", 1609.344),
    "g": ("mass", 1.0),
    "kg": ("mass", 1000.0),
    "oz": ("mass", 28.349523125),
    "lb": ("mass", 453.59237),
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
    "d": ("time", 86400.0),
}

# lowercase alias -> symbol
ALIASES: dict[str, str] = {
    "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm",
    "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
    "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "inch": "in", "inches": "in", "foot": "ft", "feet": "ft", "mile": "mi", "miles": "mi",
    "gram": "g", "grams": "g", "kilogram": "kg", "kilograms": "kg",
    "ounce": "oz", "ounces": "oz", "pound": "lb", "pounds": "lb", "lbs": "lb",
    "sec": "s", "second": "s", "seconds": "s", "minute": "min", "minutes": "min", "mins": "min",
    "hr": "h", "hour": "h", "hours": "h", "day": "d", "days": "d",
}

_QUANTITY = re.compile(r"(?P<value>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*(?P<unit>[^\d\s].*)")


def normalize_unit(name: str) -> str:
    """The symbol for a unit written by symbol or name, in any case: "KM", "Kilometres" -> "km"."""
    key = name.strip()
    if key in UNITS:
        return key
    key = key.lower()
    key = ALIASES.get(key, key)
    if key not in UNITS:
        raise UnknownUnitError(f"unknown unit: {name!r}")
    return key


def parse_quantity(text: str) -> tuple[float, str]:
    """Split "3.5 km" or "10kg" into (value, unit symbol)."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    return float(match["value"]), normalize_unit(match["unit"])


def dimension(unit: str) -> str:
    """The dimension ("length", "mass", "time") of a unit symbol."""
    return UNITS[normalize_unit(unit)][0]
