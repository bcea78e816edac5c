"""Converting quantities between units of one dimension."""

from __future__ import annotations

from unitkit.units import UNITS, IncompatibleUnitsError, UnknownUnitError, parse_quantity


def convert(value: float, src: str, dst: str) -> float:
    """Convert ``value`` from unit ``src`` to unit ``dst``.

    Raises UnknownUnitError for a unit it does not know and IncompatibleUnitsError when the two
    units measure different things.
    """
    try:
        src_dimension, src_factor = UNITS[src]
        dst_dimension, dst_factor = UNITS[dst]
    except KeyError as exc:
        raise UnknownUnitError(f"unknown unit: {exc.args[0]!r}") from None
    if src_dimension != dst_dimension:
        raise IncompatibleUnitsError(f"cannot convert {src_dimension} ({src}) to {dst_dimension} ({dst})")
    return value * src_factor / dst_factor


def convert_text(text: str, dst: str, ndigits: int | None = None) -> float:
    """Parse a quantity such as "5 km" and convert it to ``dst``, rounded to ``ndigits`` if given."""
    value, unit = parse_quantity(text)
    result = convert(value, unit, dst)
    return result if ndigits is None else round(result, ndigits)
