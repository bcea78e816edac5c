"""Money as integer cents: parsing and formatting."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from ledger.errors import InvalidAmountError

CENT = Decimal("0.01")


def to_cents(value: str | int | Decimal) -> int:
    """Convert an amount in currency units ("12.50", "1,234.5", Decimal("3"), 7) to integer cents.

    Fractions of a cent are rounded half up, the way invoices round: "0.125" -> 13 cents.
    """
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        raise InvalidAmountError(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise InvalidAmountError(f"not a finite amount: {value!r}")
    return int(amount.quantize(CENT) * 100)


def format_cents(cents: int, symbol: str = "$") -> str:
    """Format integer cents for people: -123456 -> "-$1,234.56"."""
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(cents), 100)
    return f"{sign}{symbol}{units:,}.{rest:02d}"
