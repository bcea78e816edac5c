"""ledger: a tiny bookkeeping library. Amounts are integer cents everywhere."""

from ledger.errors import InsufficientStockError, InvalidAmountError, LedgerError, UnknownItemError
from ledger.inventory import Inventory
from ledger.ledger import Entry, Ledger
from ledger.money import format_cents, to_cents

__all__ = [
    "Entry",
    "InsufficientStockError",
    "InvalidAmountError",
    "Inventory",
    "Ledger",
    "LedgerError",
    "UnknownItemError",
    "format_cents",
    "to_cents",
]
__version__ = "0.1.0"
