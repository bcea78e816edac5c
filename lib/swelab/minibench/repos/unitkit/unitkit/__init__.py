"""unitkit: parse and convert quantities, byte sizes and calendar dates."""

from unitkit.convert import convert, convert_text
from unitkit.dates import add_months, days_in_month, is_leap_year, parse_date
from unitkit.sizes import format_size, parse_size
from unitkit.units import IncompatibleUnitsError, UnknownUnitError, normalize_unit, parse_quantity

__all__ = [
    "IncompatibleUnitsError",
    "UnknownUnitError",
    "add_months",
    "convert",
    "convert_text",
    "days_in_month",
    "format_size",
    "is_leap_year",
    "normalize_unit",
    "parse_date",
    "parse_quantity",
    "parse_size",
]
__version__ = "0.1.0"
