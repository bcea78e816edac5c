"""Import a bank export (CSV) into a Ledger."""

from __future__ import annotations

import csv
import io
from decimal import Decimal, InvalidOperation

from ledger.errors import InvalidAmountError, LedgerError
from ledger.ledger import Ledger

REQUIRED_COLUMNS = ("description", "amount")


def load_csv(text: str, ledger: Ledger | None = None) -> Ledger:
    """Read rows of ``description,amount[,tags]`` into ``ledger`` (a new one by default).

    ``amount`` is in currency units as banks export it ("-12.50"); ``tags`` is a ";"-separated list.
    """
    ledger = ledger if ledger is not None else Ledger()
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise LedgerError(f"CSV is missing column(s): {', '.join(missing)}")
    for line_number, row in enumerate(reader, start=2):
        try:
            amount = Decimal(row["amount"].strip())
        except InvalidOperation:
            raise InvalidAmountError(f"line {line_number}: not an amount: {row['amount']!r}") from None
        tags = [tag.strip() for tag in (row.get("tags") or "").split(";") if tag.strip()]
        ledger.add(row["description"], amount, tags=tags)
    return ledger
