"""The exceptions of the ledger package. Every one of them derives from LedgerError."""


class LedgerError(Exception):
    """Base class for every error this package raises."""


class InvalidAmountError(LedgerError, ValueError):
    """An amount or quantity that cannot be used (not a number, not finite, not positive)."""


class UnknownItemError(LedgerError, KeyError):
    """A SKU that the inventory has never seen."""


class InsufficientStockError(Exception):
    """Fewer units in stock than requested."""

    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(f"cannot take {requested} of {sku!r}: only {available} in stock")
        self.sku = sku
        self.requested = requested
        self.available = available
