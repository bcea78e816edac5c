"""Stock levels per SKU."""

from __future__ import annotations

from ledger.errors import InsufficientStockError, InvalidAmountError, UnknownItemError


def _check_quantity(qty: int) -> None:
    if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
        raise InvalidAmountError(f"quantity must be a positive integer, got {qty!r}")


class Inventory:
    def __init__(self) -> None:
        self._stock: dict[str, int] = {}

    def add(self, sku: str, qty: int) -> int:
        """Put ``qty`` units of ``sku`` into stock; returns the new stock level."""
        _check_quantity(qty)
        self._stock[sku] = self._stock.get(sku, 0) + qty
        return self._stock[sku]

    def quantity(self, sku: str) -> int:
        """Units of ``sku`` in stock.

        Raises UnknownItemError for a SKU that was never added.
        """
        if sku not in self._stock:
            raise UnknownItemError(sku)
        return self._stock[sku]

    def remove(self, sku: str, qty: int) -> int:
        """Take ``qty`` units of ``sku`` out of stock; returns the new stock level.

        Raises UnknownItemError for a SKU that was never added and InsufficientStockError when
        fewer than ``qty`` units are in stock (the stock is left unchanged).
        """
        _check_quantity(qty)
        available = self._stock[sku]
        if qty > available:
            raise InsufficientStockError(sku, qty, available)
        self._stock[sku] = available - qty
        return self._stock[sku]

    def skus(self) -> list[str]:
        """The SKUs ever added, sorted."""
        return sorted(self._stock)
